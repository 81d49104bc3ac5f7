"""NAS-Bench-201's tables in the package: the lookup, the converter, the safe unpickler."""

import bz2
import collections
import io
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from darts_jax import nas_bench
from darts_jax.data import safe_pickle
from darts_jax.errors import DataError, GenotypeError
from darts_jax.nas_bench import convert, table as table_lib
from darts_jax.spaces.nas_bench_201 import EDGES, OPS, Genotype201
from tests import nas_bench_files as files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "tests", "data", "nats_tss_sample")
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|" \
           "skip_connect~2|"
BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|" \
       "nor_conv_3x3~2|"
C10_200 = dict(dataset="cifar10", split="test", epochs=200)


# --- The shipped table ---------------------------------------------------------------------

def test_shipped_table_known_cells():
  table = nas_bench.load()
  # The figures papers quote for DARTS' collapse and for the best cell (NAS-Bench-201, Table 5).
  assert round(table.accuracy(ALL_SKIP, **C10_200), 2) == 54.30
  assert round(table.accuracy(BEST, **C10_200), 2) == 94.37
  assert str(table.best(**C10_200)) == BEST and table.rank(BEST, **C10_200) == 1
  # The all-none cell predicts one class: 10 % on CIFAR-10, 1 % on CIFAR-100.
  none = Genotype201(("none",) * 6)
  assert table.accuracy(none, **C10_200) == pytest.approx(10.0)
  assert table.accuracy(none, dataset="cifar100", split="test", epochs=12) == pytest.approx(1.0)
  # Every cell has every shipped column; accuracies are percentages.
  for column, values in table.columns.items():
    assert values.shape == (15625,) and np.all(np.isfinite(values)), column
    assert 0 < values.min() and values.max() < 100
  assert {c.key() for c in table.columns} == {
      "cifar10.test.200", *(f"{d}.{s}.12" for d in nas_bench.DATASETS
                            for s in ("valid", "test"))}
  # The API's index travels with the cell (NATS-Bench's cell 0 is this one).
  cell0 = ("|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|"
           "skip_connect~2|")
  assert table.api_index[nas_bench.cell_code(cell0)] == 0
  assert sorted(table.api_index) == list(range(15625))


def test_rank_counts_strictly_better_cells():
  table = nas_bench.load()
  values = table.column(**C10_200)
  for code in (0, 777, 15624, nas_bench.cell_code(ALL_SKIP)):
    assert table.rank(code, **C10_200) == 1 + sum(v > values[code] for v in values)


def test_report_names_the_largest_budget_and_the_searched_dataset():
  table = nas_bench.load()
  scalars, line = table.report(ALL_SKIP)
  rank = table.rank(ALL_SKIP, **C10_200)
  assert line == f"NAS-Bench-201 at 200 epochs: cifar10 test 54.30 (rank {rank})"
  assert scalars["nas_bench_201/cifar10.test.200/rank"] == rank
  assert len(scalars) == 2 * len(table.columns)
  # A CIFAR-100 search: its own columns join the line, at their largest budget (12 epochs).
  _, line = table.report(ALL_SKIP, dataset="cifar100")
  value = table.accuracy(ALL_SKIP, dataset="cifar100", split="valid", epochs=12)
  rank = table.rank(ALL_SKIP, dataset="cifar100", split="valid", epochs=12)
  assert line.startswith("NAS-Bench-201 at 200 epochs: cifar10 test 54.30")
  assert "; at 12 epochs: cifar100 test " in line
  assert line.endswith(f"cifar100 valid {value:.2f} (rank {rank})")
  assert table.report(ALL_SKIP, dataset="cifar10")[1] == table.report(ALL_SKIP)[1]


def test_cell_code_is_base_5_in_edge_order():
  ops = ("nor_conv_3x3", "none", "skip_connect", "avg_pool_3x3", "nor_conv_1x1", "none")
  code = sum(OPS.index(op) * 5 ** (len(EDGES) - 1 - i) for i, op in enumerate(ops))
  cell = Genotype201(ops)
  assert nas_bench.cell_code(cell) == nas_bench.cell_code(str(cell)) == code
  assert nas_bench.cell_code(ops) == code and nas_bench.cell_of_code(code) == cell
  assert [nas_bench.cell_code(nas_bench.cell_of_code(c)) for c in range(15625)] == \
      list(range(15625))


@pytest.mark.parametrize("bad", [15625, -1, True, ("none",) * 5, ("conv",) * 6, "|x~0|"])
def test_cell_code_refuses(bad):
  with pytest.raises(GenotypeError):
    nas_bench.cell_code(bad)


def test_missing_column_names_what_there_is():
  with pytest.raises(DataError, match=r"no dataset='cifar100', split='test', epochs=200; it "
                     r"has .*dataset='cifar10', split='test', epochs=200"):
    nas_bench.load().accuracy(ALL_SKIP, dataset="cifar100", split="test", epochs=200)


def test_query_api_needs_the_protocol_spelled_out():
  with pytest.raises(TypeError):
    nas_bench.load().accuracy(ALL_SKIP)  # dataset, split, epochs are required keywords


def test_table_files_hold_no_pickles(tmp_path):
  with np.load(table_lib.SHIPPED, allow_pickle=False) as npz:
    assert all(npz[k].dtype != object for k in npz.files)
  bad = tmp_path / "t.npz"
  np.savez(bad, **{"cifar10.test.200": np.array([{"a": 1}] * 15625, dtype=object)})
  with pytest.raises(DataError, match="not a NAS-Bench-201 table"):
    nas_bench.load(str(bad))
  with pytest.raises(DataError, match="No NAS-Bench-201 table"):
    nas_bench.load(str(tmp_path / "absent.npz"))


# --- The converter ---------------------------------------------------------------------------

def _check_generated(table, codes):
  assert len(table.columns) == 12  # 3 datasets x valid/test x 12/200 epochs
  for i, code in enumerate(codes):
    for column, value in files.expected(code).items():
      assert table.columns[column][code] == pytest.approx(value, abs=1e-12), (code, column)
    assert table.api_index[code] == i
  others = np.setdiff1d(np.arange(15625), codes)
  assert all(np.isnan(v[others]).all() for v in table.columns.values())


def test_convert_nats_folder(tmp_path):
  folder = tmp_path / "NATS-tss-v1_0-3ffb9-simple"
  codes = files.write_nats_folder(folder, 7)
  out = tmp_path / "t.npz"
  assert convert.main([str(folder), "--out", str(out)]) == 0
  _check_generated(nas_bench.load(str(out)), codes)


def test_convert_nats_single_file(tmp_path):
  path = tmp_path / "NATS-tss-v1_0-3ffb9.pickle.pbz2"
  codes = files.write_nats_file(path, 5)
  _check_generated(convert.from_source(str(path)), codes)


@pytest.mark.parametrize("zip_format", [False, True], ids=["legacy", "zip"])
def test_convert_nas_bench_201_pth(tmp_path, zip_format):
  path = tmp_path / "NAS-Bench-201-v1_1-096897.pth"
  codes = files.write_pth(path, 4, zip_format=zip_format)
  _check_generated(convert.from_source(str(path)), codes)


def test_convert_the_benchmarks_own_records_matches_the_shipped_table(tmp_path):
  """Real NATS-Bench files (tests/data/nats_tss_sample): the converter gives the figures the
  shipped table has, at 4 decimals, for every column both have."""
  table, shipped = convert.from_source(SAMPLE), nas_bench.load()
  assert len(table.columns) == 12
  checked = 0
  for index in (0, 11):
    code = int(np.flatnonzero(shipped.api_index == index)[0])
    assert table.api_index[code] == index
    for column, values in shipped.columns.items():
      assert round(table.columns[column][code], 4) == pytest.approx(values[code], abs=1e-9)
      checked += 1
  assert checked == 14


def test_convert_csv_with_renamed_columns(tmp_path):
  path = tmp_path / "t.csv"
  path.write_text(f"cellstr,acc,api_index\n{ALL_SKIP},54.2967,3\n{BEST},94.3733,4\n")
  out = tmp_path / "t.npz"
  assert convert.main([str(path), "--column", "acc=cifar10.test.200", "--out", str(out)]) == 0
  table = nas_bench.load(str(out))
  assert table.accuracy(BEST, **C10_200) == 94.3733 and table.rank(ALL_SKIP, **C10_200) == 2
  assert table.api_index[nas_bench.cell_code(BEST)] == 4
  assert convert.main([str(path), "--out", str(out)]) == 1  # "acc" names no column
  assert convert.main([str(path), "--column", "acc=cifar10.test.200", "--out",
                       str(tmp_path / "absent" / "t.npz")]) == 1  # one line, no traceback


# --- The safe unpickler ----------------------------------------------------------------------

class _Exploit:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def _malicious_files(tmp_path, marker):
  """The converter's every input form, each carrying a pickle that runs a shell command."""
  payload = {"meta_archs": ["x"], "arch2infos": {0: _Exploit(marker)}}
  folder = tmp_path / "NATS-tss-v1_0-3ffb9-simple"
  files.write_nats_folder(folder, 2)
  with bz2.open(folder / "000001.pickle.pbz2", "wb") as f:
    pickle.dump(collections.OrderedDict([("12", _Exploit(marker))]), f)
  single = tmp_path / "evil.pickle.pbz2"
  with bz2.open(single, "wb") as f:
    pickle.dump(payload, f)
  legacy = tmp_path / "evil.pth"
  legacy.write_bytes(files.torch_legacy_bytes(payload))
  zipped = tmp_path / "evil_zip.pth"
  with zipfile.ZipFile(zipped, "w") as z:
    z.writestr("archive/data.pkl", pickle.dumps(payload))
  return [folder, single, legacy, zipped]


def test_malicious_pickles_are_refused_before_anything_runs(tmp_path):
  marker = tmp_path / "pwned"
  for path in _malicious_files(tmp_path, marker):
    out = tmp_path / "t.npz"
    result = subprocess.run([sys.executable, "-m", "darts_jax.nas_bench.convert", str(path),
                             "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("UnsafePickleError:"), result.stderr
    assert "posix.system" in lines[0] or "os.system" in lines[0]
    assert not marker.exists() and not out.exists()


def test_safe_unpickler_admits_plain_data_only():
  value = {"a": [1, 2.5, (3, "x"), None, True], "b": collections.OrderedDict(k=np.float64(3.5)),
           ("cifar10", 777): {1, 2}, "bytes": b"\x00\xff", "n": np.int64(4),
           "array": np.arange(6, dtype=np.uint8).reshape(2, 3),
           "fortran": np.asfortranarray(np.ones((2, 3)))}
  for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
    out = safe_pickle.load(io.BytesIO(pickle.dumps(value, protocol=protocol)))
    assert out.keys() == value.keys() and out["a"] == value["a"] and out["n"] == 4
    assert out["b"] == value["b"] and out[("cifar10", 777)] == {1, 2}
    assert out["bytes"] == b"\x00\xff"
    np.testing.assert_array_equal(out["array"], value["array"])
    np.testing.assert_array_equal(out["fortran"], value["fortran"])
  for bad, what in [(np.array([1, "a"], dtype=object), "array of Python objects"),
                    (collections.defaultdict(list), "collections.defaultdict"),
                    (np.ma.array([1]), "numpy.ma"), (_Exploit("x"), "system"),
                    (Genotype201(("none",) * 6), "Genotype201")]:
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
      with pytest.raises(safe_pickle.UnsafePickleError, match=what):
        safe_pickle.load(io.BytesIO(pickle.dumps(bad, protocol=protocol)))


def test_torch_tensor_storage_is_refused(tmp_path):
  class Tensorish:
    pass

  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      return ("storage", "FloatStorage", "0", "cpu", 4) if isinstance(obj, Tensorish) else None

  f = io.BytesIO()
  Pickler(f, protocol=2).dump({"w": Tensorish()})
  path = tmp_path / "x.pth"
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", f.getvalue())
  with pytest.raises(safe_pickle.UnsafePickleError, match="tensor storage"):
    safe_pickle.load_file(str(path))


@pytest.mark.parametrize("content", [b"", b"not a pickle", b"BZh91AY&SY-broken"])
def test_damaged_files_are_one_line_errors(tmp_path, content):
  path = tmp_path / "x.pickle.pbz2"
  path.write_bytes(content)
  with pytest.raises(DataError):
    convert.from_source(str(path))
