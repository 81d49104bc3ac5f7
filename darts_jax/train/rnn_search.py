"""DARTS' recurrent cell search on Penn Treebank, read top to bottom.

    python main.py --config configs/ptb_search.py --config.data.dir=/data/ptb

Each step is one jitted function, `darts_jax.bilevel.bilevel_step` with the language model's
loss (docs/reference.md, "Recurrent search"):
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

The official second-order step differs from the exact one (docs/reference.md, "Second-order
recurrent step"): among other things the embedding and decoder are tied, and the official
virtual model copies the *old* decoder weight over the updated embedding, so its virtual step
never moves the shared matrix. Here the tied matrix is one weight and the virtual step moves it
like every other.

Writes to the workdir: `metrics.jsonl` and TensorBoard scalars, `genotypes/epoch_NNN.json`,
`genotype.json` and `alphas.npz`; `checkpoints/last/` and `config.json`, from which a run
started again on the same workdir resumes (`darts_jax.train.checkpoints`). Each epoch's window
lengths are drawn from a generator seeded with (seed, epoch), so a resumed epoch sees the same.
"""

from __future__ import annotations

import functools
import json
import os

import jax
import ml_collections
import numpy as np
import optax

from darts_jax import bilevel, relaxations
from darts_jax.data import text
from darts_jax.spaces.darts_rnn.genotypes import RNN_PRIMITIVES, derive_recurrent_genotype
from darts_jax.spaces.darts_rnn.model import init_rnn, init_rnn_alphas
from darts_jax.train import loop, parallel
from darts_jax.train.metrics import perplexity
from darts_jax.train.rnn_common import (build_model, epoch_lengths,
                                        epoch_report, evaluate, hidden_state, make_eval_step,
                                        make_loss_fn, make_weight_optimizer, place_and_jit,
                                        shard_window, stream_sharding, with_learning_rate)


def make_optimizers(config) -> bilevel.BilevelOptimizers:
  """SGD on the weights, whose virtual step is the real one, clipping included; Adam(L2) on
  the alphas."""
  alpha_opt = optax.chain(optax.add_decayed_weights(config.alpha_weight_decay),
                          optax.adam(config.alpha_learning_rate))
  return bilevel.same_step(make_weight_optimizer(config), alpha_opt)


def make_search_step(model, opts: bilevel.BilevelOptimizers, config):
  """`step(state, train, valid, key, seq_len) -> (state, metrics)`, not yet jitted."""
  step = functools.partial(bilevel.bilevel_step, make_loss_fn(model), opts,
                           weight_loss_fn=make_loss_fn(model, config.tar),
                           **bilevel.hypergradient_options(config.hypergradient))

  def search_step(state: bilevel.SearchState, train, valid, key, seq_len):
    # DARTS scales the learning rate by the window's length for this step only.
    scaled = with_learning_rate(state.weight_opt_state,
                                config.learning_rate * seq_len / config.bptt)
    state, metrics = step(state._replace(weight_opt_state=scaled), train, valid, key)
    return state._replace(weight_opt_state=with_learning_rate(
        state.weight_opt_state, config.learning_rate)), metrics

  return search_step


def state_shardings(state: bilevel.SearchState, mesh):
  """A sharding per field of the search state: the hidden states of the two streams split
  by stream like the windows, everything else replicated."""
  rep = parallel.replicated(mesh)
  streams = bilevel.ModelState(rep, stream_sharding(mesh, state.model_state.train),
                               stream_sharding(mesh, state.model_state.val))
  return bilevel.SearchState(rep, rep, streams, rep, rep)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the recurrent search described by `config`; returns the genotype and metrics."""
  corpus = text.load_corpus(config.data.dir, config.data.name)
  train_tokens = corpus.train[:config.data.num_train or None]
  valid_tokens = corpus.valid[:config.data.num_valid or None]
  train = text.batchify(train_tokens, config.batch_size)
  # The alphas learn on the validation split, batchified like the training one.
  search = text.batchify(valid_tokens, config.batch_size)
  valid = text.batchify(valid_tokens, config.eval_batch_size)
  vocab = len(corpus.vocab)
  print(f"{config.data.name}: {vocab} words; {train.size:,} training tokens in {config.batch_size}"
        f" streams, {valid_tokens.size:,} validation tokens", flush=True)

  model = build_model(config, vocab, relax=relaxations.build(config, RNN_PRIMITIVES))
  variables = init_rnn(model, config.seed)
  alphas = init_rnn_alphas(jax.random.PRNGKey(config.seed))
  opts = make_optimizers(config)
  # Data parallel over every device of every host: the streams split, the rest replicated.
  mesh = parallel.data_mesh()
  zeros = lambda b: hidden_state(b, config.model.hidden_size, mesh)
  state = bilevel.init_search_state(
      variables["params"], alphas, opts,
      bilevel.ModelState(variables["batch_stats"], zeros(config.batch_size),
                         zeros(config.batch_size)))
  state = state._replace(weight_opt_state=with_learning_rate(state.weight_opt_state,
                                                             config.learning_rate))
  state, step = place_and_jit(make_search_step(model, opts, config), state,
                              state_shardings(state, mesh), mesh)
  eval_step = jax.jit(make_eval_step(model))
  key = jax.random.PRNGKey(config.seed + 1)
  lengths_of = epoch_lengths(config, len(train))
  history = []  # softmax(alpha) after each epoch
  epoch_run = {}  # the epoch's window offsets and token count

  def resume(meta, ckpt):
    del ckpt
    history.extend(np.asarray(a, np.float32) for a in meta.get("history", []))
    print(f"search: {config.hypergradient.method} hypergradient, {config.epochs} epochs, batch "
          f"{config.batch_size}, BPTT ~{config.bptt}", flush=True)

  def begin_epoch(state, epoch, start):
    epoch_run.update(offsets=np.cumsum([0, *lengths_of(epoch)]), tokens=0)
    if start:
      return state
    # Each epoch starts from zero hidden states, as the official train().
    return state._replace(model_state=state.model_state._replace(
        train=zeros(config.batch_size), val=zeros(config.batch_size)))

  def train_step(state, epoch, n, global_step):
    seq_len, position = lengths_of(epoch)[n], epoch_run["offsets"][n]
    window = text.window(train, position, seq_len, text.bucket(seq_len, config.window_bucket))
    valid_window = text.window(search, position % (len(search) - 1), config.bptt, config.bptt)
    state, metrics = step(state, shard_window(window, mesh), shard_window(valid_window, mesh),
                          jax.random.fold_in(key, global_step), np.float32(seq_len))
    epoch_run["tokens"] += int(window["mask"].sum()) * config.batch_size
    return state, loop.StepLog(metrics["train_nll"], 0.0,
                               {"weight gradient norm": metrics["weight_grad_norm"],
                                "alpha hypergradient norm": metrics["alpha_grad_norm"]})

  record = lambda: {"history": [a.tolist() for a in history]}

  def end_of_epoch(state, epoch, step, progress, ckpt):
    del step, ckpt
    import time

    train_seconds = time.perf_counter() - progress.started
    valid_ppl = evaluate(eval_step, (state.weights, state.model_state.shared, state.alphas),
                         valid, config.bptt, zeros(config.eval_batch_size), mesh)
    genotype = derive_recurrent_genotype(state.alphas)
    history.append(np.asarray(jax.nn.softmax(state.alphas, axis=-1)))
    if parallel.is_primary():
      with open(os.path.join(workdir, "genotypes", f"epoch_{epoch + 1:03d}.json"), "w") as f:
        f.write(genotype.to_json())
    scalars = {"train_nll": progress.loss, "train_ppl": perplexity(progress.loss),
               "valid_ppl": valid_ppl, "tokens_per_second": epoch_run["tokens"] / train_seconds}
    report = epoch_report(config, epoch, f"{valid_ppl:.1f}",
                          f"\n  genotype {list(genotype.recurrent)}")
    return loop.EpochEnd(state, scalars, record(), report)

  state, scalars = loop.run(
      config, workdir, state, steps_per_epoch=lambda epoch: len(lengths_of(epoch)),
      train_step=train_step, end_of_epoch=end_of_epoch, resume=resume, record=record,
      begin_epoch=begin_epoch, perplexity=True,
      on_open=lambda: os.makedirs(os.path.join(workdir, "genotypes"), exist_ok=True))

  genotype = derive_recurrent_genotype(state.alphas)
  if parallel.is_primary():
    with open(os.path.join(workdir, "genotype.json"), "w") as f:
      f.write(genotype.to_json())
    np.savez(os.path.join(workdir, "alphas.npz"), alphas=np.asarray(state.alphas),
             softmax_per_epoch=np.stack(history))
  print(f"softmax(alpha) columns: {', '.join(RNN_PRIMITIVES)}\nderived genotype: "
        f"{list(genotype.recurrent)}\nwrote {workdir}/genotype.json, alphas.npz", flush=True)
  return {"genotype": json.loads(genotype.to_json()), **scalars}
