"""NAS-Bench-201's accuracy tables, keyed by the cell, read without the benchmark's API.

A `Table` holds, for every one of the 5^6 = 15,625 cells, the benchmark's accuracy figures
(mean over the benchmark's training seeds) in columns named by `(dataset, split, epochs)`:

    from darts_jax import nas_bench
    table = nas_bench.load()                      # the table shipped with the package
    table.accuracy("|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|"
                   "skip_connect~1|skip_connect~2|", dataset="cifar10", split="test",
                   epochs=200)                    # 54.2967
    table.rank(cell, dataset="cifar10", split="test", epochs=200)   # 1 is the best cell

Rows are in the order of the cell's *code*, not the benchmark API's index: the code of a cell
reads its 6 ops (`OPS` indices, edges in `EDGES` order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2) as
the digits of a base-5 number, the first edge most significant. The file is a pickle-free
`.npz` (`numpy.load(allow_pickle=False)`): one float64 array of 15,625 per column,
NaN where the source had no figure, under the key `dataset.split.epochs`, plus `api_index`
(the benchmark API's index of each cell, -1 if unknown) and `source` (a line of provenance).
`darts_jax.nas_bench.convert` writes one from the benchmark's own files.

The benchmark's protocol, which the column names keep explicit (Dong & Yang, NAS-Bench-201,
ICLR 2020, section 2.2; the API's `get_more_info`):

- `("cifar10", "valid", e)`: the API's "cifar10-valid": trained on 25k of CIFAR-10's training
  images, evaluated on the other 25k. `("cifar10", "test", e)`: the API's "cifar10": trained
  on all 50k, evaluated on the 10k test images. The two are different training runs.
- `("cifar100" | "ImageNet16-120", "valid" | "test", e)`: trained on the training set; "valid"
  and "test" are the two halves of the original test (ImageNet: validation) set, so neither
  is held out from the other in any stronger sense.
- `epochs` is the training budget, 200 (the figures papers quote) or 12 (the API's default
  `hp="12"`, a cheap proxy that ranks cells differently); never compare across budgets.
- Every figure is the mean over the benchmark's seeds (1 to 3 per cell), as the API gives
  with `is_random=False`.
"""

from __future__ import annotations

import functools
import os
from typing import Iterable, NamedTuple

import numpy as np

from darts_jax.errors import DataError, GenotypeError
from darts_jax.spaces import nas_bench_201

NUM_CELLS = len(nas_bench_201.OPS) ** len(nas_bench_201.EDGES)  # 15,625
SHIPPED = os.path.join(os.path.dirname(__file__), "nas_bench_201.npz")
DATASETS = ("cifar10", "cifar100", "ImageNet16-120")


class Column(NamedTuple):
  """A column's name: what was trained, on what evaluated, for how many epochs."""

  dataset: str
  split: str
  epochs: int

  def key(self) -> str:
    return f"{self.dataset}.{self.split}.{self.epochs}"

  @classmethod
  def from_key(cls, key: str) -> "Column":
    dataset, split, epochs = key.rsplit(".", 2)
    return cls(dataset, split, int(epochs))


def cell_code(cell) -> int:
  """The base-5 code of a cell: a `Genotype201`, its string form, a sequence of 6 op names or
  a code (returned as is, if in range). Raises `GenotypeError` for anything else."""
  if isinstance(cell, (int, np.integer)) and not isinstance(cell, bool):
    if not 0 <= int(cell) < NUM_CELLS:
      raise GenotypeError(f"NAS-Bench-201 cell code {cell} is not in 0..{NUM_CELLS - 1}.")
    return int(cell)
  if isinstance(cell, str):
    cell = nas_bench_201.Genotype201.from_string(cell)
  try:
    ops = cell.ops if isinstance(cell, nas_bench_201.Genotype201) else tuple(cell)
  except TypeError:
    raise GenotypeError(f"{cell!r} is not a NAS-Bench-201 cell (a string, a Genotype201, 6 "
                        "op names or a code).") from None
  if len(ops) != len(nas_bench_201.EDGES) or any(op not in nas_bench_201.OPS for op in ops):
    raise GenotypeError(f"A NAS-Bench-201 cell is {len(nas_bench_201.EDGES)} ops from "
                        f"{', '.join(nas_bench_201.OPS)}; got {ops!r}.")
  code = 0
  for op in ops:
    code = code * len(nas_bench_201.OPS) + nas_bench_201.OPS.index(op)
  return code


def cell_of_code(code: int) -> nas_bench_201.Genotype201:
  """The cell whose code is `code` (the inverse of `cell_code`)."""
  code, ops = cell_code(code), []
  for _ in nas_bench_201.EDGES:
    code, digit = divmod(code, len(nas_bench_201.OPS))
    ops.append(nas_bench_201.OPS[digit])
  return nas_bench_201.Genotype201(tuple(reversed(ops)))


class Table:
  """Accuracies (%) of every NAS-Bench-201 cell, one array of 15,625 per `Column`.

  Args:
    columns: `{Column: (15625,) float array}`, rows in cell-code order, NaN where unknown.
    api_index: (15625,) ints, the benchmark API's index of each cell (-1 if unknown).
    source: one line saying where the figures come from.
  """

  def __init__(self, columns: dict, api_index=None, source: str = ""):
    self.columns = {Column(*c): np.asarray(v, np.float64) for c, v in columns.items()}
    for column, values in self.columns.items():
      if values.shape != (NUM_CELLS,):
        raise DataError(f"NAS-Bench-201 column {column.key()} has shape {values.shape}; "
                        f"expected ({NUM_CELLS},).")
    self.api_index = (np.full(NUM_CELLS, -1, np.int64) if api_index is None
                      else np.asarray(api_index, np.int64))
    self.source = source

  def __repr__(self):
    return (f"Table({len(self.columns)} columns: "
            f"{', '.join(c.key() for c in sorted(self.columns))})")

  def column(self, dataset: str, split: str, epochs: int) -> np.ndarray:
    """The (15625,) accuracies of one column; a one-line DataError naming those there are."""
    column = Column(dataset, split, int(epochs))
    if column not in self.columns:
      have = ", ".join(f"(dataset={c.dataset!r}, split={c.split!r}, epochs={c.epochs})"
                       for c in sorted(self.columns))
      raise DataError(f"This NAS-Bench-201 table has no dataset={dataset!r}, split={split!r}, "
                      f"epochs={epochs}; it has {have}. The full benchmark files give every "
                      "column: python -m darts_jax.nas_bench.convert --help.")
    return self.columns[column]

  def accuracy(self, cell, *, dataset: str, split: str, epochs: int) -> float:
    """The benchmark's accuracy (%) of `cell` (string, `Genotype201`, ops or code)."""
    return float(self.column(dataset, split, epochs)[cell_code(cell)])

  def rank(self, cell, *, dataset: str, split: str, epochs: int) -> int:
    """1 + the number of cells with a strictly higher accuracy in that column (ties share a
    rank; cells without a figure are not counted)."""
    values = self.column(dataset, split, epochs)
    value = values[cell_code(cell)]
    if np.isnan(value):
      raise DataError(f"This NAS-Bench-201 table has no {dataset}/{split}/{epochs} figure "
                      f"for {cell_of_code(cell_code(cell))}.")
    return 1 + int(np.sum(values > value))

  def query(self, cell) -> dict:
    """Every column's accuracy of `cell`, `{"dataset.split.epochs": float}` (NaN skipped)."""
    code = cell_code(cell)
    return {c.key(): float(v[code]) for c, v in sorted(self.columns.items())
            if not np.isnan(v[code])}

  def report(self, cell, dataset: str | None = None) -> tuple[dict, str]:
    """What a search logs for its derived cell.

    Args:
      cell: as `accuracy` takes it.
      dataset: the dataset searched on; its columns at its largest budget join the line.
    Returns:
      `{"nas_bench_201/<column>": accuracy, "nas_bench_201/<column>/rank": rank}` for every
      column, and a line with the columns of the largest budget and, when `dataset` has none
      there, that dataset's at its largest (`NAS-Bench-201 at 200 epochs: cifar10 test 54.30
      (rank 15230)`, then `; at 12 epochs: cifar100 test ...`).
    """
    scalars = {}
    for column, value in sorted(self.query(cell).items()):
      c = Column.from_key(column)
      scalars[f"nas_bench_201/{column}"] = value
      scalars[f"nas_bench_201/{column}/rank"] = self.rank(cell, dataset=c.dataset,
                                                          split=c.split, epochs=c.epochs)
    describe = lambda c: (f"{c.dataset} {c.split} {scalars['nas_bench_201/' + c.key()]:.2f} "
                          f"(rank {scalars['nas_bench_201/' + c.key() + '/rank']})")
    return scalars, "NAS-Bench-201 " + self._line(describe, dataset)

  def summarise(self, cells, dataset: str | None = None) -> tuple[dict, str]:
    """The mean and standard deviation over `cells` (several seeds' searched cells).

    Returns:
      `{"nas_bench_201/<column>/mean": ..., ".../std": ...}` for every column, the standard
      deviation over the cells (numpy's, ddof=0), and a line with the columns `report`'s line
      shows (`NAS-Bench-201, 4 cells, at 200 epochs: cifar10 test 88.12 +- 3.40`).
    """
    scalars = {}
    for column in self.columns:
      values = np.array([self.accuracy(cell, dataset=column.dataset, split=column.split,
                                       epochs=column.epochs) for cell in cells])
      scalars[f"nas_bench_201/{column.key()}/mean"] = float(values.mean())
      scalars[f"nas_bench_201/{column.key()}/std"] = float(values.std())
    describe = lambda c: (f"{c.dataset} {c.split} {scalars['nas_bench_201/' + c.key() + '/mean']:.2f}"
                          f" +- {scalars['nas_bench_201/' + c.key() + '/std']:.2f}")
    return scalars, (f"NAS-Bench-201, mean +- std of {len(cells)} cells, "
                     + self._line(describe, dataset))

  def _line(self, describe, dataset) -> str:
    top = max(c.epochs for c in self.columns)
    line = f"at {top} epochs: " + ", ".join(
        describe(c) for c in sorted(self.columns, key=Column.key) if c.epochs == top)
    own = [c for c in self.columns if c.dataset == dataset]
    if own and not any(c.epochs == top for c in own):
      budget = max(c.epochs for c in own)
      line += f"; at {budget} epochs: " + ", ".join(
          describe(c) for c in sorted(own, key=Column.key) if c.epochs == budget)
    return line

  def best(self, *, dataset: str, split: str, epochs: int) -> nas_bench_201.Genotype201:
    """The cell with the highest accuracy in that column."""
    return cell_of_code(int(np.nanargmax(self.column(dataset, split, epochs))))

  def save(self, path: str) -> None:
    """Writes the table as `.npz` (no pickles), atomically; a one-line DataError if it cannot."""
    arrays = {c.key(): v for c, v in self.columns.items()}
    tmp = path + ".tmp.npz"
    try:
      np.savez_compressed(tmp, api_index=self.api_index, source=np.array(self.source),
                          **arrays)
      os.replace(tmp, path)
    except OSError as e:
      raise DataError(f"Cannot write the table to {path!r} ({e.strerror or e}): pass a "
                      "writable path.") from None


def load(path: str | None = None) -> Table:
  """The table at `path` (written by `Table.save` / `darts_jax.nas_bench.convert`), or the
  one shipped with the package when `path` is None (CIFAR-10 at 200 epochs, and every
  dataset at 12; see the package README). One-line DataError if unreadable."""
  if path is None:
    return _shipped()
  return _read(path)


@functools.lru_cache(maxsize=1)
def _shipped() -> Table:
  return _read(SHIPPED)


def _read(path: str) -> Table:
  try:
    with np.load(path, allow_pickle=False) as npz:
      arrays = {key: npz[key] for key in npz.files}
  except FileNotFoundError:
    raise DataError(f"No NAS-Bench-201 table at {path!r}: write one with "
                    "python -m darts_jax.nas_bench.convert, or leave the path empty for the "
                    "shipped table.") from None
  except (OSError, ValueError, EOFError) as e:  # not an npz, truncated, or holds pickles
    raise DataError(f"{path!r} is not a NAS-Bench-201 table written by darts_jax "
                    f"({type(e).__name__}: {e}); write it again with "
                    "python -m darts_jax.nas_bench.convert.") from None
  source = str(arrays.pop("source", ""))
  api_index = arrays.pop("api_index", None)
  try:
    columns = {Column.from_key(k): v for k, v in arrays.items()}
  except ValueError:
    raise DataError(f"{path!r} has arrays {sorted(arrays)}, not NAS-Bench-201 columns named "
                    "dataset.split.epochs.") from None
  if not columns or any(v.dtype.kind != "f" for v in columns.values()):
    raise DataError(f"{path!r} holds no float NAS-Bench-201 columns; write it again with "
                    "python -m darts_jax.nas_bench.convert.")
  return Table(columns, api_index, source)


def from_rows(rows: Iterable[tuple[str, dict]], api_index: dict | None = None,
              source: str = "") -> Table:
  """A table from `(cell string, {Column: accuracy})` rows (any order, any subset)."""
  columns, index = {}, np.full(NUM_CELLS, -1, np.int64)
  for cell, values in rows:
    code = cell_code(cell)
    for column, value in values.items():
      columns.setdefault(Column(*column), np.full(NUM_CELLS, np.nan))[code] = value
  for cell, i in (api_index or {}).items():
    index[cell_code(cell)] = i
  return Table(columns, index, source)
