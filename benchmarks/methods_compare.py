"""A short real comparison of the differentiable-NAS family on NAS-Bench-201, same budget each.

    python benchmarks/methods_compare.py --data-dir /data/cifar-10-batches-bin
    python benchmarks/methods_compare.py --data-dir DIR --configs nb201_search,nb201_gdas \
        --epochs 6 --num-train 6400

Each method runs as its config builds it (configs/nb201_<method>.py: relaxation, regulariser,
perturbation, hypergradient, optimisers), through `cnn_search.train_and_evaluate` as
`main.py` runs it, on the first `--num-train` CIFAR-10 training images of `--data-dir` (the
binary format), split in halves between weights and alphas (SNAS, single level, trains on one
half: the same number of weight steps of the same batch), for `--epochs` epochs: every
method's schedule (temperatures, ramps, decays, PC-DARTS' warm-up as the same share of the
epochs) runs its whole course within the budget. The
supernet is NAS-Bench-201's (C=16, 3 stages of 5 cells) unless `--channels` and
`--cells-per-stage` shrink it. Reported per method: the derived cell, its NAS-Bench-201
CIFAR-10 test accuracy at 200 epochs from the table the package ships, the supernet's
search-validation accuracy, and the wall time; each method in a fresh process. Results:
benchmarks/results/methods_compare.json and a markdown table on stdout.
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import measure_in_subprocess, write_results  # noqa: E402

CONFIGS = ("nb201_search:first_order", "nb201_search", "nb201_gdas", "nb201_snas",
           "nb201_drnas", "nb201_fair_darts", "nb201_beta_darts", "nb201_sdarts_rs",
           "nb201_sdarts_adv", "nb201_darts_minus", "nb201_pc_darts")


def run_one(args):
  """Searches with one config in this process and prints a RESULT line."""
  import importlib

  from darts_jax.train import xla_flags
  xla_flags.configure_cpu()  # as main.py does

  from darts_jax.spaces import nas_bench_201
  from darts_jax.train import cnn_search, schema

  name, _, method = args.config.partition(":")  # "config:method" sets the hypergradient
  config = importlib.import_module(f"configs.{name}").get_config()
  if method:
    config.hypergradient.method = method
  single = config.hypergradient.method == "single_level"
  config.data.name = "cifar10"
  config.data.dir = args.data_dir
  config.data.num_train = args.num_train // 2 if single else args.num_train
  if "alpha_warmup_epochs" in config:  # PC-DARTS: its warm-up, the same share of the budget
    config.alpha_warmup_epochs = max(1, round(config.alpha_warmup_epochs * args.epochs
                                              / config.epochs))
  config.epochs = args.epochs
  config.batch_size = args.batch
  config.model.channels = args.channels
  config.model.cells_per_stage = args.cells_per_stage
  config.seed = args.seed
  config.eval_examples = args.eval_examples
  config.progress_bar = False
  config.checkpoint.every_steps = 10**6
  schema.check(config)
  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as workdir:
    result = cnn_search.train_and_evaluate(config, workdir)
  print("RESULT " + json.dumps({
      "config": args.config, "method": config.hypergradient.method,
      "relaxation": config.relaxation, "genotype": result["genotype"],
      "cell": str(nas_bench_201.Genotype201.from_json(json.dumps(result["genotype"]))),
      "cifar10_test_200": result["nas_bench_201/cifar10.test.200"],
      "rank": result.get("nas_bench_201/cifar10.test.200/rank"),
      "search_val_accuracy": result["search_val_accuracy"],
      "steps": args.epochs * (config.data.num_train // (1 if single else 2)) // args.batch,
      "wall_s": time.perf_counter() - start}), flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data-dir", required=True, help="CIFAR-10's cifar-10-batches-bin")
  parser.add_argument("--configs", default=",".join(CONFIGS))
  parser.add_argument("--num-train", type=int, default=6400)
  parser.add_argument("--epochs", type=int, default=6)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--channels", type=int, default=16)
  parser.add_argument("--cells-per-stage", type=int, default=5)
  parser.add_argument("--eval-examples", type=int, default=1024)
  parser.add_argument("--seed", type=int, default=2)
  parser.add_argument("--out", default="benchmarks/results/methods_compare.json")
  parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--config", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.one:
    return run_one(args)
  rows = []
  settings = {k: getattr(args, k) for k in ("num_train", "epochs", "batch", "channels",
                                            "cells_per_stage", "eval_examples", "seed")}
  for name in args.configs.split(","):
    row = measure_in_subprocess(
        [__file__, "--one", "--config", name, "--data-dir", args.data_dir,
         *[f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]], config=name)
    print(json.dumps(row), flush=True)
    rows.append(row)
    write_results(args.out, "methods_compare", rows, settings=settings)
  print("| config | hypergradient | steps | derived cell | NAS-Bench-201 CIFAR-10 test (%) | "
        "search-val acc | wall (s) |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  for r in rows:
    if r.get("failed"):
      print(f"| {r['config']} | failed (return code {r['returncode']}) | | | | | |")
      continue
    cell = r["cell"].replace("|", "\\|")  # a table cell's bars
    print(f"| {r['config']} | {r['method']} | {r['steps']} | `{cell}` | "
          f"{r['cifar10_test_200']:.2f} | {r['search_val_accuracy']:.3f} | {r['wall_s']:.0f} |")


if __name__ == "__main__":
  main()
