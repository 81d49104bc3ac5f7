"""Layouts, dtypes and steps of the DARTS search on whatever accelerator JAX sees, in minutes.

    python benchmarks/accelerator.py                   # paper size, batch 64: under 8 minutes
    python benchmarks/accelerator.py --size small      # a small supernet: checks it runs (CPU)

On the device JAX picks (GPU, TPU, or the CPU when there is none), at the paper's size (C=16,
8 cells, 32x32, CIFAR-10 classes, batch 64):

1. the first-order search step for every layout of the supernet, edges scanned or unrolled x
   depthwise grouped (XLA's native convolution), shifted windows or composed into dense
   kernels, in float32 and bfloat16 (`SearchNetwork(impl=, edge_loop=, dtype=)`);
2. the exact second-order step for the fastest layout of each dtype;
3. the CIFAR-10 evaluation training step (DARTS_V2, C=36, 20 cells, batch 96) in each dtype,
   with the fastest depthwise of step 1.

Each measurement runs in its own process (its peak device memory is its own) under a time
limit, and the whole stops starting new ones once --budget-s is spent, so the script ends
within about 8 minutes anywhere. Per row: compile time, median step time, peak device memory
(`memory_stats()["peak_bytes_in_use"]`; the process's peak RSS on a CPU) and, for the search
steps, the projected time of a 50-epoch search (391 steps of batch 64 per epoch on 25,000
images). It ends with the fastest layout per dtype and whether that is the backend's default
(`darts_jax.spaces.ops.default_depthwise_impl`, edges scanned). Results:
benchmarks/results/accelerator_<backend>[_<size>].json and a markdown table on stdout.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks.common import write_results  # noqa: E402

SIZES = {  # channels, cells, search batch, evaluation (channels, cells, batch)
    "paper": dict(channels=16, layers=8, batch=64, eval_channels=36, eval_layers=20,
                  eval_batch=96),
    "small": dict(channels=4, layers=5, batch=8, eval_channels=8, eval_layers=5, eval_batch=8),
}
SEARCH_STEPS = 50 * 391  # 50 epochs of 25,000 images at batch 64 (the last batch partial)
LAYOUTS = [(loop, impl) for loop in ("scan", "unroll") for impl in ("grouped", "shifted",
                                                                    "dense")]


def _peak_memory_gb():
  import jax
  stats = jax.local_devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"] / 2**30, "device"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "rss"


def _time(compiled, state, args, steps):
  import jax
  times = []
  for i in range(steps + 1):
    start = time.perf_counter()
    state, metrics = compiled(state, *args(i))
    jax.block_until_ready(metrics)
    if i:  # the first call pays one-off allocation costs
      times.append(time.perf_counter() - start)
  return statistics.median(times), metrics


def run_search(a):
  import jax
  from darts_jax import bilevel
  from darts_jax.spaces.darts_cnn import supernet
  from darts_jax.train import cnn_search

  size = SIZES[a.size]
  model = supernet.SearchNetwork(channels=size["channels"], layers=size["layers"],
                                 impl=a.impl, edge_loop=a.edge_loop, dtype=a.dtype)
  weights, stats = supernet.init_supernet(model, 0, (32, 32, 3))
  alphas = supernet.init_alphas(jax.random.PRNGKey(1))
  opts = bilevel.darts_optimizers()
  state = bilevel.init_search_state(weights, alphas, opts, bilevel.ModelState(stats))
  step = jax.jit(cnn_search.make_search_step(model, opts, method=a.method), donate_argnums=0)
  key = jax.random.PRNGKey(2)
  batch = lambda k: {"images": jax.random.normal(k, (size["batch"], 32, 32, 3)),
                     "labels": jax.random.randint(k, (size["batch"],), 0, 10)}
  train, val = batch(key), batch(jax.random.fold_in(key, 1))
  start = time.perf_counter()
  compiled = step.lower(state, train, val, key).compile()
  compile_s = time.perf_counter() - start
  step_s, metrics = _time(compiled, state, lambda i: (train, val, jax.random.fold_in(key, i)),
                          a.steps)
  return compile_s, step_s, float(metrics["train_loss"]), size["batch"]


def run_eval(a):
  import jax
  import numpy as np
  from configs import cifar_eval
  from darts_jax.spaces.darts_cnn import network
  from darts_jax.spaces.darts_cnn.genotypes import GENOTYPES
  from darts_jax.train import cnn_eval

  size = SIZES[a.size]
  config = cifar_eval.get_config()
  model = network.NetworkCIFAR(GENOTYPES["DARTS_V2"], channels=size["eval_channels"],
                               layers=size["eval_layers"], impl=a.impl, dtype=a.dtype)
  variables = network.init_network(model, 0, (32, 32, 3))
  optimizer = cnn_eval.make_optimizer(config, 500)
  state = cnn_eval.TrainState(variables["params"], variables["batch_stats"],
                              optimizer.init(variables["params"]))
  step = jax.jit(cnn_eval.make_train_step(model, optimizer, config, (0.5,) * 3, (0.25,) * 3),
                 donate_argnums=0)
  rng = np.random.default_rng(0)
  batch = {"images": rng.integers(0, 256, (size["eval_batch"], 32, 32, 3), dtype=np.uint8),
           "labels": rng.integers(0, 10, (size["eval_batch"],)).astype(np.int32)}
  key, rate = jax.random.PRNGKey(0), np.float32(0.2)
  start = time.perf_counter()
  compiled = step.lower(state, key, batch, rate).compile()
  compile_s = time.perf_counter() - start
  step_s, metrics = _time(compiled, state, lambda i: (jax.random.fold_in(key, i), batch, rate),
                          a.steps)
  return compile_s, step_s, float(metrics["loss"]), size["eval_batch"]


def run_one(a):
  import jax
  from darts_jax.spaces import ops
  compile_s, step_s, loss, batch = (run_eval if a.method == "eval" else run_search)(a)
  memory, memory_kind = _peak_memory_gb()
  print("RESULT " + json.dumps({
      "method": a.method, "edge_loop": a.edge_loop, "impl": a.impl, "dtype": a.dtype,
      "batch": batch, "compile_s": compile_s, "step_s": step_s, "images_per_s": batch / step_s,
      "peak_memory_gb": memory, "memory_kind": memory_kind, "loss": loss,
      "finite": bool(loss == loss), "device": str(jax.devices()[0].device_kind),
      "backend": jax.default_backend(), "default_impl": ops.default_depthwise_impl()}),
      flush=True)


def measure(a, method, edge_loop, impl, dtype, deadline):
  labels = dict(method=method, edge_loop=edge_loop, impl=impl, dtype=dtype)
  left = deadline - time.monotonic()
  if left < 20:
    return {**labels, "skipped": "time budget spent"}
  cmd = [sys.executable, os.path.abspath(__file__), "--one", "--method", method, "--edge-loop",
         edge_loop, "--impl", impl, "--dtype", dtype, "--size", a.size, "--steps", str(a.steps)]
  try:
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                         timeout=min(a.timeout_s, left))
  except subprocess.TimeoutExpired:
    return {**labels, "skipped": f"over its {min(a.timeout_s, left):.0f} s limit"}
  lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
  if out.returncode or not lines:
    return {**labels, "failed": out.returncode, "stderr_tail": out.stderr[-1500:]}
  return json.loads(lines[-1][len("RESULT "):])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", choices=sorted(SIZES), default="paper")
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--steps", type=int, default=5, help="timed steps per row (median)")
  parser.add_argument("--budget-s", type=float, default=450,
                      help="start no measurement after this many seconds")
  parser.add_argument("--timeout-s", type=float, default=150, help="limit per measurement")
  parser.add_argument("--out", default="")
  parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--method", help=argparse.SUPPRESS)
  parser.add_argument("--edge-loop", help=argparse.SUPPRESS)
  parser.add_argument("--impl", help=argparse.SUPPRESS)
  parser.add_argument("--dtype", help=argparse.SUPPRESS)
  a = parser.parse_args()
  if a.one:
    return run_one(a)
  from darts_jax.train import xla_flags
  xla_flags.configure_cpu()  # as main.py does (the children inherit it); ignored off CPU
  # This process never starts JAX: on a GPU it would hold the device's memory.
  deadline = time.monotonic() + a.budget_s
  dtypes = a.dtypes.split(",")
  rows = []

  def record(row):
    if "step_s" in row and row["method"] != "eval":
      row["projected_50_epochs_h"] = row["step_s"] * SEARCH_STEPS / 3600
    print(json.dumps(row), flush=True)
    rows.append(row)
    return row

  best = {}

  def sweep(edge_loop):
    for dtype in dtypes:
      for loop, impl in LAYOUTS:
        if loop == edge_loop:
          row = record(measure(a, "first_order", loop, impl, dtype, deadline))
          if "step_s" in row and (dtype not in best or row["step_s"] < best[dtype]["step_s"]):
            best[dtype] = row

  # Scanned edges first, then the exact and evaluation steps, then the unrolled layouts
  # (they compile longest): a spent budget then costs the least informative rows.
  sweep("scan")
  for dtype, fastest in best.items():
    record(measure(a, "exact", fastest["edge_loop"], fastest["impl"], dtype, deadline))
  done = [r for r in rows if "backend" in r]
  if not done:
    sys.exit("accelerator: no measurement succeeded; the first error:\n"
             + rows[0].get("stderr_tail", str(rows[0])))
  backend, default_impl = done[0]["backend"], done[0]["default_impl"]
  for dtype in dtypes:
    impl = best[dtype]["impl"] if dtype in best else default_impl
    record(measure(a, "eval", "-", impl, dtype, deadline))
  sweep("unroll")

  defaults = {"impl": default_impl, "edge_loop": "scan"}
  choice = {dtype: {"edge_loop": r["edge_loop"], "impl": r["impl"],
                    "is_default": r["edge_loop"] == defaults["edge_loop"]
                    and r["impl"] == defaults["impl"]} for dtype, r in best.items()}
  suffix = "" if a.size == "paper" else f"_{a.size}"
  out = a.out or os.path.join(ROOT, "benchmarks", "results", f"accelerator_{backend}{suffix}.json")
  device = done[0]["device"]
  write_results(out, "accelerator", rows, device=device, size=a.size, **SIZES[a.size],
                fastest=choice, defaults=defaults)
  print(f"\nDevice: {device} ({backend}), size {a.size}\n")
  print("| step | edges | depthwise | dtype | batch | compile (s) | step (s) | images/s | "
        "peak memory (GB) | 50-epoch search (h) |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for r in rows:
    head = f"| {r['method']} | {r['edge_loop']} | {r['impl']} | {r['dtype']} |"
    if "step_s" not in r:
      why = r.get("skipped") or f"failed (return code {r.get('failed')})"
      print(f"{head} {why} | | | | | |")
      continue
    hours = f"{r['projected_50_epochs_h']:.2f}" if "projected_50_epochs_h" in r else ""
    print(f"{head} {r['batch']} | {r['compile_s']:.1f} | {r['step_s']:.3f} | "
          f"{r['images_per_s']:.1f} | {r['peak_memory_gb']:.2f} | {hours} |")
  for dtype, c in choice.items():
    print(f"\nfastest {dtype} layout on {backend}: edges {c['edge_loop']}, depthwise {c['impl']}"
          f" ({'the default' if c['is_default'] else 'not the default: ' + str(defaults)})")


if __name__ == "__main__":
  main()
