"""Step time, compile time and peak memory of each differentiable-NAS method's search step.

    python benchmarks/methods_step.py                        # every NAS-Bench-201 method config
    python benchmarks/methods_step.py --configs nb201_search:first_order,nb201_gdas --steps 2
    python benchmarks/methods_step.py --space darts --out benchmarks/results/methods_step_darts.json

Each method as its config builds it (`configs/nb201_<method>.py`: the relaxation, regulariser
and weight-step perturbation, through `cnn_search`'s own builders), at NAS-Bench-201's size
(C=16, 3 stages of 5 cells, 32x32, 10 classes, batch 64; `--space darts`: DARTS' space,
the configs' own cells and channels, 32x32, batch 64) with the config's hypergradient
(first order for every release; `config:method` sets another), jitted with the state donated, each in a fresh process (its
own compile and peak RSS); median of `--steps` after one. Results:
benchmarks/results/methods_step.json and a markdown table on stdout.
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

CONFIGS = ("nb201_search:first_order", "nb201_search", "nb201_gdas", "nb201_snas", "nb201_drnas",
           "nb201_fair_darts", "nb201_beta_darts", "nb201_sdarts_rs", "nb201_sdarts_adv",
           "nb201_darts_minus", "nb201_pc_darts")
# `--space darts`: the DARTS-space configs at their own sizes (GDAS' 6 cells; `@layers=8`
# measures it at DARTS' 8 too).
DARTS_CONFIGS = ("cifar_search:first_order", "cifar_gdas", "cifar_gdas@layers=8", "cifar_snas",
                 "cifar_drnas", "cifar_fair_darts", "cifar_beta_darts", "cifar_sdarts_rs",
                 "cifar_sdarts_adv", "cifar_darts_minus")
BASELINES = ("nb201_search:first_order", "cifar_search:first_order")


def run_one(args):
  """Measures one config's step in this process and prints a RESULT line."""
  import importlib

  from darts_jax.train import xla_flags
  xla_flags.configure_cpu()  # as main.py does
  import jax

  from darts_jax import bilevel, regularisers, spaces
  from darts_jax.train import cnn_search

  spec, _, layers = args.config.partition("@layers=")  # "config@layers=N": N cells
  name, _, method = spec.partition(":")  # "config:method" sets the hypergradient
  config = importlib.import_module(f"configs.{name}").get_config()
  if method:
    config.hypergradient.method = method
  if layers:
    config.model.layers = int(layers)
  space = spaces.get(config.search_space)
  model = space.build(config, 10)
  weights, stats = space.init(model, 0, (32, 32, 3))
  alphas = space.init_alphas(jax.random.PRNGKey(1), model)
  opts = cnn_search.make_optimizers(config, steps_per_epoch=390)
  state = bilevel.init_search_state(weights, alphas, opts, bilevel.ModelState(stats))
  weight_loss_fn = cnn_search.make_weight_loss_fn(config, model)
  step = jax.jit(cnn_search.make_search_step(
      model, opts, alpha_penalty=regularisers.build(config.regulariser),
      weight_loss_fn=weight_loss_fn, **bilevel.hypergradient_options(config.hypergradient)),
      donate_argnums=0)
  key = jax.random.PRNGKey(2)
  batch = lambda k: {"images": jax.random.normal(k, (args.batch, 32, 32, 3)),
                     "labels": jax.random.randint(k, (args.batch,), 0, 10)}
  train, val = batch(key), batch(jax.random.fold_in(key, 1))
  epoch = jax.numpy.asarray(10)
  start = time.perf_counter()
  compiled = step.lower(state, train, val, key, epoch=epoch).compile()
  compile_s = time.perf_counter() - start
  times = []
  for i in range(args.steps + 1):
    start = time.perf_counter()
    state, metrics = compiled(state, train, val, key, epoch=epoch)
    jax.block_until_ready(metrics)
    if i:
      times.append(time.perf_counter() - start)
  print("RESULT " + json.dumps({
      "config": args.config, "method": config.hypergradient.method, "batch": args.batch,
      "compile_s": compile_s, "step_s": statistics.median(times), "steps_timed": len(times),
      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}), flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default=None, help="default: every config of --space")
  parser.add_argument("--space", choices=("nas_bench_201", "darts"), default="nas_bench_201")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--steps", type=int, default=2)
  parser.add_argument("--out", default="benchmarks/results/methods_step.json")
  parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--config", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.one:
    return run_one(args)
  configs = args.configs or ",".join(CONFIGS if args.space == "nas_bench_201" else DARTS_CONFIGS)
  rows = []
  for name in configs.split(","):
    row = measure_in_subprocess([__file__, "--one", "--config", name, "--batch",
                                 str(args.batch), "--steps", str(args.steps)], config=name)
    print(json.dumps(row), flush=True)
    rows.append(row)
    write_results(args.out, "methods_step", rows)
  base = next((r["step_s"] for r in rows if r["config"] in BASELINES and "step_s" in r), None)
  print("| config | hypergradient | compile (s) | step (s) | vs DARTS first order | "
        "peak RSS (GB) |")
  print("| --- | --- | --- | --- | --- | --- |")
  for r in rows:
    if r.get("failed"):
      print(f"| {r['config']} | failed (return code {r['returncode']}) | | | | |")
      continue
    ratio = f"{r['step_s'] / base:.2f}x" if base else ""
    print(f"| {r['config']} | {r['method']} | {r['compile_s']:.1f} | {r['step_s']:.2f} | "
          f"{ratio} | {r['peak_rss_gb']:.2f} |")


if __name__ == "__main__":
  main()
