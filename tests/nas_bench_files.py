"""Writes small NAS-Bench-201 / NATS-Bench topology files in the benchmark's own layout.

The records are what the official files hold (NATS-Bench api_utils.py ArchResults /
ResultsCount state dicts; seen in the files of tests/data/nats_tss_sample): `{"12" | "200":
{"arch_index", "arch_str", "all_results": {(dataset, seed): run}, "dataset_seed",
"clear_net_done"}}`, a run's accuracies under `eval_acc1es["<eval>@<epoch>"]`, numpy scalars
and OrderedDicts inside; at 200 epochs some evals exist only at the last epoch, as in the real
files. The accuracies are a function of the cell, so a test can say what each must be.
"""

from __future__ import annotations

import bz2
import collections
import io
import pickle
import zipfile

import numpy as np

from darts_jax.nas_bench import table as table_lib

EVAL_NAMES = {"cifar10-valid": ("x-valid", "ori-test"), "cifar10": ("ori-test",),
              "cifar100": ("ori-test", "x-valid", "x-test"),
              "ImageNet16-120": ("ori-test", "x-valid", "x-test")}
SEEDS = {"cifar10-valid": [777, 888], "cifar10": [777], "cifar100": [777, 999],
         "ImageNet16-120": [888]}


def accuracy(code: int, dataset: str, name: str, epochs: int, seed: int) -> float:
  """The generated accuracy of one run (seeds differ, so the mean over seeds is tested)."""
  base = {"cifar10-valid": 80, "cifar10": 85, "cifar100": 60, "ImageNet16-120": 30}[dataset]
  return (base + (code % 97) / 10 + {"x-valid": 0.1, "x-test": 0.2, "ori-test": 0.3}[name]
          + (epochs == 200) * 5 + (seed % 10) / 100)


def expected(code: int) -> dict:
  """`{Column: value}` the converter must give for `code` (the API's mean over seeds)."""
  from darts_jax.nas_bench.convert import EVALS

  out = {}
  for (dataset, name), (ours, split) in EVALS.items():
    for epochs in (12, 200):
      runs = [accuracy(code, dataset, name, epochs, s) for s in SEEDS[dataset]]
      out[table_lib.Column(ours, split, epochs)] = float(np.mean(runs))
  return out


def _run(code, dataset, epochs, seed, cell):
  last = epochs - 1
  acc, loss = {}, {}
  for name in EVAL_NAMES[dataset]:
    # At 200 epochs the real files hold the old runs' curve for one eval and only the last
    # epoch of the others.
    curve = epochs == 12 or name == EVAL_NAMES[dataset][0]
    for e in (range(epochs) if curve else [last]):
      acc[f"{name}@{e}"] = accuracy(code, dataset, name, epochs, seed) - (last - e) * 0.01
      loss[f"{name}@{e}"] = 1.0
  return {"name": dataset, "net_state_dict": None,
          "train_acc1es": {e: 50.0 + e * 0.1 for e in range(epochs)},
          "train_acc5es": None, "train_losses": {e: 1.0 for e in range(epochs)},
          "train_times": collections.OrderedDict((e, 10.0) for e in range(epochs)),
          "arch_config": {"channel": 16, "num_cells": 5, "arch_str": cell, "class_num": 10},
          "params": np.float64(0.1), "flop": 15.6, "seed": f"{seed:04d}", "epochs": epochs,
          "latency": [np.float64(0.01)], "eval_names": list(EVAL_NAMES[dataset]),
          "eval_acc1es": acc, "eval_losses": loss, "eval_times": dict.fromkeys(acc, 0.5)}


def record(index: int, code: int, epochs: int) -> dict:
  """One cell's ArchResults state dict at one budget."""
  cell = str(table_lib.cell_of_code(code))
  return {"arch_index": index, "arch_str": cell, "clear_net_done": True,
          "dataset_seed": {d: list(s) for d, s in SEEDS.items()},
          "all_results": {(d, s): _run(code, d, epochs, s, cell)
                          for d, seeds in SEEDS.items() for s in seeds}}


def cells_and_codes(n: int, seed: int = 0):
  """n distinct cells in a shuffled order (the API's order is not the code order)."""
  codes = np.random.default_rng(seed).permutation(table_lib.NUM_CELLS)[:n]
  return [str(table_lib.cell_of_code(int(c))) for c in codes], [int(c) for c in codes]


def _pbz2(path, obj):
  with bz2.open(path, "wb") as f:
    pickle.dump(obj, f, protocol=4)


def write_nats_folder(folder, n: int):
  """`NATS-tss-v1_0-3ffb9-simple/`: meta.pickle.pbz2 and NNNNNN.pickle.pbz2 per cell."""
  cells, codes = cells_and_codes(n)
  folder.mkdir(parents=True, exist_ok=True)
  _pbz2(folder / "meta.pickle.pbz2", {"meta_archs": cells, "total_archs": n,
                                      "arch2infos": None, "evaluated_indexes": set()})
  for i, code in enumerate(codes):
    _pbz2(folder / f"{i:06d}.pickle.pbz2", collections.OrderedDict(
        [("12", record(i, code, 12)), ("200", record(i, code, 200))]))
  return codes


def benchmark_object(n: int, budgets=("12", "200")):
  cells, codes = cells_and_codes(n)
  infos = {i: {b: record(i, c, int(b) if b.isdigit() else {"less": 12, "full": 200}[b])
               for b in budgets} for i, c in enumerate(codes)}
  return {"meta_archs": cells, "total_archs": n, "arch2infos": infos,
          "evaluated_indexes": set(range(n))}, codes


def write_nats_file(path, n: int):
  """The single-file form, `NATS-tss-v1_0-3ffb9.pickle.pbz2`."""
  obj, codes = benchmark_object(n)
  _pbz2(path, obj)
  return codes


def torch_legacy_bytes(obj) -> bytes:
  """What torch.save wrote before torch 1.6 (NAS-Bench-201's .pth): magic number, protocol,
  system info, the object, the storage keys; each a pickle."""
  f = io.BytesIO()
  for part in (0x1950a86a20f9469cfc6c, 1001,
               {"protocol_version": 1001, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}):
    pickle.dump(part, f, protocol=2)
  pickle.dump(obj, f, protocol=2)
  pickle.dump([], f, protocol=2)
  return f.getvalue()


def write_pth(path, n: int, zip_format: bool = False):
  """A NAS-Bench-201 .pth (`arch2infos[i] = {"less": 12 epochs, "full": 200}`)."""
  obj, codes = benchmark_object(n, budgets=("less", "full"))
  obj["evaluated_indexes"] = sorted(obj["evaluated_indexes"])
  if zip_format:  # torch >= 1.6: a zip of archive/data.pkl and the storages
    with zipfile.ZipFile(path, "w") as z:
      z.writestr("archive/data.pkl", pickle.dumps(obj, protocol=2))
      z.writestr("archive/version", "3\n")
  else:
    path.write_bytes(torch_legacy_bytes(obj))
  return codes
