"""darts_jax's steps and the official release's, timed back to back on this machine.

    python benchmarks/side_by_side.py --official OFFICIAL_DARTS_DIR --torch-python VENV/bin/python
    python benchmarks/side_by_side.py ... --cases search:1:16,search:2:16 --steps 2

Speed differs from CPU to CPU (an AVX2 and an AVX-512 machine rank the two implementations
differently), so a claim against the official release holds only as a ratio measured in one
run on one machine: this driver runs each case twice, once as the official release
(`benchmarks/official_step.py`, under an interpreter with PyTorch) and once as darts_jax (the
`--one` measurement of `search_step.py`, `eval_step.py` or `rnn_step.py`), one after the other,
each in its own process, at the same size, and writes the ratios with the CPU's model and
vector extensions to benchmarks/results/side_by_side.json and a markdown table.

Cases (`kind:order:batch`):
  search:1:B  CNN search step, first order on both sides, batch B (C=16, 8 cells, 32x32).
  search:2:B  second order: the release's finite difference vs darts_jax's exact hypergradient
              (the default); `search:fd:B` times darts_jax's finite difference instead.
  eval:0:96   CIFAR-10 evaluation training step, DARTS_V2, C=36, 20 cells, auxiliary head.
  rnn:1:256, rnn:2:256  recurrent search step on PTB's sizes (batch 256, BPTT 35, 300 units).

The official side needs a checkout of github.com/quark0/darts (outside this repository) and a
PyTorch interpreter; without either, the driver says so in one line and exits 0.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks.common import write_results  # noqa: E402

DEFAULT_CASES = ("search:1:16,search:2:16,search:1:64,search:2:64,eval:0:96,"
                 "rnn:1:256,rnn:2:256")


def cpu_description() -> dict:
  """The CPU's model name and the vector extensions that decide which kernels are fast."""
  model, flags = "unknown", set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name") and model == "unknown":
          model = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
          flags = set(line.split(":", 1)[1].split())
  except OSError:
    pass
  wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
            "avx_vnni", "amx_tile", "amx_bf16")
  vector = [f for f in wanted if f in flags]
  return {"cpu_model": model, "vector_extensions": vector,
          "vector_width": "AVX-512" if "avx512f" in flags else (
              "AVX2" if "avx2" in flags else "other")}


def _busy_fraction(seconds: float) -> float:
  """Share of all CPUs busy over `seconds` (from /proc/stat): the machine must be quiet."""
  def ticks():
    with open("/proc/stat") as f:
      v = [int(x) for x in f.readline().split()[1:9]]
    return sum(v) - v[3] - v[4], sum(v)
  try:
    b0, t0 = ticks()
    time.sleep(seconds)
    b1, t1 = ticks()
  except OSError:
    return float("nan")
  return (b1 - b0) / max(1, t1 - t0)


def _run(cmd, env=None) -> dict:
  start = time.perf_counter()
  out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
  lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
  if out.returncode or not lines:
    return {"failed": True, "returncode": out.returncode, "stderr_tail": out.stderr[-1500:]}
  result = json.loads(lines[-1][len("RESULT "):])
  result["wall_s"] = time.perf_counter() - start
  return result


def official_cmd(args, kind, order, batch):
  part = {"search": "cnn_search", "eval": "eval_train", "rnn": "rnn_search"}[kind]
  order = 1 if order in ("0", "1") else 2
  return [args.torch_python, os.path.join(ROOT, "benchmarks", "official_step.py"),
          "--official", args.official, "--part", part, "--batch", str(batch),
          "--order", str(order), "--warmup", "1", "--steps", str(args.steps)]


def darts_jax_cmd(args, kind, order, batch, cache_dir):
  py, bench = sys.executable, lambda name: os.path.join(ROOT, "benchmarks", name)
  # The XLA CPU flag as each trainer's config sets it, unless --fast-kernels says otherwise.
  from configs import cifar_eval, cifar_search
  config = (cifar_search if kind == "search" else cifar_eval).get_config()
  fast = str(int(config.xla_cpu_fast_kernels if args.fast_kernels < 0 else args.fast_kernels))
  if kind == "search":
    method = {"1": "first_order", "2": "exact", "fd": "finite_difference"}[order]
    return [py, bench("search_step.py"), "--one", "--method", method, "--batch", str(batch),
            "--steps", str(args.steps), "--cache-dir", cache_dir, "--impl", args.impl,
            "--edge-loop", args.edge_loop, "--fast-kernels", fast]
  if kind == "eval":
    return [py, bench("eval_step.py"), "--one", "--network", "cifar", "--batch", str(batch),
            "--steps", str(args.steps), "--fast-kernels", fast]
  method = {"1": "first_order", "2": "exact", "fd": "finite_difference"}[order]
  return [py, bench("rnn_step.py"), "--one", f"search:{method}", "--steps", str(args.steps)]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--official", default=os.environ.get("DARTS_ROOT", ""),
                      help="checkout of github.com/quark0/darts (default: $DARTS_ROOT)")
  parser.add_argument("--torch-python", default=os.environ.get("TORCH_PYTHON", ""),
                      help="a Python with PyTorch (default: $TORCH_PYTHON)")
  parser.add_argument("--cases", default=DEFAULT_CASES)
  parser.add_argument("--steps", type=int, default=3, help="timed steps per side (median)")
  parser.add_argument("--impl", default="", help="darts_jax's supernet depthwise (default: "
                      "by backend); see search_step.py")
  parser.add_argument("--edge-loop", default="")
  parser.add_argument("--fast-kernels", type=int, default=-1, help="darts_jax's XLA CPU "
                      "flag: 1 on, 0 off, -1 as configs/cifar_search.py and cifar_eval.py")
  parser.add_argument("--quiet", type=float, default=0.15,
                      help="wait (up to 10 min) until other processes use less than this "
                      "share of the CPUs before each measurement")
  parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                    "side_by_side.json"))
  args = parser.parse_args()
  release = os.path.join(args.official, "cnn", "model_search.py")
  if not args.official or not os.path.isfile(release):
    print(f"side_by_side: skipped, no checkout of the official release at {args.official!r} "
          "(pass --official DIR with github.com/quark0/darts)")
    return
  try:
    torch_ok = bool(args.torch_python) and subprocess.run(
        [args.torch_python, "-c", "import torch"], capture_output=True).returncode == 0
  except OSError:  # no such interpreter
    torch_ok = False
  if not torch_ok:
    print(f"side_by_side: skipped, no PyTorch interpreter at {args.torch_python!r} "
          "(pass --torch-python VENV/bin/python, a venv with torch==2.13.0)")
    return

  import tempfile
  rows = []
  for case in args.cases.split(","):
    kind, order, batch = case.split(":")
    row = {"case": case, "kind": kind, "order": order, "batch": int(batch)}
    with tempfile.TemporaryDirectory() as cache:
      for side, cmd in (("official", official_cmd(args, kind, order, batch)),
                        ("darts_jax", darts_jax_cmd(args, kind, order, batch, cache))):
        waited = time.perf_counter()
        busy = _busy_fraction(2.0)
        while busy > args.quiet and time.perf_counter() - waited < 600:
          busy = _busy_fraction(5.0)
        row[side] = {**_run(cmd), "busy_before": round(busy, 3)}
      if kind == "search" and not row["darts_jax"].get("failed"):
        # The warm start: the same program again, from the persistent compilation cache.
        warm = _run(_warm_cmd(darts_jax_cmd(args, kind, order, batch, cache)))
        if not warm.get("failed"):
          row["darts_jax"]["warm_start_s"] = warm["lower_s"] + warm["compile_s"]
    ok = not row["official"].get("failed") and not row["darts_jax"].get("failed")
    if ok:
      row["ratio"] = row["darts_jax"]["step_s"] / row["official"]["step_s"]
      row["memory_ratio"] = row["darts_jax"]["peak_rss_gb"] / row["official"]["peak_rss_gb"]
    print(json.dumps(row), flush=True)
    rows.append(row)
    write_results(args.out, "side_by_side", rows, **cpu_description(),
                  torch=rows[0]["official"].get("torch"))

  print(table(rows, cpu_description()))


def _warm_cmd(cmd):
  """The darts_jax search command again with no timed steps: lowering + cache read only."""
  cmd = list(cmd)
  cmd[cmd.index("--steps") + 1] = "0"
  return cmd


NAMES = {("search", "1"): "search, first order", ("search", "2"): "search, second order",
         ("search", "fd"): "search, finite difference (both)",
         ("eval", "0"): "CIFAR-10 evaluation step", ("rnn", "1"): "recurrent search, first order",
         ("rnn", "2"): "recurrent search, second order"}


def table(rows, cpu) -> str:
  """The markdown table for benchmarks/README.md."""
  lines = [f"CPU: {cpu['cpu_model']} ({', '.join(cpu['vector_extensions'])})", "",
           "| step | batch | official (s) | darts_jax (s) | ratio | darts_jax compile (s) | "
           "warm start (s) | peak RSS official / darts_jax (GB) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for r in rows:
    name = NAMES.get((r["kind"], r["order"]), r["case"])
    o, d = r["official"], r["darts_jax"]
    if "ratio" not in r:
      side = "official" if o.get("failed") else "darts_jax"
      lines.append(f"| {name} | {r['batch']} | {side} failed (return code "
                   f"{r[side]['returncode']}) | | | | | |")
      continue
    warm = f"{d['warm_start_s']:.1f}" if "warm_start_s" in d else ""
    lines.append(f"| {name} | {r['batch']} | {o['step_s']:.2f} | {d['step_s']:.2f} | "
                 f"**{r['ratio']:.2f}x** | {d['compile_s']:.1f} | {warm} | "
                 f"{o['peak_rss_gb']:.2f} / {d['peak_rss_gb']:.2f} |")
  return "\n".join(lines)


if __name__ == "__main__":
  main()
