"""Writes a darts_jax NAS-Bench-201 table (`table.Table`, `.npz`) from the benchmark's files.

    python -m darts_jax.nas_bench.convert NATS-tss-v1_0-3ffb9-simple/ --out nb201.npz
    python -m darts_jax.nas_bench.convert NAS-Bench-201-v1_1-096897.pth --out nb201.npz
    python -m darts_jax.nas_bench.convert table.csv --column cifar10_test=cifar10.test.200 \\
        --out nb201.npz

A source is one of:

- a NATS-Bench topology folder (`NATS-tss-v1_0-3ffb9-simple/`: `meta.pickle.pbz2` and one
  `NNNNNN.pickle.pbz2` per cell) or its single-file form (`*.pickle.pbz2`);
- a NAS-Bench-201 v1.0 / v1.1 `.pth` (read without torch: these files hold only Python
  containers and numbers);
- a CSV with a `cellstr` column and accuracy columns named `dataset.split.epochs` (or renamed
  with `--column NAME=dataset.split.epochs`), optionally `api_index`.

Every pickle is read by `darts_jax.data.safe_pickle`, which refuses anything but plain
containers and numbers; the table it writes is pickle-free, so a query never unpickles.
Several sources are merged column by column (a later source wins a column both have).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time

import numpy as np

from darts_jax.data import safe_pickle
from darts_jax.errors import DataError, GenotypeError, UserError
from darts_jax.nas_bench import table as table_lib


def from_csv(path: str, rename: dict | None = None) -> table_lib.Table:
  """A table from a CSV: `cellstr`, accuracy columns `dataset.split.epochs` (or named in
  `rename`, `{csv name: "dataset.split.epochs"}`), optionally `api_index`."""
  rename = dict(rename or {})
  try:
    with open(path, newline="") as f:
      reader = csv.DictReader(f)
      header = reader.fieldnames or []
      if "cellstr" not in header:
        raise DataError(f"{path!r} has no 'cellstr' column (its header: {header}).")
      names = {}
      for name in header:
        if name in ("cellstr", "api_index"):
          continue
        key = rename.get(name, name)
        try:
          names[name] = table_lib.Column.from_key(key)
        except ValueError:
          raise DataError(f"Column {name!r} of {path!r} is not named dataset.split.epochs; "
                          f"rename it with --column {name}=cifar10.test.200 (say).") from None
      rows, index = [], {}
      for line, row in enumerate(reader, start=2):
        try:
          rows.append((row["cellstr"], {c: float(row[n]) for n, c in names.items()}))
          if row.get("api_index") not in (None, ""):
            index[row["cellstr"]] = int(row["api_index"])
        except (ValueError, TypeError, GenotypeError) as e:
          raise DataError(f"{path!r} line {line}: {e}") from None
  except FileNotFoundError:
    raise DataError(f"No file {path!r}.") from None
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise DataError(f"{path!r} is not a readable CSV ({type(e).__name__}: {e}).") from None
  return table_lib.from_rows(rows, index, source=os.path.basename(path))


def _csv_header(path: str) -> list:
  with open(path, newline="") as f:
    return next(csv.reader(f), [])


# The benchmark's training runs -> this table's columns: (API dataset, eval name) -> (dataset,
# split). "cifar10-valid" trains on 25k and evaluates on the other 25k ("x-valid"); "cifar10"
# trains on 50k, evaluated on the test set; cifar100 and ImageNet16-120 evaluate on the two
# halves of their test set ("x-valid", "x-test"). As the API's get_more_info (NATS-Bench
# api_topology.py; NAS-Bench-201 api_201.py), at the run's last epoch, mean over its seeds.
EVALS = {
    ("cifar10-valid", "x-valid"): ("cifar10", "valid"),
    ("cifar10", "ori-test"): ("cifar10", "test"),
    ("cifar100", "x-valid"): ("cifar100", "valid"),
    ("cifar100", "x-test"): ("cifar100", "test"),
    ("ImageNet16-120", "x-valid"): ("ImageNet16-120", "valid"),
    ("ImageNet16-120", "x-test"): ("ImageNet16-120", "test"),
}
# The budgets' names: NATS-Bench's "12" / "200", NAS-Bench-201 .pth's "less" / "full".
BUDGETS = {"12": 12, "200": 200, "less": 12, "full": 200}


def arch_rows(budgets) -> dict:
  """`{Column: accuracy}` of one cell from its per-budget ArchResults records.

  Args:
    budgets: `{"12" | "200" | "less" | "full": record}`, each record the benchmark's
      ArchResults as a plain dict: `dataset_seed` `{dataset: [seed]}` and `all_results`
      `{(dataset, seed): {"epochs": E, "eval_acc1es": {"x-valid@{E-1}": accuracy, ...}}}`.
  """
  values = {}
  for budget, record in budgets.items():
    if budget not in BUDGETS:
      raise DataError(f"a record has the budget {budget!r}, not one of "
                      f"{', '.join(BUDGETS)}: is it a NAS-Bench-201 / NATS-Bench topology "
                      "file?")
    epochs = BUDGETS[budget]
    for dataset, seeds in record["dataset_seed"].items():
      for (api_dataset, name), (ours, split) in EVALS.items():
        if api_dataset != dataset:
          continue
        found = []
        for seed in seeds:
          run = record["all_results"][(dataset, seed)]
          accuracy = run["eval_acc1es"].get(f"{name}@{run['epochs'] - 1}")
          if accuracy is not None:
            found.append(float(accuracy))
        if found:
          values[table_lib.Column(ours, split, epochs)] = float(np.mean(found))
  return values


def _archs(obj, path):
  """`{index: per-budget records}` and the cell strings of a benchmark object."""
  try:
    return obj["arch2infos"], obj["meta_archs"]
  except (TypeError, KeyError):
    raise DataError(f"{path!r} holds no 'arch2infos' and 'meta_archs': it is not a "
                    "NAS-Bench-201 .pth or NATS-Bench topology file.") from None


def _rows(infos, cells, path, rows, index) -> None:
  """Appends `(cell string, {Column: accuracy})` of every record in `infos` to `rows`."""
  try:
    for i, budgets in infos.items():
      rows.append((cells[i], arch_rows(budgets)))
      index[cells[i]] = int(i)
  except (KeyError, TypeError, ValueError, IndexError, AttributeError, GenotypeError) as e:
    raise DataError(f"{path!r} does not have the layout of the benchmark's records "
                    f"({type(e).__name__}: {e}).") from None


def from_benchmark_file(path: str) -> table_lib.Table:
  """A single-file benchmark: NATS-Bench's `NATS-tss-v1_0-3ffb9.pickle.pbz2` or NAS-Bench-201
  v1.0 / v1.1 `.pth` (read without torch; v1.0 has 12-epoch figures for cifar10-valid only);
  both are `{"meta_archs": [cell], "arch2infos": {index: budgets}}`."""
  infos, cells = _archs(safe_pickle.load_file(path), path)
  if not infos:
    raise DataError(f"{path!r} holds no results: it is the meta file of a "
                    "NATS-tss-...-simple folder; convert the folder.")
  rows, index = [], {}
  _rows(infos, cells, path, rows, index)
  return table_lib.from_rows(rows, index, source=os.path.basename(path))


def from_nats_folder(path: str) -> table_lib.Table:
  """A NATS-Bench topology folder (`NATS-tss-v1_0-3ffb9-simple/`): `meta.pickle.pbz2` and
  one `NNNNNN.pickle.pbz2` per cell, read one at a time (memory holds one record)."""
  meta = os.path.join(path, "meta.pickle.pbz2")
  if not os.path.isfile(meta):
    raise DataError(f"{path!r} has no meta.pickle.pbz2: it is not a NATS-Bench topology "
                    "folder (NATS-tss-v1_0-3ffb9-simple/).")
  _, cells = _archs(safe_pickle.load_file(meta), meta)
  names = sorted(n for n in os.listdir(path)
                 if n.endswith(".pickle.pbz2") and n.split(".")[0].isdigit())
  if not names:
    raise DataError(f"{path!r} has a meta.pickle.pbz2 but no NNNNNN.pickle.pbz2 per cell.")
  rows, index = [], {}
  for name in names:
    file = os.path.join(path, name)
    _rows({int(name.split(".")[0]): safe_pickle.load_file(file)}, cells, file, rows, index)
  return table_lib.from_rows(rows, index, source=os.path.basename(os.path.normpath(path)))


def from_source(path: str, rename: dict | None = None) -> table_lib.Table:
  """The table of one source file or folder (see the module docstring)."""
  if os.path.isdir(path):
    return from_nats_folder(path)
  if path.endswith(".csv"):
    return from_csv(path, rename)
  if path.endswith((".pbz2", ".pickle", ".pth")):
    return from_benchmark_file(path)
  raise DataError(f"{path!r} is none of a NATS-Bench topology folder, a .pickle.pbz2, a "
                  "NAS-Bench-201 .pth or a .csv.")


def merge(tables) -> table_lib.Table:
  """One table with every column of `tables` (a later table wins a column both have)."""
  columns, index, sources = {}, np.full(table_lib.NUM_CELLS, -1, np.int64), []
  for t in tables:
    columns.update(t.columns)
    index = np.where(t.api_index >= 0, t.api_index, index)
    sources.append(t.source)
  return table_lib.Table(columns, index, "; ".join(s for s in sources if s))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m darts_jax.nas_bench.convert",
      description="Write a darts_jax NAS-Bench-201 table (.npz) from the benchmark's files.")
  parser.add_argument("sources", nargs="+", help="NATS-Bench topology folder or .pickle.pbz2, "
                      "NAS-Bench-201 .pth, or .csv")
  parser.add_argument("--out", required=True, help="the table to write (.npz)")
  parser.add_argument("--column", action="append", default=[], metavar="NAME=KEY",
                      help="a CSV column's name as dataset.split.epochs")
  parser.add_argument("--source", default=None, help="the provenance line to store")
  args = parser.parse_args(argv)
  try:
    rename = {}
    for item in args.column:
      name, sep, key = item.partition("=")
      if not sep:
        raise DataError(f"--column {item!r} must be NAME=dataset.split.epochs.")
      rename[name] = key
    if not args.out.endswith(".npz"):
      raise DataError(f"--out {args.out!r} must end in .npz.")
    start = time.perf_counter()
    tables = [from_source(p, rename) for p in args.sources]
    unused = set(rename) - {n for p in args.sources if p.endswith(".csv")
                            for n in _csv_header(p)}
    if unused:
      raise DataError(f"--column names {', '.join(sorted(unused))}, which no CSV source has.")
    table = merge(tables)
    if args.source is not None:
      table.source = args.source
    table.save(args.out)
  except UserError as e:
    print(f"{type(e).__name__}: {e}", file=sys.stderr)
    return 1
  known = {c.key(): int(np.sum(~np.isnan(v))) for c, v in sorted(table.columns.items())}
  print(f"wrote {args.out} in {time.perf_counter() - start:.1f}s: "
        + ", ".join(f"{k} ({n} cells)" for k, n in known.items()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
