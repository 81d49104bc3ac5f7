"""What both recurrent trainers (`rnn_search`, `rnn_eval`) use: the model from a config, its
loss and evaluation, DARTS' recurrent weight optimiser, and where the hidden states live."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from darts_jax.averaging import polyak_average
from darts_jax.data import text
from darts_jax.spaces.darts_rnn.model import RNNModel, masked_nll, temporal_activation_penalty
from darts_jax.train import parallel
from darts_jax.train.metrics import perplexity


def _sgd(learning_rate, *, clip, weight_decay, average):
  return optax.chain(optax.clip_by_global_norm(clip), optax.add_decayed_weights(weight_decay),
                     optax.sgd(learning_rate), *([polyak_average()] if average else []))


def make_weight_optimizer(config, average: bool = False) -> optax.GradientTransformation:
  """Clip, L2 decay, SGD (then, with `average`, the iterate averaging of averaged SGD), with
  the learning rate in the state so that each step can scale it."""
  return optax.inject_hyperparams(_sgd, static_args=("clip", "weight_decay", "average"))(
      learning_rate=config.learning_rate, clip=config.grad_clip,
      weight_decay=config.weight_decay, average=average)


def with_learning_rate(opt_state, learning_rate):
  """`opt_state` of `make_weight_optimizer` with its learning rate set to `learning_rate`."""
  lr = jnp.asarray(learning_rate, jnp.float32)  # one dtype in and out of the jitted step
  return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": lr})


def make_loss_fn(model: RNNModel, tar: float = 0.0):
  """The language model's loss as `bilevel.bilevel_step` takes it.

  `loss(weights, alphas, window, LossState(batch_stats, hidden), key) -> (loss,
  (LossState(new batch_stats, new hidden), {"nll"}))`: the window is `{inputs, targets,
  mask}`, the incoming hidden state is the window's stream's, `key` draws the dropout masks,
  the relaxation reads `model_state.relax_key` and `.epoch`.
  `tar` weighs the temporal activation penalty (the weight step's loss; the architecture
  step's loss, as in the official code, has none). The evaluation trainer passes
  `alphas=None` and no BN statistics (`{}`).
  """

  def loss_fn(weights, alphas, window, model_state, key):
    (logits, hidden, raw), updates = model.apply(
        {"params": weights, "batch_stats": model_state.shared}, window["inputs"],
        model_state.carry, alphas, window["mask"], train=True, rngs={"dropout": key},
        relax_key=model_state.relax_key, epoch=model_state.epoch, mutable=["batch_stats"])
    nll = masked_nll(logits, window["targets"], window["mask"])
    loss = nll + tar * temporal_activation_penalty(raw, window["mask"]) if tar else nll
    new = model_state._replace(shared=updates.get("batch_stats", {}),
                               carry=jax.lax.stop_gradient(hidden))
    return loss, (new, {"nll": nll})

  return loss_fn


def make_eval_step(model):
  """`eval_step(weights, batch_stats, alphas, window, hidden) -> (nll sum, hidden)`."""

  def eval_step(weights, batch_stats, alphas, window, hidden):
    logits, hidden, _ = model.apply({"params": weights, "batch_stats": batch_stats},
                                    window["inputs"], hidden, alphas, window["mask"])
    nll = masked_nll(logits, window["targets"], window["mask"])
    return nll * jnp.sum(window["mask"]), hidden

  return eval_step


def evaluate(eval_step, variables, streams, bptt: int, hidden, mesh=None):
  """Perplexity over a batchified split, windows of `bptt` steps in order; `variables` =
  (weights, batch_stats, alphas) as `eval_step` takes them. With a `mesh`, the streams are
  split over its devices when their number divides (`parallel.batch_sharding`)."""
  total, count = 0.0, 0
  for start in range(0, len(streams) - 1, bptt):
    window = text.window(streams, start, bptt, bptt)
    nll_sum, hidden = eval_step(*variables, shard_window(window, mesh), hidden)
    total += float(nll_sum)
    count += int(window["mask"].sum())
  return perplexity(total / count)


def shard_window(window, mesh):
  """A window split over `mesh` by stream (windows are time-major, (T, streams))."""
  return window if mesh is None else parallel.shard_batch(window, mesh, axis=1)


def hidden_state(batch_size: int, hidden_size: int, mesh=None):
  """Zero hidden states for `batch_size` streams, split over `mesh` as the streams are."""
  zeros = jnp.zeros((batch_size, hidden_size))
  return zeros if mesh is None else jax.device_put(
      zeros, parallel.batch_sharding(mesh, batch_size))


def stream_sharding(mesh, hidden):
  """The sharding of a (streams, H) hidden state: split by stream like the windows."""
  return parallel.batch_sharding(mesh, hidden.shape[0])


def place_and_jit(step, state, shardings, mesh):
  """`state` placed by `shardings` (a prefix of it), and `step(state, ...) -> (state,
  metrics)` jitted to keep it so, donating the state it is given."""
  return jax.device_put(state, shardings), jax.jit(
      step, donate_argnums=0, out_shardings=(shardings, parallel.replicated(mesh)))


def build_model(config, vocab_size: int, genotype=None, relax=None) -> RNNModel:
  """The recurrent network of `config.model`: the search cell (genotype None) or a derived
  cell; `relax` is the search cell's relaxation (default: the softmax)."""
  m = config.model
  extra = {} if relax is None else {"relax": relax}
  return RNNModel(vocab_size, m.embed_size, m.hidden_size, genotype, m.dropout, m.dropout_h,
                  m.dropout_x, m.dropout_i, m.dropout_e, **extra)


def epoch_report(config, epoch: int, valid_ppl: str, suffix: str = ""):
  """`report(scalars) -> str`: the line a recurrent trainer prints after `epoch`."""
  return lambda s: (f"epoch {epoch + 1}/{config.epochs}: train ppl {s['train_ppl']:.1f} | "
                    f"valid ppl {valid_ppl} | {s['tokens_per_second']:.0f} tokens/s{suffix}")


def epoch_lengths(config, num_steps: int):
  """`lengths(epoch)`: DARTS' random BPTT window lengths of an epoch over `num_steps` time
  steps, drawn from a generator seeded with (seed, epoch), so a resumed epoch sees the same."""
  import functools

  import numpy as np

  @functools.lru_cache(maxsize=2)  # the loop asks for an epoch's count, then its steps
  def lengths(epoch: int):
    return text.epoch_window_lengths(np.random.default_rng([config.seed, epoch]), num_steps,
                                     config.bptt, config.bptt + config.max_seq_len_delta)

  return lengths
