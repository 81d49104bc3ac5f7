"""DARTS' recurrent cell search on Penn Treebank, read top to bottom.

    python main.py --config configs/ptb_search.py --config.data.dir=/data/ptb

Each step is one jitted function (../shared/REFERENCE.md, "Recurrent (PTB) search space"):
  1. alphas <- Adam(3e-3, L2 1e-3) on the hypergradient of the validation loss (a fixed
     35-token window of the validation split) through one virtual weight step on the training
     window: the real weight optimiser, gradient clipping included (`darts_jax.hypergradient`,
     exact by default);
  2. weights <- SGD(lr 20 x seq_len / 35, L2 5e-7, clip 0.25) on the training window's loss
     plus the temporal activation penalty, with the new alphas.
The window length is DARTS' random BPTT: 35 (17.5 with probability 0.05), plus N(0, 5), at
least 5 and at most 55; windows are padded to a multiple of 8 and masked, so a handful of
shapes is compiled. The hidden states of the training and validation streams carry over from
window to window (truncated backpropagation through time).

The official second-order step differs from the exact one in one place (REFERENCE.md): the
embedding and decoder are tied, and the official virtual model copies the *old* decoder
weight over the updated embedding, so its virtual step never moves the shared matrix. Here
the tied matrix is one weight and the virtual step moves it like every other.

Writes to the workdir: `metrics.jsonl` and TensorBoard scalars, `genotypes/epoch_NNN.json`,
`genotype.json` and `alphas.npz`; `checkpoints/last/` and `config.json`, from which a run
started again on the same workdir resumes (`darts_jax.checkpoints`). Each epoch's window
lengths are drawn from a generator seeded with (seed, epoch), so a resumed epoch sees the same.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from darts_jax import parallel, text_data
from darts_jax.averaging import polyak_average
from darts_jax.errors import ConfigError
from darts_jax.genotypes import RNN_PRIMITIVES, derive_recurrent_genotype
from darts_jax.hypergradient import METHODS, hypergradient
from darts_jax.checkpoints import RunCheckpoints
from darts_jax.metrics import EpochProgress, MetricWriter, perplexity
from darts_jax.rnn import (RNNModel, init_rnn, init_rnn_alphas, masked_nll,
                           temporal_activation_penalty)


class RNNSearchState(NamedTuple):
  weights: Any
  batch_stats: Any
  alphas: Any
  weight_opt_state: Any
  alpha_opt_state: Any
  hidden_train: Any  # (B, H) hidden state of the training streams
  hidden_valid: Any  # (B, H) hidden state of the validation streams


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
  lr = jnp.asarray(learning_rate, jnp.float32)  # one dtype in and out of the jitted step
  return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": lr})


def make_loss_fn(model: RNNModel, tar: float = 0.0):
  """`loss(weights, alphas, batch) -> (loss, (new hidden, new BN statistics, nll))`.

  The batch carries the window (`inputs`, `targets`, `mask`), the incoming `hidden` state, the
  BN statistics and the dropout `key`, so the loss is a pure function of its arguments.
  `tar` weighs the temporal activation penalty (the weight step's loss; the architecture
  step's loss, as in the official code, has none).
  """

  def loss_fn(weights, alphas, batch):
    (logits, hidden, raw), updates = model.apply(
        {"params": weights, "batch_stats": batch["batch_stats"]}, batch["inputs"],
        batch["hidden"], alphas, batch["mask"], train=True, rngs={"dropout": batch["key"]},
        mutable=["batch_stats"])
    nll = masked_nll(logits, batch["targets"], batch["mask"])
    loss = nll + tar * temporal_activation_penalty(raw, batch["mask"]) if tar else nll
    return loss, (jax.lax.stop_gradient(hidden), updates.get("batch_stats", {}), nll)

  return loss_fn


def make_search_step(model, weight_opt, alpha_opt, config):
  """`step(state, train, valid, key, seq_len) -> (state, metrics)`, not yet jitted."""
  arch_loss = make_loss_fn(model)
  train_loss = make_loss_fn(model, config.tar)
  method = config.hypergradient.method

  def step(state: RNNSearchState, train, valid, key, seq_len):
    k_inner, k_valid, k_weights = jax.random.split(key, 3)
    # DARTS scales the learning rate by the window's length for this step only.
    opt_state = with_learning_rate(state.weight_opt_state,
                                   config.learning_rate * seq_len / config.bptt)
    stats = state.batch_stats
    inner = {**train, "hidden": state.hidden_train, "batch_stats": stats, "key": k_inner}
    outer = {**valid, "hidden": state.hidden_valid, "batch_stats": stats, "key": k_valid}
    alpha_grads, (hidden_valid, _, valid_nll) = hypergradient(
        arch_loss, state.weights, state.alphas, inner, outer, weight_opt, opt_state,
        method=method, has_aux=True)
    updates, alpha_opt_state = alpha_opt.update(alpha_grads, state.alpha_opt_state,
                                                state.alphas)
    alphas = optax.apply_updates(state.alphas, updates)

    batch = {**train, "hidden": state.hidden_train, "batch_stats": stats, "key": k_weights}
    (_, (hidden_train, stats, nll)), grads = jax.value_and_grad(train_loss, has_aux=True)(
        state.weights, alphas, batch)
    updates, opt_state = weight_opt.update(grads, opt_state, state.weights)
    weights = optax.apply_updates(state.weights, updates)
    opt_state = with_learning_rate(opt_state, config.learning_rate)
    new = RNNSearchState(weights, stats, alphas, opt_state, alpha_opt_state, hidden_train,
                         hidden_valid)
    return new, {"train_nll": nll, "valid_nll": valid_nll,
                 "weight_grad_norm": optax.global_norm(grads),
                 "alpha_grad_norm": optax.global_norm(alpha_grads)}

  return step


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
    window = text_data.window(streams, start, bptt, bptt)
    nll_sum, hidden = eval_step(*variables, _shard_window(window, mesh), hidden)
    total += float(nll_sum)
    count += int(window["mask"].sum())
  return perplexity(total / count)


def _shard_window(window, mesh):
  # Windows are time-major, (T, streams): the streams are the batch axis.
  return window if mesh is None else parallel.shard_batch(window, mesh, axis=1)


def hidden_state(batch_size: int, hidden_size: int, mesh=None):
  """Zero hidden states for `batch_size` streams, split over `mesh` as the streams are."""
  zeros = jnp.zeros((batch_size, hidden_size))
  return zeros if mesh is None else jax.device_put(
      zeros, parallel.batch_sharding(mesh, batch_size))


def state_shardings(state, mesh):
  """A sharding per field of a recurrent trainer's state (a pytree prefix): the hidden
  states split by stream like the windows, everything else replicated."""
  return type(state)(*(parallel.batch_sharding(mesh, value.shape[0])
                       if name.startswith("hidden") else parallel.replicated(mesh)
                       for name, value in zip(state._fields, state)))


def _check(config):
  if config.hypergradient.method not in METHODS:
    raise ConfigError(f"--config.hypergradient.method={config.hypergradient.method!r} is not "
                      f"one of {', '.join(METHODS)}.")
  check_model_config(config)


def check_model_config(config):
  """One-line errors for model settings the recurrent network cannot take."""
  if config.model.embed_size != config.model.hidden_size:
    raise ConfigError("--config.model.embed_size and --config.model.hidden_size must be equal "
                      "(the decoder is tied to the embedding).")


def build_model(config, vocab_size: int, genotype=None) -> RNNModel:
  m = config.model
  return RNNModel(vocab_size, m.embed_size, m.hidden_size, genotype, m.dropout, m.dropout_h,
                  m.dropout_x, m.dropout_i, m.dropout_e)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the recurrent search described by `config`; returns the genotype and metrics."""
  _check(config)
  corpus = text_data.load_corpus(config.data.dir, config.data.name)
  train_tokens = corpus.train[:config.data.num_train or None]
  valid_tokens = corpus.valid[:config.data.num_valid or None]
  train = text_data.batchify(train_tokens, config.batch_size)
  # The alphas learn on the validation split, batchified like the training one.
  search = text_data.batchify(valid_tokens, config.batch_size)
  valid = text_data.batchify(valid_tokens, config.eval_batch_size)
  vocab = len(corpus.vocab)
  print(f"{config.data.name}: {vocab} words; {train.size:,} training tokens in {config.batch_size}"
        f" streams, {valid_tokens.size:,} validation tokens", flush=True)

  model = build_model(config, vocab)
  variables = init_rnn(model, config.seed)
  alphas = init_rnn_alphas(jax.random.PRNGKey(config.seed))
  weight_opt = make_weight_optimizer(config)
  alpha_opt = optax.chain(optax.add_decayed_weights(config.alpha_weight_decay),
                          optax.adam(config.alpha_learning_rate))
  # Data parallel over every device of every host: the streams split, the rest replicated.
  mesh = parallel.data_mesh()
  zeros = lambda b: hidden_state(b, config.model.hidden_size, mesh)
  state = RNNSearchState(variables["params"], variables["batch_stats"], alphas,
                         with_learning_rate(weight_opt.init(variables["params"]),
                                            config.learning_rate), alpha_opt.init(alphas),
                         zeros(config.batch_size), zeros(config.batch_size))
  shardings = state_shardings(state, mesh)
  state = jax.device_put(state, shardings)
  step = jax.jit(make_search_step(model, weight_opt, alpha_opt, config), donate_argnums=0,
                 out_shardings=(shardings, parallel.replicated(mesh)))
  eval_step = jax.jit(make_eval_step(model))
  key = jax.random.PRNGKey(config.seed + 1)
  max_len = config.bptt + config.max_seq_len_delta

  with RunCheckpoints(workdir, config) as ckpt:
    write_files = parallel.is_primary()  # on several hosts, the first writes
    if write_files:
      os.makedirs(os.path.join(workdir, "genotypes"), exist_ok=True)
    # Window lengths, windows and dropout keys are functions of (seed, epoch, step), so the
    # state (hidden states included) and the position are all a restarted run needs.
    state, meta = ckpt.restore(state) or (state, {"epoch": 0, "index": 0, "step": 0})
    start_epoch, start_index, global_step = meta["epoch"], meta["index"], meta["step"]
    history = [np.asarray(a, np.float32) for a in meta.get("history", [])]
    if global_step:
      print(f"resuming from the checkpoint at step {global_step} (epoch {start_epoch + 1}, "
            f"window {start_index})", flush=True)
    writer = MetricWriter(workdir, resume_step=global_step)
    scalars = {}  # stays empty when the workdir holds a finished run
    print(f"search: {config.hypergradient.method} hypergradient, {config.epochs} epochs, batch "
          f"{config.batch_size}, BPTT ~{config.bptt}", flush=True)

    for epoch in range(start_epoch, config.epochs):
      start, tokens = time.perf_counter(), 0
      lengths = text_data.epoch_window_lengths(np.random.default_rng([config.seed, epoch]),
                                               len(train), config.bptt, max_len)
      progress = EpochProgress.for_epoch(config, epoch, len(lengths), meta, perplexity=True)
      if not progress.start:  # each epoch starts from zero hidden states, as the official train()
        state = state._replace(hidden_train=zeros(config.batch_size),
                               hidden_valid=zeros(config.batch_size))
      position = sum(lengths[:progress.start])
      for n in progress:
        seq_len = lengths[n]
        padded = text_data.bucket(seq_len, config.window_bucket)
        window = text_data.window(train, position, seq_len, padded)
        valid_window = text_data.window(search, position % (len(search) - 1), config.bptt,
                                        config.bptt)
        state, metrics = step(state, _shard_window(window, mesh),
                              _shard_window(valid_window, mesh),
                              jax.random.fold_in(key, global_step), np.float32(seq_len))
        progress.log(n, global_step, metrics["train_nll"], 0.0,
                     {"weight gradient norm": metrics["weight_grad_norm"],
                      "alpha hypergradient norm": metrics["alpha_grad_norm"]})
        position += seq_len
        tokens += int(window["mask"].sum()) * config.batch_size
        global_step += 1
        ckpt.step_done(global_step, progress,
                       lambda: (state, {"history": [a.tolist() for a in history]}))
      progress.check()
      train_seconds = time.perf_counter() - start
      valid_ppl = evaluate(eval_step, (state.weights, state.batch_stats, state.alphas),
                           valid, config.bptt, zeros(config.eval_batch_size), mesh)
      genotype = derive_recurrent_genotype(state.alphas)
      history.append(np.asarray(jax.nn.softmax(state.alphas, axis=-1)))
      scalars = {"train_nll": progress.loss, "train_ppl": perplexity(progress.loss),
                 "valid_ppl": valid_ppl, "tokens_per_second": tokens / train_seconds,
                 "epoch_seconds": time.perf_counter() - start}
      writer.write(global_step, {"epoch": epoch + 1, **scalars})
      if write_files:
        with open(os.path.join(workdir, "genotypes", f"epoch_{epoch + 1:03d}.json"), "w") as f:
          f.write(genotype.to_json())
      ckpt.save(global_step, state, {"epoch": epoch + 1, "index": 0,
                                     "history": [a.tolist() for a in history]})
      print(f"epoch {epoch + 1}/{config.epochs}: train ppl {scalars['train_ppl']:.1f} | valid "
            f"ppl {valid_ppl:.1f} | {scalars['tokens_per_second']:.0f} tokens/s\n  genotype "
            f"{list(genotype.recurrent)}", flush=True)
      ckpt.stop(global_step)
    writer.close()

  genotype = derive_recurrent_genotype(state.alphas)
  if parallel.is_primary():
    with open(os.path.join(workdir, "genotype.json"), "w") as f:
      f.write(genotype.to_json())
    np.savez(os.path.join(workdir, "alphas.npz"), alphas=np.asarray(state.alphas),
             softmax_per_epoch=np.stack(history))
  print(f"softmax(alpha) columns: {', '.join(RNN_PRIMITIVES)}\nderived genotype: "
        f"{list(genotype.recurrent)}\nwrote {workdir}/genotype.json, alphas.npz", flush=True)
  return {"genotype": json.loads(genotype.to_json()), **scalars}
