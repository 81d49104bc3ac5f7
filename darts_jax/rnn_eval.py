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

from darts_jax import parallel, text_data
from darts_jax.averaging import averaged_params, is_averaging, start_averaging
from darts_jax.checkpoints import RunCheckpoints
from darts_jax.genotypes import recurrent_genotype_from_name_or_file
from darts_jax.metrics import EpochProgress, MetricWriter, perplexity
from darts_jax.rnn import init_rnn
from darts_jax.rnn_search import (build_model, check_model_config, evaluate, hidden_state,
                                  make_eval_step, state_shardings,
                                  make_loss_fn, make_weight_optimizer, with_learning_rate)


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
    batch = {**window, "hidden": state.hidden, "batch_stats": {}, "key": key}
    (_, (hidden, _, nll)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, None, batch)
    updates, opt_state = optimizer.update(grads, opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    opt_state = with_learning_rate(opt_state, config.learning_rate)
    return RNNTrainState(params, opt_state, hidden), {"train_nll": nll,
                                                      "grad_norm": optax.global_norm(grads)}

  return step


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config.genotype` from scratch; returns the final summary."""
  check_model_config(config)
  genotype = recurrent_genotype_from_name_or_file(config.genotype)
  corpus = text_data.load_corpus(config.data.dir, config.data.name)
  train = text_data.batchify(corpus.train[:config.data.num_train or None], config.batch_size)
  valid = text_data.batchify(corpus.valid, config.eval_batch_size)
  test = text_data.batchify(corpus.test, config.test_batch_size)
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
  state = jax.device_put(state, shardings)
  step = jax.jit(make_train_step(model, optimizer, config), donate_argnums=0,
                 out_shardings=(shardings, parallel.replicated(mesh)))
  eval_step = jax.jit(make_eval_step(model))
  key = jax.random.PRNGKey(config.seed + 1)
  max_len = config.bptt + config.max_seq_len_delta
  window_shard = lambda window: parallel.shard_batch(window, mesh, axis=1)
  # Jitted so that the new flags come out placed like the step's outputs (on several hosts
  # an array made on one device cannot be saved or passed on).
  switch_to_averaging = jax.jit(lambda s: s._replace(opt_state=start_averaging(s.opt_state)),
                                out_shardings=shardings, donate_argnums=0)

  with RunCheckpoints(workdir, config, best=True) as ckpt:
    if parallel.is_primary():  # on several hosts, the first writes
      with open(os.path.join(workdir, "genotype.json"), "w") as f:
        f.write(genotype.to_json())
    # Window lengths, windows and dropout keys are functions of (seed, epoch, step); the
    # averaged-SGD switch depends on the validation history, which the checkpoint keeps.
    state, meta = ckpt.restore(state) or (state, {"epoch": 0, "index": 0, "step": 0})
    start_epoch, start_index, global_step = meta["epoch"], meta["index"], meta["step"]
    history, best = meta.get("history", []), meta.get("best", math.inf)
    best_params = ckpt.restore_best({"params": state.params}) if best < math.inf else None
    best_params = None if best_params is None else best_params["params"]
    if global_step:
      print(f"resuming from the checkpoint at step {global_step} (epoch {start_epoch + 1}, "
            f"window {start_index})", flush=True)
    writer = MetricWriter(workdir, resume_step=global_step)
    try:
      for epoch in range(start_epoch, config.epochs):
        start, tokens = time.perf_counter(), 0
        lengths = text_data.epoch_window_lengths(np.random.default_rng([config.seed, epoch]),
                                                 len(train), config.bptt, max_len)
        progress = EpochProgress.for_epoch(config, epoch, len(lengths), meta,
                                           perplexity=True)
        if not progress.start:
          state = state._replace(hidden=zeros(config.batch_size))
        position = sum(lengths[:progress.start])
        for n in progress:
          padded = text_data.bucket(lengths[n], config.window_bucket)
          window = text_data.window(train, position, lengths[n], padded)
          state, metrics = step(state, window_shard(window),
                                jax.random.fold_in(key, global_step),
                                np.float32(lengths[n]))
          progress.log(n, global_step, metrics["train_nll"], 0.0,
                       {"gradient norm": metrics["grad_norm"]})
          position += lengths[n]
          tokens += int(window["mask"].sum()) * config.batch_size
          global_step += 1
          ckpt.step_done(global_step, progress,
                         lambda: (state, {"history": history, "best": best}))
        progress.check()
        train_seconds = time.perf_counter() - start
        weights = averaged_params(state.opt_state, state.params)
        valid_ppl = evaluate(eval_step, (weights, {}, None), valid, config.bptt,
                             zeros(config.eval_batch_size), mesh)
        valid_loss = math.log(valid_ppl) if valid_ppl < math.inf else math.inf
        improved = valid_loss < best
        if improved:
          # A copy: without averaging, `weights` are the params the next step donates.
          best, best_params = valid_loss, jax.tree.map(jnp.copy, weights)
          ckpt.save_best(global_step, {"params": weights})
        switch = (not is_averaging(state.opt_state) and len(history) > config.nonmono
                  and valid_loss > min(history[:len(history) - config.nonmono]))
        if switch:
          state = switch_to_averaging(state)
        history.append(valid_loss)
        scalars = {"train_ppl": perplexity(progress.loss), "valid_ppl": valid_ppl,
                   "averaging": float(is_averaging(state.opt_state)),
                   "tokens_per_second": tokens / train_seconds,
                   "epoch_seconds": time.perf_counter() - start}
        writer.write(global_step, {"epoch": epoch + 1, **scalars})
        ckpt.save(global_step, state, {"epoch": epoch + 1, "index": 0, "history": history,
                                       "best": best})
        print(f"epoch {epoch + 1}/{config.epochs}: train ppl {scalars['train_ppl']:.1f} | "
              f"valid ppl {valid_ppl:.2f}{' (best)' * improved} | "
              f"{scalars['tokens_per_second']:.0f} tokens/s"
              f"{' | switching to averaged SGD' * switch}", flush=True)
        ckpt.stop(global_step)
    finally:
      writer.close()

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
