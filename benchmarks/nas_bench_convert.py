"""Times `darts_jax.nas_bench.convert` on full-size generated NATS-Bench topology files.

    python benchmarks/nas_bench_convert.py [--cells 15625] [--out benchmarks/results/nas_bench_convert.json]

Writes the benchmark's two topology layouts with all 15,625 cells (tests/nas_bench_files.py:
the official record layout, 2 budgets x 4 datasets x 1-2 seeds, the per-epoch curves), then
times the conversion of each and the shipped table's load and a lookup.
"""

import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from darts_jax import nas_bench  # noqa: E402
from darts_jax.nas_bench import convert, table as table_lib  # noqa: E402
from tests import nas_bench_files as files  # noqa: E402


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--cells", type=int, default=table_lib.NUM_CELLS)
  parser.add_argument("--out", default="benchmarks/results/nas_bench_convert.json")
  args = parser.parse_args()
  result = {"cells": args.cells, "cpu": platform.processor() or platform.machine()}
  with open("/proc/cpuinfo") as f:
    result["cpu"] = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")),
                         result["cpu"])
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    start = time.perf_counter()
    folder = tmp / "NATS-tss-v1_0-3ffb9-simple"
    files.write_nats_folder(folder, args.cells)
    result["write_folder_s"] = time.perf_counter() - start
    result["folder_mb"] = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
    start = time.perf_counter()
    table = convert.from_source(str(folder))
    result["convert_folder_s"] = time.perf_counter() - start
    table.save(str(tmp / "t.npz"))
    result["table_kb"] = (tmp / "t.npz").stat().st_size / 1024
    start = time.perf_counter()
    loaded = nas_bench.load(str(tmp / "t.npz"))
    result["load_table_ms"] = (time.perf_counter() - start) * 1e3
    assert len(loaded.columns) == 12
  start = time.perf_counter()
  shipped = nas_bench.table._read(nas_bench.table.SHIPPED)
  result["load_shipped_ms"] = (time.perf_counter() - start) * 1e3
  cell = str(shipped.best(dataset="cifar10", split="test", epochs=200))
  start = time.perf_counter()
  for _ in range(1000):
    shipped.accuracy(cell, dataset="cifar10", split="test", epochs=200)
  result["lookup_us"] = (time.perf_counter() - start) * 1e3
  start = time.perf_counter()
  for _ in range(100):
    shipped.rank(cell, dataset="cifar10", split="test", epochs=200)
  result["rank_us"] = (time.perf_counter() - start) * 1e4
  print(json.dumps(result, indent=1))
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
