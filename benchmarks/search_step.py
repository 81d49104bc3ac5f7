"""Compile time, step time and peak memory of the DARTS CNN search step.

    python benchmarks/search_step.py                       # all methods, batch 64 and 16
    python benchmarks/search_step.py --methods exact --batches 16 --steps 3
    python benchmarks/search_step.py --space nas_bench_201 --methods first_order,exact \
        --batches 64                                       # NAS-Bench-201's supernet

One step = the alpha step (first order, exact second order or DARTS' finite difference) and
the weight step, at the paper's size (C=16, 8 cells, 32x32, CIFAR-10 classes). Each
configuration runs in a fresh subprocess so its peak RSS is its own: once with an empty
persistent compilation cache (cold compile) and once more reading that cache (warm start).
Results: benchmarks/results/search_step.json and a markdown table on stdout. Also reports,
with --fd-error, the float64 relative error of the finite-difference hypergradient against the
exact one on a small supernet.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_FLOPS_PER_IMAGE = 2 * 300.3e6  # one supernet forward, official count of mult-adds


def run_one(args):
  """Measures one (method, batch) in this process and prints a JSON line."""
  if args.fast_kernels:
    from darts_jax.train import xla_flags
    xla_flags.configure_cpu()  # as main.py does with config.xla_cpu_fast_kernels
  import jax
  if args.cache_dir:
    jax.config.update("jax_compilation_cache_dir", args.cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  from darts_jax import bilevel
  from darts_jax import spaces as search_spaces
  from darts_jax.spaces import nas_bench_201
  from darts_jax.spaces.darts_cnn import supernet
  from darts_jax.train import cnn_search

  if args.space == "darts":
    model = supernet.SearchNetwork(channels=args.channels, layers=args.layers, remat=args.remat,
                                   impl=args.impl or None, edge_loop=args.edge_loop or None)
  else:  # the benchmark's network: 3 stages of 5 cells
    import ml_collections
    from darts_jax import relaxations
    config = ml_collections.ConfigDict({"relaxation": args.relaxation, "epochs": 50})
    model = nas_bench_201.SearchNetwork201(
        channels=args.channels, cells_per_stage=5,
        relax=relaxations.build(config, nas_bench_201.OPS),
        one_op=args.relaxation in relaxations.ONE_OP)
  space = search_spaces.get(args.space)
  weights, batch_stats = space.init(model, 0, (32, 32, 3))
  alphas = space.init_alphas(jax.random.PRNGKey(1), model)
  opts = bilevel.darts_optimizers()
  state = bilevel.init_search_state(weights, alphas, opts, bilevel.ModelState(batch_stats))
  step = jax.jit(cnn_search.make_search_step(model, opts, method=args.method,
                                             exact_mode=args.exact_mode), donate_argnums=0)
  key = jax.random.PRNGKey(2)
  batch = lambda k: {"images": jax.random.normal(k, (args.batch, 32, 32, 3)),
                     "labels": jax.random.randint(k, (args.batch,), 0, 10)}
  train, val = batch(key), batch(jax.random.fold_in(key, 1))

  start = time.perf_counter()
  lowered = step.lower(state, train, val, key)
  lower_s = time.perf_counter() - start
  start = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  times = []
  for i in range(args.steps + 1 if args.steps else 0):
    start = time.perf_counter()
    state, metrics = compiled(state, train, val, key)
    jax.block_until_ready(metrics)
    if i:  # the first call pays one-off allocation costs
      times.append(time.perf_counter() - start)
  record = {"method": args.method, "batch": args.batch, "impl": args.impl or "default",
            "edge_loop": args.edge_loop or "default", "fast_kernels": args.fast_kernels,
            "remat": args.remat, "exact_mode": args.exact_mode, "relaxation": args.relaxation,
            "lower_s": lower_s,
            "compile_s": compile_s, "step_s": statistics.median(times) if times else None,
            "steps_timed": len(times),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
  if times:
    record["images_per_s"] = args.batch / record["step_s"]
  print("RESULT " + json.dumps(record), flush=True)


def fd_error():
  """float64: relative error of DARTS' finite difference vs the exact hypergradient."""
  import jax
  jax.config.update("jax_enable_x64", True)
  import jax.numpy as jnp
  import numpy as np
  from darts_jax import bilevel, hypergradient
  from darts_jax.spaces.darts_cnn import supernet
  from darts_jax.train import cnn_search

  model = supernet.SearchNetwork(channels=4, layers=5)
  weights, batch_stats = supernet.init_supernet(model, seed=0, image_shape=(16, 16, 3))
  to64 = lambda t: jax.tree.map(lambda x: x.astype(jnp.float64), t)
  weights, batch_stats = to64(weights), to64(batch_stats)
  alphas = to64(supernet.init_alphas(jax.random.PRNGKey(1)))
  opts = bilevel.darts_optimizers()
  opt_state = opts.weight.init(weights)
  model_loss = cnn_search.make_loss_fn(model)
  loss_fn = lambda w, a, b: model_loss(w, a, b, bilevel.LossState(batch_stats), None)
  key = jax.random.PRNGKey(3)
  batch = lambda k: {"images": jax.random.normal(k, (8, 16, 16, 3), jnp.float64),
                     "labels": jax.random.randint(k, (8,), 0, 10)}
  # A few real weight steps first, so the momentum buffer is not zero.
  for i in range(3):
    g = jax.grad(lambda w: loss_fn(w, alphas, batch(jax.random.fold_in(key, i)))[0])(weights)
    updates, opt_state = opts.weight.update(g, opt_state, weights)
    weights = jax.tree.map(lambda w, u: w + u, weights, updates)
  train, val = batch(jax.random.fold_in(key, 10)), batch(jax.random.fold_in(key, 11))
  flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])
  hg = lambda **kw: flat(jax.jit(lambda w, a: hypergradient(
      loss_fn, w, a, train, val, opts.inner, opts.inner_state(opt_state), has_aux=True,
      **kw)[0])(weights, alphas))
  exact = hg(method="exact")
  out = {}
  for name, kw in {"finite_difference_r0.01": dict(method="finite_difference"),
                   "first_order": dict(method="first_order")}.items():
    out[name] = float(np.linalg.norm(hg(**kw) - exact) / np.linalg.norm(exact))
  out["exact_reverse_over_reverse"] = float(
      np.linalg.norm(hg(method="exact", exact_mode="reverse_over_reverse") - exact)
      / np.linalg.norm(exact))
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--space", default="darts", help="darts | nas_bench_201")
  parser.add_argument("--methods", default="first_order,exact,finite_difference")
  parser.add_argument("--batches", default="64,16")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--channels", type=int, default=16)
  parser.add_argument("--layers", type=int, default=8)
  parser.add_argument("--remat", default="edge", help="SearchNetwork.remat policy")
  parser.add_argument("--relaxation", default="softmax", help="NAS-Bench-201 only: a name "
                      "in darts_jax.relaxations (gumbel_hard: GDAS, one op per edge)")
  parser.add_argument("--impl", default="", help="depthwise: dense | grouped | shifted "
                      "(default: by backend)")
  parser.add_argument("--edge-loop", default="", help="scan | unroll (default: scan)")
  parser.add_argument("--fast-kernels", type=int, default=1,
                      help="1: XLA_FLAGS=--xla_cpu_use_fusion_emitters=false, as the configs")
  parser.add_argument("--exact-mode", default="forward_over_reverse",
                      help="the exact hypergradient's form: forward_over_reverse | "
                      "reverse_over_reverse")
  parser.add_argument("--fd-error", action="store_true")
  parser.add_argument("--out", help="default: benchmarks/results/search_step[_<space>].json")
  # Internal: one measurement in this process.
  parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--method", help=argparse.SUPPRESS)
  parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
  parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.one:
    return run_one(args)
  suffix = "" if args.space == "darts" else f"_{args.space}"
  args.out = args.out or os.path.join(ROOT, "benchmarks", "results",
                                      f"search_step{suffix}.json")

  rows = []
  for batch in [int(b) for b in args.batches.split(",")]:
    for method in args.methods.split(","):
      with tempfile.TemporaryDirectory() as cache:
        row = {}
        for phase, steps in (("cold", args.steps), ("warm", 0)):
          cmd = [sys.executable, __file__, "--one", "--method", method, "--batch", str(batch),
                 "--steps", str(steps), "--cache-dir", cache, "--channels", str(args.channels),
                 "--space", args.space,
                 "--layers", str(args.layers), "--remat", args.remat, "--impl", args.impl,
                 "--edge-loop", args.edge_loop, "--fast-kernels", str(args.fast_kernels),
                 "--exact-mode", args.exact_mode, "--relaxation", args.relaxation]
          out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
          lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
          if out.returncode or not lines:
            # Recorded, not fatal: e.g. the kernel's OOM killer (-9) on a 24 GB machine.
            result = {"method": method, "batch": batch, "failed": phase,
                      "returncode": out.returncode, "stderr_tail": out.stderr[-2000:]}
            print(f"{method} batch {batch} {phase} run failed with return code "
                  f"{out.returncode}", file=sys.stderr)
            row = row or result
            break
          result = json.loads(lines[-1][len("RESULT "):])
          if phase == "cold":
            row = result
          else:
            row["warm_compile_s"] = result["compile_s"]
            row["warm_lower_s"] = result["lower_s"]
        print(json.dumps(row), flush=True)
        rows.append(row)

  import jax
  record = {"benchmark": "search_step", "space": args.space, "channels": args.channels,
            "layers": args.layers if args.space == "darts" else 15,
            "remat": args.remat,
            "jax": jax.__version__, "backend": jax.default_backend(), "cpu_count": os.cpu_count(),
            "machine": platform.machine(), "processor": platform.processor(), "rows": rows}
  if args.fd_error:
    record["fd_error"] = fd_error()
    print(json.dumps(record["fd_error"]))
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(record, f, indent=1)

  print("\n| method | batch | lower (s) | cold compile (s) | warm start (s) | step (s) | "
        "images/s | peak RSS (GB) | GFLOP/s (paper count) |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for r in rows:
    if "failed" in r:
      print(f"| {r['method']} | {r['batch']} | failed in the {r['failed']} run (return code "
            f"{r['returncode']}) | | | | | | |")
      continue
    # Forward + backward ~ 3 forwards; a first-order step is 2 of those, the exact and
    # finite-difference steps about 4 (see benchmarks/README.md).
    passes = 2 if r["method"] == "first_order" else 4
    gflops = (3 * passes * PAPER_FLOPS_PER_IMAGE * r["batch"] / r["step_s"] / 1e9
              if r["step_s"] and args.space == "darts" else float("nan"))
    print(f"| {r['method']} | {r['batch']} | {r['lower_s']:.1f} | {r['compile_s']:.1f} | "
          f"{r['warm_lower_s'] + r['warm_compile_s']:.1f} | {r['step_s']:.2f} | "
          f"{r.get('images_per_s', float('nan')):.1f} | {r['peak_rss_gb']:.2f} | {gflops:.1f} |")


if __name__ == "__main__":
  main()
