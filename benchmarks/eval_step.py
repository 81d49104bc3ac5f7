"""Compile time, step time and peak memory of the evaluation networks' training step.

    python benchmarks/eval_step.py                        # CIFAR-10 DARTS_V2 at batch 96 and 32
    python benchmarks/eval_step.py --networks imagenet --batches 16

One step = `darts_jax.train.cnn_eval.make_train_step`, as the trainer jits it: on-device crop, flip
and cutout (CIFAR), the network with its auxiliary head and drop path, SGD. Paper sizes:
CIFAR-10 (C=36, 20 cells, 32x32), ImageNet mobile (C=48, 14 cells, 224x224). Each row runs in
a fresh subprocess, so its peak RSS is its own. Results: benchmarks/results/eval_step.json
and a markdown table on stdout.
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


def run_one(args):
  """Measures one configuration in this process and prints a JSON line."""
  if args.fast_kernels:
    from darts_jax.train import xla_flags
    xla_flags.configure_cpu()
  import jax
  import numpy as np
  from configs import cifar_eval, imagenet_eval
  from darts_jax.train import cnn_eval
  from darts_jax.spaces.darts_cnn import network
  from darts_jax.spaces.darts_cnn.genotypes import GENOTYPES

  config = (imagenet_eval if args.network == "imagenet" else cifar_eval).get_config()
  config.model.scan_cells = args.scan_cells
  shape, classes = ((224, 224, 3), 1000) if args.network == "imagenet" else ((32, 32, 3), 10)
  kind = network.NetworkImageNet if args.network == "imagenet" else network.NetworkCIFAR
  model = kind(GENOTYPES[args.genotype], impl=args.impl or None, scan_cells=args.scan_cells,
               remat=args.remat)
  variables = network.init_network(model, 0, shape)
  optimizer = cnn_eval.make_optimizer(config, 500)
  state = cnn_eval.TrainState(variables["params"], variables["batch_stats"],
                              optimizer.init(variables["params"]))
  step = jax.jit(cnn_eval.make_train_step(model, optimizer, config, (0.5,) * 3, (0.25,) * 3),
                 donate_argnums=0)
  rng = np.random.default_rng(0)
  batch = {"images": rng.integers(0, 256, (args.batch, *shape), dtype=np.uint8),
           "labels": rng.integers(0, classes, (args.batch,)).astype(np.int32)}
  key, rate = jax.random.PRNGKey(0), np.float32(0.1)

  start = time.perf_counter()
  lowered = step.lower(state, key, batch, rate)
  lower_s = time.perf_counter() - start
  start = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()
  times = []
  for i in range(args.steps + 1):
    start = time.perf_counter()
    state, metrics = compiled(state, jax.random.fold_in(key, i), batch, rate)
    jax.block_until_ready(metrics)
    if i:  # the first call pays one-off allocation costs
      times.append(time.perf_counter() - start)
  step_s = statistics.median(times)
  record = {"network": args.network, "genotype": args.genotype, "batch": args.batch,
            "impl": args.impl or network.default_impl(), "scan_cells": args.scan_cells,
            "remat": args.remat,
            "fast_kernels": args.fast_kernels, "lower_s": lower_s, "compile_s": compile_s,
            "step_s": step_s, "steps_timed": len(times), "images_per_s": args.batch / step_s,
            "mult_adds": network.count_mult_adds(model, shape),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "xla_temp_gb": memory.temp_size_in_bytes / 2**30 if memory else None,
            "loss": float(metrics["loss"])}
  print("RESULT " + json.dumps(record), flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--networks", default="cifar")
  parser.add_argument("--batches", default="96,32")
  parser.add_argument("--genotype", default="DARTS_V2")
  parser.add_argument("--impls", default="", help="depthwise impls, comma separated; "
                      "empty: the backend default")
  parser.add_argument("--scan-cells", default="1", help="1, 0 or 1,0")
  parser.add_argument("--fast-kernels", default="0", help="1, 0 or 1,0: XLA CPU flag")
  parser.add_argument("--remat", default="1", help="1, 0 or 1,0: rematerialised cells")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                    "eval_step.json"))
  parser.add_argument("--append", action="store_true", help="add the rows to those in --out")
  parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--network", help=argparse.SUPPRESS)
  parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
  parser.add_argument("--impl", default="", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.one:
    args.scan_cells = args.scan_cells == "1"
    args.fast_kernels = args.fast_kernels == "1"
    args.remat = args.remat == "1"
    return run_one(args)

  rows = []
  for net in args.networks.split(","):
    for batch in [int(b) for b in args.batches.split(",")]:
      for impl in args.impls.split(","):
        for scan in args.scan_cells.split(","):
          for fast, remat in [(f, r) for f in args.fast_kernels.split(",")
                              for r in args.remat.split(",")]:
            cmd = [__file__, "--one", "--network", net, "--batch", str(batch),
                   "--impl", impl, "--scan-cells", scan, "--fast-kernels", fast,
                   "--remat", remat, "--genotype", args.genotype, "--steps", str(args.steps)]
            row = measure_in_subprocess(cmd, network=net, batch=batch, impl=impl)
            print(json.dumps(row), flush=True)
            rows.append(row)

  if args.append and os.path.exists(args.out):
    with open(args.out) as f:
      rows = json.load(f)["rows"] + rows
  write_results(args.out, "eval_step", rows)
  print("\n| network | batch | depthwise | cells scanned | remat | XLA flag | lower (s) | "
        "compile (s) | step (s) | images/s | peak RSS (GB) | XLA temp (GB) |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for r in rows:
    if r.get("failed"):
      print(f"| {r['network']} | {r['batch']} | {r['impl']} | failed (return code "
            f"{r['returncode']}) | | | | | | |")
      continue
    print(f"| {r['network']} {r['genotype']} | {r['batch']} | {r['impl']} | "
          f"{'yes' if r['scan_cells'] else 'no'} | {'cell' if r['remat'] else 'none'} | "
          f"{'on' if r['fast_kernels'] else 'off'} | {r['lower_s']:.1f} | {r['compile_s']:.1f} | "
          f"{r['step_s']:.2f} | {r['images_per_s']:.1f} | {r['peak_rss_gb']:.2f} | "
          f"{r['xla_temp_gb']:.2f} |")


if __name__ == "__main__":
  main()
