"""Many seeds in one program (`--config.num_seeds=N`) against N separate runs.

    python benchmarks/many_seeds.py          # first order and exact, N = 1, 4, 8
    python benchmarks/many_seeds.py --methods first_order --runs 1:1,2:2,2:1 --steps 2

The NAS-Bench-201 search step at the benchmark's size (C=16, 3 stages of 5 cells, 32x32,
10 classes, batch 64), as the trainer runs it for N seeds: the state stacked along a seed
axis and the step mapped over it by `cnn_search.over_seeds`, `vmap_seeds` seeds at a time
(`--runs N:vmap_seeds,...`; N:N is one vmap, N:1 a loop of the one-seed step in one
program), jitted with the state donated. Each (method, N) runs in a fresh subprocess, so its compile time and
peak RSS are its own. N separate runs cost N compiles and N times the one-seed step; the
table's ratios compare those with the one program, measured in the same run of this script.
Results: benchmarks/results/many_seeds.json and a markdown table on stdout.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import measure_in_subprocess, write_results  # noqa: E402


def run_one(args):
  """Measures one (method, N) in this process and prints a RESULT line."""
  from darts_jax.train import xla_flags
  xla_flags.configure_cpu()  # as main.py does
  import jax
  import jax.numpy as jnp
  import numpy as np

  from darts_jax import bilevel
  from darts_jax.spaces import nas_bench_201
  from darts_jax.train import cnn_search
  from configs import nb201_search

  config = nb201_search.get_config()
  config.hypergradient.method = args.method
  model = nas_bench_201.SearchNetwork201(channels=16, cells_per_stage=5, num_classes=10)
  opts = cnn_search.make_optimizers(config, steps_per_epoch=390)
  n = args.num_seeds

  def init(seed):
    weights, stats = nas_bench_201.init_supernet(model, seed, (32, 32, 3))
    alphas = nas_bench_201.init_alphas(jax.random.PRNGKey(seed))
    return bilevel.init_search_state(weights, alphas, opts, bilevel.ModelState(stats))

  step = cnn_search.make_search_step(model, opts,
                                     **bilevel.hypergradient_options(config.hypergradient))
  seeds = (n,) if n > 1 else ()  # one seed: the unmapped step, as the trainer runs it
  if n > 1:
    step = cnn_search.over_seeds(step, (0, 0, 0, 0), args.vmap_seeds)
    state = jax.tree.map(lambda *x: jnp.stack(x), *[init(s) for s in range(n)])
    keys = jnp.stack([jax.random.PRNGKey(s) for s in range(n)])
  else:
    state, keys = init(0), jax.random.PRNGKey(0)
  step = jax.jit(step, donate_argnums=0)
  rng = np.random.default_rng(0)
  batch = lambda: {
      "images": jnp.asarray(rng.standard_normal((*seeds, 64, 32, 32, 3), np.float32)),
      "labels": jnp.asarray(rng.integers(0, 10, (*seeds, 64)), jnp.int32)}
  start = time.perf_counter()
  compiled = step.lower(state, batch(), batch(), keys).compile()
  compile_s = time.perf_counter() - start
  state, metrics = compiled(state, batch(), batch(), keys)  # warm-up
  jax.block_until_ready(metrics)
  times = []
  for _ in range(args.steps):
    train, val = batch(), batch()
    start = time.perf_counter()
    state, metrics = compiled(state, train, val, keys)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  assert np.all(np.isfinite(np.asarray(metrics["train_loss"])))
  print("RESULT " + json.dumps({
      "method": args.method, "num_seeds": n, "vmap_seeds": args.vmap_seeds,
      "compile_s": compile_s,
      "step_s": statistics.median(times), "steps_timed": args.steps,
      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}), flush=True)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--methods", default="first_order,exact")
  # N:vmap_seeds; N:N vmapped at once needs N times one seed's memory (3.4 GB first order).
  parser.add_argument("--runs", default="1:1,4:1,4:4,8:1")
  parser.add_argument("--steps", type=int, default=1)
  parser.add_argument("--out", default="benchmarks/results/many_seeds.json")
  parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--method", help=argparse.SUPPRESS)
  parser.add_argument("--num_seeds", type=int, help=argparse.SUPPRESS)
  parser.add_argument("--vmap_seeds", type=int, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.one:
    return run_one(args)
  rows = []
  for method in args.methods.split(","):
    for run in args.runs.split(","):
      n, chunk = map(int, run.split(":"))
      row = measure_in_subprocess([os.path.abspath(__file__), "--one", "--method", method,
                                   "--num_seeds", str(n), "--vmap_seeds", str(chunk),
                                   "--steps", str(args.steps)],
                                  method=method, num_seeds=n, vmap_seeds=chunk)
      print(json.dumps(row), flush=True)
      rows.append(row)
  one = {r["method"]: r for r in rows if r["num_seeds"] == 1 and not r.get("failed")}
  print("| method | seeds | vmapped at once | compile (s) | step (s) | step per seed (s) | N "
        "separate runs' steps / one program's | peak RSS (GB) |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |")
  for r in rows:
    if r.get("failed"):
      print(f"| {r['method']} | {r['num_seeds']} | {r['vmap_seeds']} | failed "
            f"({r['returncode']}) | | | | |")
      continue
    base = one.get(r["method"])
    ratio = f"{r['num_seeds'] * base['step_s'] / r['step_s']:.2f}" if base else ""
    r["separate_over_vmapped"] = float(ratio) if ratio else None
    print(f"| {r['method']} | {r['num_seeds']} | {r['vmap_seeds']} | {r['compile_s']:.1f} | "
          f"{r['step_s']:.2f} | "
          f"{r['step_s'] / r['num_seeds']:.2f} | {ratio} | {r['peak_rss_gb']:.2f} |")
  with open("/proc/cpuinfo") as f:
    cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
  write_results(args.out, "many_seeds", rows, cpu=cpu, batch=64, space="nas_bench_201")


if __name__ == "__main__":
  main()
