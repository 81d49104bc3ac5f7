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
`--processes 4` adds N one-seed runs started at once as N processes (what N separate runs on
one machine are): their images per second over the span of their aligned timed steps.
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
  if args.barrier:  # one of N concurrent processes: start the timed steps together
    open(os.path.join(args.barrier, f"ready_{os.getpid()}"), "w").close()
    while len(os.listdir(args.barrier)) < int(args.processes):
      time.sleep(0.05)
  began = time.time()
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
      "timed_from": began, "timed_to": time.time(),
      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}), flush=True)


def concurrent_runs(n: int, steps: int) -> dict:
  """N first-order one-seed processes started together, their timed steps aligned by a
  barrier: images per second of all N over the span from the first start to the last end."""
  import subprocess
  import tempfile
  with tempfile.TemporaryDirectory() as barrier:
    cmd = [sys.executable, os.path.abspath(__file__), "--one", "--method", "first_order",
           "--num_seeds", "1", "--vmap_seeds", "1", "--steps", str(steps), "--barrier", barrier,
           "--processes", str(n)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    outs = [p.communicate() for p in procs]
  results = []
  for p, (out, err) in zip(procs, outs):
    lines = [l for l in out.splitlines() if l.startswith("RESULT ")]
    if p.returncode or not lines:
      return {"method": "first_order", "num_seeds": n, "vmap_seeds": 1, "processes": n,
              "failed": True, "returncode": p.returncode, "stderr_tail": err[-1500:]}
    results.append(json.loads(lines[-1][len("RESULT "):]))
  span = max(r["timed_to"] for r in results) - min(r["timed_from"] for r in results)
  return {"method": "first_order", "num_seeds": n, "vmap_seeds": 1, "processes": n,
          "compile_s": statistics.median(r["compile_s"] for r in results),
          "step_s": statistics.median(r["step_s"] for r in results),
          "images_per_s": 64 * steps * n / span,
          "peak_rss_gb": sum(r["peak_rss_gb"] for r in results)}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--methods", default="first_order,exact")
  # N:vmap_seeds; N:N vmapped at once needs N times one seed's memory (3.4 GB first order).
  parser.add_argument("--runs", default="1:1,4:1,4:4,8:1")
  parser.add_argument("--steps", type=int, default=1)
  # N one-seed processes at once, each its own program (what N separate runs on one machine
  # are); 8 of them need 8 x one seed's memory.
  parser.add_argument("--processes", default="4", help="N,...: concurrent one-seed runs "
                      "(first order only); empty: none")
  parser.add_argument("--out", default="benchmarks/results/many_seeds.json")
  parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--method", help=argparse.SUPPRESS)
  parser.add_argument("--num_seeds", type=int, help=argparse.SUPPRESS)
  parser.add_argument("--vmap_seeds", type=int, help=argparse.SUPPRESS)
  parser.add_argument("--barrier", help=argparse.SUPPRESS)
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
  for n in [int(p) for p in args.processes.split(",") if p]:
    rows.append(concurrent_runs(n, args.steps))
    print(json.dumps(rows[-1]), flush=True)
  one = {r["method"]: r for r in rows if r["num_seeds"] == 1 and not r.get("failed")}
  for r in rows:
    if not r.get("failed"):
      r.setdefault("images_per_s", 64 * r["num_seeds"] / r["step_s"])
  print("| method | seeds | vmapped at once | compile (s) | step (s) | step per seed (s) | N "
        "separate runs' steps / one program's | images/s | peak RSS (GB) |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for r in rows:
    if r.get("failed"):
      print(f"| {r['method']} | {r['num_seeds']} | {r['vmap_seeds']} | failed "
            f"({r['returncode']}) | | | | | |")
      continue
    if r.get("processes"):
      print(f"| {r['method']} | {r['num_seeds']} | {r['num_seeds']} processes at once | "
            f"{r['compile_s']:.1f} (each) | {r['step_s']:.2f} (each) | "
            f"{r['step_s'] / r['num_seeds']:.2f} | | {r['images_per_s']:.1f} | "
            f"{r['peak_rss_gb']:.2f} (sum) |")
      continue
    base = one.get(r["method"])
    ratio = f"{r['num_seeds'] * base['step_s'] / r['step_s']:.2f}" if base else ""
    r["separate_over_vmapped"] = float(ratio) if ratio else None
    print(f"| {r['method']} | {r['num_seeds']} | {r['vmap_seeds']} | {r['compile_s']:.1f} | "
          f"{r['step_s']:.2f} | "
          f"{r['step_s'] / r['num_seeds']:.2f} | {ratio} | {r['images_per_s']:.1f} | "
          f"{r['peak_rss_gb']:.2f} |")
  with open("/proc/cpuinfo") as f:
    cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
  write_results(args.out, "many_seeds", rows, cpu=cpu, batch=64, space="nas_bench_201")


if __name__ == "__main__":
  main()
