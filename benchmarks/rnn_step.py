"""Compile time, step time and peak memory of the recurrent search and evaluation steps.

    python benchmarks/rnn_step.py                  # search: 3 methods; evaluation (850 units)
    python benchmarks/rnn_step.py --rows search:exact --steps 2

Paper sizes: search (batch 256, 35-step windows, 300 units, 10,000 words), one step = the
alpha step (first order, exact second order or DARTS' finite difference) + the weight step;
evaluation (batch 64, 35 steps, 850 units, DARTS_V2's cell), one SGD step. Both as the
trainers jit them, on a 35-step window (its bucket: 35). Each row in a fresh subprocess (its
own peak RSS). Results: benchmarks/results/rnn_step.json and a markdown table on stdout.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks.common import measure_in_subprocess, write_results  # noqa: E402
VOCAB = 10_000


def run_one(kind, method, steps):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from configs import ptb_eval, ptb_search
  from darts_jax import bilevel
  from darts_jax.data import text as text_data
  from darts_jax.spaces.darts_rnn import model as rnn
  from darts_jax.spaces.darts_rnn.genotypes import RNN_DARTS_V2
  from darts_jax.train import rnn_common, rnn_eval, rnn_search

  config = (ptb_search if kind == "search" else ptb_eval).get_config()
  rng = np.random.default_rng(0)
  streams = rng.integers(0, VOCAB, (400, config.batch_size)).astype(np.int32)
  window = text_data.window(streams, 0, config.bptt,
                            text_data.bucket(config.bptt, config.window_bucket))
  zeros = lambda: jnp.zeros((config.batch_size, config.model.hidden_size))  # one per use
  if kind == "search":
    config.hypergradient.method = method
    model = rnn_common.build_model(config, VOCAB)
    variables = rnn.init_rnn(model, 0)
    alphas = rnn.init_rnn_alphas(jax.random.PRNGKey(1))
    opts = rnn_search.make_optimizers(config)
    state = bilevel.init_search_state(
        variables["params"], alphas, opts,
        bilevel.ModelState(variables["batch_stats"], zeros(), zeros()))
    state = state._replace(weight_opt_state=rnn_common.with_learning_rate(
        state.weight_opt_state, 20.0))
    step = jax.jit(rnn_search.make_search_step(model, opts, config), donate_argnums=0)
    valid = text_data.window(streams, 50, config.bptt, config.bptt)
    args = lambda i: (window, valid, jax.random.PRNGKey(i), np.float32(config.bptt))
  else:
    model = rnn_common.build_model(config, VOCAB, RNN_DARTS_V2)
    params = rnn.init_rnn(model, 0)["params"]
    optimizer = rnn_common.make_weight_optimizer(config, average=True)
    state = rnn_eval.RNNTrainState(
        params, rnn_common.with_learning_rate(optimizer.init(params), 20.0), zeros())
    step = jax.jit(rnn_eval.make_train_step(model, optimizer, config), donate_argnums=0)
    args = lambda i: (window, jax.random.PRNGKey(i), np.float32(config.bptt))

  start = time.perf_counter()
  lowered = step.lower(state, *args(0))
  lower_s = time.perf_counter() - start
  start = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  times = []
  for i in range(steps + 1):
    start = time.perf_counter()
    state, metrics = compiled(state, *args(i))
    jax.block_until_ready(metrics)
    if i:
      times.append(time.perf_counter() - start)
  step_s = statistics.median(times)
  tokens = config.batch_size * config.bptt
  print("RESULT " + json.dumps({
      "kind": kind, "method": method, "batch": config.batch_size, "bptt": config.bptt,
      "units": config.model.hidden_size, "lower_s": lower_s, "compile_s": compile_s,
      "step_s": step_s, "tokens_per_s": tokens / step_s,
      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
      "loss": float(jax.tree.leaves(metrics)[0])}), flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", default="search:first_order,search:exact,"
                      "search:finite_difference,eval:sgd")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                    "rnn_step.json"))
  parser.add_argument("--one", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.one:
    return run_one(*args.one.split(":"), args.steps)

  rows = []
  for row in args.rows.split(","):
    result = measure_in_subprocess([__file__, "--one", row, "--steps", str(args.steps)],
                                   row=row)
    print(json.dumps(result), flush=True)
    rows.append(result)

  write_results(args.out, "rnn_step", rows)
  print("\n| step | method | batch x BPTT | units | lower (s) | compile (s) | step (s) | "
        "tokens/s | peak RSS (GB) |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for r in rows:
    if r.get("failed"):
      print(f"| {r['row']} | failed (return code {r['returncode']}) | | | | | | | |")
      continue
    print(f"| {r['kind']} | {r['method']} | {r['batch']} x {r['bptt']} | {r['units']} | "
          f"{r['lower_s']:.1f} | {r['compile_s']:.1f} | {r['step_s']:.2f} | "
          f"{r['tokens_per_s']:.0f} | {r['peak_rss_gb']:.2f} |")


if __name__ == "__main__":
  main()
