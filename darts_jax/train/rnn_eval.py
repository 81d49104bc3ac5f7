"""Train a recurrent genotype from scratch on PTB or WikiText-2, read top to bottom.

    python main.py --config configs/ptb_eval.py --config.genotype=DARTS_V2
    python main.py --config configs/wt2_eval.py --config.genotype=runs/ptb_search/genotype.json

Each step is one jitted function: the derived cell over a random-length window (DARTS' BPTT,
padded to a multiple of 8), cross-entropy plus the temporal activation penalty, gradients
clipped to 0.25, SGD at lr x seq_len / 35 with L2 weight decay. After each epoch the
validation perplexity decides: when it is worse than the best of all but the last `nonmono`
epochs, training switches to averaged SGD (`darts_jax.averaging`) and from then on the
averaged weights are evaluated and kept, as in the official train.py. At the end the best
weights are tested (batch 1, as the official code reports test perplexity).

Writes to the workdir: `metrics.jsonl` and TensorBoard scalars, `checkpoints/last/` (the
whole run: started again on the same workdir, it resumes) and `checkpoints/best/` (Orbax),
`genotype.json`, `summary.json`.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from darts_jax.averaging import averaged_params, is_averaging, start_averaging
from darts_jax.bilevel import LossState
from darts_jax.data import text
from darts_jax.spaces.darts_rnn.genotypes import recurrent_genotype_from_name_or_file
from darts_jax.spaces.darts_rnn.model import init_rnn
from darts_jax.train import loop, parallel
from darts_jax.train.metrics import perplexity
from darts_jax.train.rnn_common import (build_model, epoch_lengths,
                                        epoch_report, evaluate, hidden_state, make_eval_step,
                                        make_loss_fn, make_weight_optimizer, place_and_jit,
                                        shard_window, stream_sharding, with_learning_rate)


class RNNTrainState(NamedTuple):
  params: Any
  opt_state: Any
  hidden: Any  # (B, H) hidden state of the training streams


def make_train_step(model, optimizer, config):
  """`step(state, window, key, seq_len) -> (state, metrics)`, not yet jitted."""
  loss_fn = make_loss_fn(model, config.tar)

  def step(state: RNNTrainState, window, key, seq_len):
    opt_state = with_learning_rate(state.opt_state,
                                   config.learning_rate * seq_len / config.bptt)
    (_, (new, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, None, window, LossState({}, state.hidden), key)
    updates, opt_state = optimizer.update(grads, opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    opt_state = with_learning_rate(opt_state, config.learning_rate)
    return RNNTrainState(params, opt_state, new.carry), {"train_nll": metrics["nll"],
                                                         "grad_norm": optax.tree.norm(grads)}

  return step


def state_shardings(state: RNNTrainState, mesh):
  """The hidden state split by stream like the windows, everything else replicated."""
  rep = parallel.replicated(mesh)
  return RNNTrainState(rep, rep, stream_sharding(mesh, state.hidden))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config.genotype` from scratch; returns the final summary."""
  genotype = recurrent_genotype_from_name_or_file(config.genotype)
  corpus = text.load_corpus(config.data.dir, config.data.name)
  train = text.batchify(corpus.train[:config.data.num_train or None], config.batch_size)
  valid = text.batchify(corpus.valid, config.eval_batch_size)
  test = text.batchify(corpus.test, config.test_batch_size)
  model = build_model(config, len(corpus.vocab), genotype)
  params = init_rnn(model, config.seed)["params"]
  count = sum(x.size for x in jax.tree.leaves(params))
  print(f"{config.data.name}: {len(corpus.vocab)} words, {train.size:,} training tokens; "
        f"recurrent cell {config.genotype}, {config.model.hidden_size} units, {count:,} "
        "parameters", flush=True)

  optimizer = make_weight_optimizer(config, average=True)
  # Data parallel over every device of every host: the streams split, the rest replicated.
  mesh = parallel.data_mesh()
  zeros = lambda b: hidden_state(b, config.model.hidden_size, mesh)
  state = RNNTrainState(params, with_learning_rate(optimizer.init(params),
                                                   config.learning_rate), zeros(config.batch_size))
  shardings = state_shardings(state, mesh)
  state, step = place_and_jit(make_train_step(model, optimizer, config), state, shardings,
                              mesh)
  eval_step = jax.jit(make_eval_step(model))
  key = jax.random.PRNGKey(config.seed + 1)
  lengths_of = epoch_lengths(config, len(train))
  # Jitted so that the new flags come out placed like the step's outputs (on several hosts
  # an array made on one device cannot be saved or passed on).
  switch_to_averaging = jax.jit(lambda s: s._replace(opt_state=start_averaging(s.opt_state)),
                                out_shardings=shardings, donate_argnums=0)
  # The averaged-SGD switch depends on the validation history, which the checkpoint keeps.
  run = {"history": [], "best": math.inf, "best_params": None, "best_step": None}
  epoch_run = {}

  def write_genotype():
    with open(os.path.join(workdir, "genotype.json"), "w") as f:
      f.write(genotype.to_json())

  def resume(meta, ckpt):
    run["history"], run["best"] = meta.get("history", []), meta.get("best", math.inf)
    run["best_step"] = meta.get("best_step")
    if run["best"] < math.inf:
      # The restore checked that this step's files are intact (RunCheckpoints.restore).
      best = ckpt.restore_best({"params": state.params}, step=run["best_step"])
      run["best_params"] = None if best is None else best["params"]

  def begin_epoch(state, epoch, start):
    epoch_run.update(lengths=lengths_of(epoch), tokens=0)
    epoch_run["offsets"] = np.cumsum([0, *epoch_run["lengths"]])
    return state if start else state._replace(hidden=zeros(config.batch_size))

  def train_step(state, epoch, n, global_step):
    del epoch
    seq_len, position = epoch_run["lengths"][n], epoch_run["offsets"][n]
    window = text.window(train, position, seq_len, text.bucket(seq_len, config.window_bucket))
    state, metrics = step(state, shard_window(window, mesh),
                          jax.random.fold_in(key, global_step), np.float32(seq_len))
    epoch_run["tokens"] += int(window["mask"].sum()) * config.batch_size
    return state, loop.StepLog(metrics["train_nll"], 0.0, {"gradient norm": metrics["grad_norm"]})

  record = lambda: {"history": run["history"], "best": run["best"],
                    "best_step": run["best_step"]}

  def end_of_epoch(state, epoch, step, progress, ckpt):
    train_seconds = time.perf_counter() - progress.started
    weights = averaged_params(state.opt_state, state.params)
    valid_ppl = evaluate(eval_step, (weights, {}, None), valid, config.bptt,
                         zeros(config.eval_batch_size), mesh)
    valid_loss = math.log(valid_ppl) if valid_ppl < math.inf else math.inf
    improved = valid_loss < run["best"]
    if improved:
      # A copy: without averaging, `weights` are the params the next step donates.
      run["best"], run["best_params"] = valid_loss, jax.tree.map(jnp.copy, weights)
      run["best_step"] = step
      ckpt.save_best(step, {"params": weights})
    history = run["history"]
    switch = (not is_averaging(state.opt_state) and len(history) > config.nonmono
              and valid_loss > min(history[:len(history) - config.nonmono]))
    if switch:
      state = switch_to_averaging(state)
    history.append(valid_loss)
    scalars = {"train_ppl": perplexity(progress.loss), "valid_ppl": valid_ppl,
               "averaging": float(is_averaging(state.opt_state)),
               "tokens_per_second": epoch_run["tokens"] / train_seconds}
    report = epoch_report(config, epoch, f"{valid_ppl:.2f}{' (best)' * improved}",
                          " | switching to averaged SGD" * switch)
    return loop.EpochEnd(state, scalars, record(), report)

  state, _ = loop.run(
      config, workdir, state, steps_per_epoch=lambda epoch: len(lengths_of(epoch)),
      train_step=train_step, end_of_epoch=end_of_epoch, resume=resume, record=record,
      begin_epoch=begin_epoch, on_open=write_genotype, best=True, perplexity=True)

  best, best_params = run["best"], run["best_params"]
  if best_params is None:  # no epoch had a finite validation perplexity
    best_params = state.params
  test_ppl = evaluate(eval_step, (best_params, {}, None), test, config.bptt,
                      zeros(config.test_batch_size), mesh)
  summary = {"genotype": config.genotype, "parameters": count,
             "best_valid_ppl": perplexity(best), "test_ppl": test_ppl, "epochs": config.epochs}
  if parallel.is_primary():
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
  print(f"done: best valid ppl {perplexity(best):.2f}, test ppl {test_ppl:.2f} (the best "
        f"weights, test batch {config.test_batch_size})\nwrote {workdir}/summary.json, "
        "checkpoints/{last,best}", flush=True)
  return summary
