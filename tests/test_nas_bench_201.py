"""The NAS-Bench-201 search space: network size, genotype strings, a search through the trainer."""

import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import nb201_search
from darts_jax.train import cnn_search
from darts_jax.data import images as data
from darts_jax.spaces import nas_bench_201
from darts_jax.errors import GenotypeError
from tests.helpers import override

EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|" \
          "skip_connect~2|"


def expected_parameters(c=16, n=5, classes=10):
  """The supernet's weights, counted from the architecture by hand."""
  conv = lambda k, c_in, c_out: k * k * c_in * c_out  # no biases
  bn = lambda c: 2 * c  # affine BN: scale and shift; the cells' BN has none
  stem = conv(3, 3, c) + bn(c)
  # Each of the 6 edges of a cell holds a 1x1 and a 3x3 conv (none, skip, pool: nothing).
  cell = lambda c: 6 * (conv(1, c, c) + conv(3, c, c))
  # Stride-2 residual block: ReLUConvBN 3x3 s2, ReLUConvBN 3x3, 1x1 conv on the shortcut.
  reduction = lambda c_in, c_out: (conv(3, c_in, c_out) + bn(c_out) + conv(3, c_out, c_out)
                                   + bn(c_out) + conv(1, c_in, c_out))
  stages = n * (cell(c) + cell(2 * c) + cell(4 * c))
  head = bn(4 * c) + 4 * c * classes + classes
  return stem + stages + reduction(c, 2 * c) + reduction(2 * c, 4 * c) + head


@pytest.mark.parametrize("c,n,classes", [(16, 5, 10), (16, 5, 100), (8, 2, 10)])
def test_parameter_count_matches_the_hand_count(c, n, classes):
  model = nas_bench_201.SearchNetwork201(channels=c, cells_per_stage=n, num_classes=classes)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
      nas_bench_201.init_alphas(jax.random.PRNGKey(0)), train=True))
  count = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes["params"]))
  assert count == expected_parameters(c, n, classes)
  if (c, n, classes) == (16, 5, 10):
    assert count == 1_686_106  # the figure the formula gives for the benchmark's network


def test_init_supernet_draws_what_the_modules_initialisers_would():
  """The host-side init: every weight U(-b, b) with the bound of the module's own
  initialiser (its `model.init`, by the largest |w| of each tensor), BN at 1 and 0, the
  structure of `model.init`'s; seeded."""
  model = nas_bench_201.SearchNetwork201(channels=8, cells_per_stage=2, num_classes=10)
  weights, stats = nas_bench_201.init_supernet(model, 3, (8, 8, 3))
  real = jax.jit(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)),
                                    nas_bench_201.init_alphas(jax.random.PRNGKey(0))))()
  assert jax.tree.structure(weights) == jax.tree.structure(real["params"])
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), stats, real["batch_stats"])
  for (path, ours), (_, theirs) in zip(jax.tree_util.tree_leaves_with_path(weights),
                                       jax.tree_util.tree_leaves_with_path(real["params"])):
    name = jax.tree_util.keystr(path)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype, name
    if name.endswith(("['scale']", "['bias']")):
      np.testing.assert_array_equal(ours, theirs)  # BN: 1 and 0
    elif ours.size >= 64:  # the largest of 64+ uniform draws is within 10 % of the bound
      ratio = float(jnp.abs(ours).max() / jnp.abs(theirs).max())
      assert 0.8 < ratio < 1.25, (name, ratio)
  again, _ = nas_bench_201.init_supernet(model, 3, (8, 8, 3))
  other, _ = nas_bench_201.init_supernet(model, 4, (8, 8, 3))
  assert all(bool(jnp.all(a == b)) for a, b in zip(jax.tree.leaves(weights),
                                                   jax.tree.leaves(again)))
  assert not np.array_equal(weights["stem"], other["stem"])


def test_genotype_string_round_trip_and_argmax_derivation():
  genotype = nas_bench_201.Genotype201.from_string(EXAMPLE)
  assert genotype.ops == ("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect",
                          "nor_conv_3x3", "skip_connect")
  assert str(genotype) == genotype.to_string() == EXAMPLE
  assert nas_bench_201.Genotype201.from_json(genotype.to_json()) == genotype
  # Plain argmax per edge, `none` included: edges 1 and 4 are cut.
  choice = [3, 0, 2, 1, 0, 4]
  alphas = np.zeros((6, 5), np.float32)
  alphas[np.arange(6), choice] = 1.0
  derived = nas_bench_201.derive_genotype({"cell": alphas})
  assert derived.ops == tuple(nas_bench_201.OPS[k] for k in choice)
  assert str(derived) == ("|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|none~1|"
                          "avg_pool_3x3~2|")
  assert nas_bench_201.Genotype201.from_string(str(derived)) == derived


@pytest.mark.parametrize("text,message", [
    ("|nor_conv_3x3~0|+|none~0|none~1|", "has 2 nodes"),
    (EXAMPLE.replace("avg_pool_3x3", "max_pool_3x3"), "Unknown op 'max_pool_3x3'"),
    (EXAMPLE.replace("skip_connect~2", "skip_connect~1"), "Node 3"),
])
def test_malformed_genotype_strings_are_one_line_errors(text, message):
  with pytest.raises(GenotypeError, match=message) as error:
    nas_bench_201.Genotype201.from_string(text)
  assert "\n" not in str(error.value)


def test_search_step_through_the_trainer(tmp_path):
  """nb201_search's trainer, the exact hypergradient, on the 8x8 digits: the shared alpha
  moves, the genotype is written in the benchmark's string form and drawn."""
  config = override(nb201_search.get_config(), **{
      "data.name": "digits", "data.num_train": 64, "augment": False, "model.channels": 4,
      "model.cells_per_stage": 1, "epochs": 1, "batch_size": 16, "alpha_learning_rate": 3e-2,
      "progress_bar": False, "log_every": 1, "eval_examples": 16})
  result = cnn_search.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(result["train_loss"])
  alphas = np.load(tmp_path / "alphas.npz")
  assert alphas["cell"].shape == (6, 5) and alphas["softmax_cell_per_epoch"].shape == (1, 6, 5)
  assert np.abs(alphas["cell"]).max() > 1e-2  # 2 Adam steps at 3e-2 from a 1e-3 start
  genotype = nas_bench_201.Genotype201.from_json((tmp_path / "genotype.json").read_text())
  assert genotype == nas_bench_201.derive_genotype({"cell": alphas["cell"]})
  assert result["genotype"] == json.loads(genotype.to_json())
  assert (tmp_path / "cell.png").stat().st_size > 0 and (tmp_path / "alphas.png").exists()
  # The derived cell's benchmark accuracy, from the shipped table, in the summary and the
  # epoch's metrics (the lookup is checked against the table by hand here).
  from darts_jax import nas_bench
  table = nas_bench.load()
  want = table.accuracy(genotype, dataset="cifar10", split="test", epochs=200)
  assert result["nas_bench_201/cifar10.test.200"] == want
  assert result["nas_bench_201/cifar10.test.200/rank"] == table.rank(
      genotype, dataset="cifar10", split="test", epochs=200)
  epoch = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
  assert epoch["nas_bench_201/cifar10.test.200"] == want
  assert epoch["nas_bench_201/cifar100.valid.12"] == table.accuracy(
      genotype, dataset="cifar100", split="valid", epochs=12)


def test_cifar100_through_tfds(tmp_path, monkeypatch):
  """nb201_search's CIFAR-100 option: 100 classes and their statistics, from tfds (mocked)."""
  monkeypatch.setattr(data, "_reachable", lambda *args: True)  # "online": tfds is mocked
  config = nb201_search.get_config()
  config.data.name, config.data.tfds_data_dir = "cifar100", str(tmp_path)
  with tfds.testing.mock_data(num_examples=12):
    dataset = data.load(config.data)
  assert dataset.num_classes == 100 and dataset.mean == data.CIFAR100_MEAN
  assert dataset.train.images.shape == (12, 32, 32, 3) and dataset.train.images.dtype == np.uint8
  assert dataset.train.labels.max() < 100


def test_search_reports_a_converted_table_through_main(tmp_path):
  """main.py with --config.benchmark_table: every column of the user's table is logged each
  epoch, the largest budget's on the progress line; a missing table is one line, exit 1."""
  import subprocess
  import sys

  from darts_jax import nas_bench
  from darts_jax.nas_bench import table as table_lib
  from tests import nas_bench_files as files

  codes = range(table_lib.NUM_CELLS)
  columns = {}
  for code in codes:
    for column, value in files.expected(code).items():
      columns.setdefault(column, np.full(len(codes), np.nan))[code] = value
  path = tmp_path / "nb201.npz"
  table_lib.Table(columns).save(str(path))
  root = pathlib.Path(__file__).resolve().parents[1]
  args = [sys.executable, "main.py", "--config", "configs/nb201_search.py",
          "--config.data.name=digits", "--config.data.num_train=64", "--config.augment=False",
          "--config.model.channels=4", "--config.model.cells_per_stage=1",
          "--config.epochs=1", "--config.batch_size=16", "--config.progress_bar=False",
          "--config.eval_examples=16"]
  out = subprocess.run(args + [f"--config.benchmark_table={path}", "--workdir",
                               str(tmp_path / "run")], capture_output=True, text=True,
                       cwd=root, timeout=600)
  assert out.returncode == 0, out.stderr
  genotype = nas_bench_201.Genotype201.from_json((tmp_path / "run" / "genotype.json").read_text())
  table = nas_bench.load(str(path))
  line = next(l for l in out.stdout.splitlines() if "NAS-Bench-201 at 200 epochs" in l)
  for dataset in nas_bench.DATASETS:
    for split in ("valid", "test"):
      value = table.accuracy(genotype, dataset=dataset, split=split, epochs=200)
      rank = table.rank(genotype, dataset=dataset, split=split, epochs=200)
      assert f"{dataset} {split} {value:.2f} (rank {rank})" in line
  epoch = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
  assert {k for k in epoch if k.startswith("nas_bench_201/")} == {
      f"nas_bench_201/{c.key()}{r}" for c in columns for r in ("", "/rank")}
  missing = subprocess.run(args + [f"--config.benchmark_table={tmp_path / 'absent.npz'}",
                                   "--workdir", str(tmp_path / "bad")],
                           capture_output=True, text=True, cwd=root, timeout=600)
  assert missing.returncode == 1 and "No NAS-Bench-201 table" in missing.stderr
  assert len(missing.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
