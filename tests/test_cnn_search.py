"""The CIFAR-10 search trainer: data loading, a search per method, the CLI end to end."""

import json
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import cifar_search
from darts_jax.data import augment
from darts_jax.train import cnn_search
from darts_jax.data import images as data
from tests.helpers import override

ROOT = pathlib.Path(__file__).resolve().parents[1]


def write_cifar_binary(path, labels, seed=0):
  """Records in CIFAR-10's binary layout: a label byte, then the R, G and B planes."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
  planes = images.transpose(0, 3, 1, 2).reshape(len(labels), -1)
  records = np.concatenate([np.asarray(labels, np.uint8)[:, None], planes], axis=1)
  path.write_bytes(records.tobytes())
  return images


def test_local_binary_loader_reads_cifar_records(tmp_path):
  folder = tmp_path / "cifar-10-batches-bin"
  folder.mkdir()
  first = write_cifar_binary(folder / "data_batch_1.bin", [3, 1, 4], seed=1)
  second = write_cifar_binary(folder / "data_batch_2.bin", [1, 5], seed=2)
  test = write_cifar_binary(folder / "test_batch.bin", [9, 2], seed=3)
  dataset = data.load_cifar10_binary(str(tmp_path))  # the parent folder works too
  np.testing.assert_array_equal(dataset.train.images, np.concatenate([first, second]))
  np.testing.assert_array_equal(dataset.train.labels, [3, 1, 4, 1, 5])
  np.testing.assert_array_equal(dataset.test.images, test)
  assert dataset.train.images.shape == (5, 32, 32, 3) and dataset.num_classes == 10
  weight_half, alpha_half = data.search_split(dataset.train, 0.6)
  np.testing.assert_array_equal(weight_half.labels, [3, 1, 4])
  np.testing.assert_array_equal(alpha_half.labels, [1, 5])


def test_local_binary_loader_rejects_bad_files(tmp_path):
  with pytest.raises(data.DataError, match="No CIFAR-10 binary files"):
    data.load_cifar10_binary(str(tmp_path))
  (tmp_path / "data_batch_1.bin").write_bytes(b"\0" * 3000)
  with pytest.raises(data.DataError, match="not a positive multiple of the 3073-byte record"):
    data.load_cifar10_binary(str(tmp_path))


def test_offline_without_prepared_tfds_data_fails_at_once(tmp_path, monkeypatch):
  monkeypatch.setattr(data, "_DOWNLOAD_HOST", ("127.0.0.1", 9))  # nothing listens: offline
  start = time.perf_counter()
  with pytest.raises(data.DataError) as error:
    data.load_cifar10_tfds(str(tmp_path))
  assert time.perf_counter() - start < 10
  message = str(error.value)
  assert "\n" not in message and "--config.data.dir=" in message and "unreachable" in message


def test_batches_cover_each_epoch_once_in_a_new_order():
  split = data.Split(np.arange(10)[:, None, None, None].astype(np.uint8), np.arange(10))
  batches = data.Batches(split, 3, seed=0)
  epoch0 = np.concatenate([next(batches)["labels"] for _ in range(3)])
  epoch1 = np.concatenate([next(batches)["labels"] for _ in range(3)])
  assert len(set(epoch0)) == len(set(epoch1)) == 9  # 3 full batches, the remainder dropped
  assert list(epoch0) != list(epoch1)


def test_random_crop_flip_shifts_and_mirrors():
  import jax

  images = np.arange(2 * 6 * 6).reshape(2, 6, 6, 1).astype(np.float32) + 1
  out = np.asarray(augment.random_crop_flip(jax.random.PRNGKey(0), images, pad=2))
  assert out.shape == images.shape
  for got, image in zip(out, images):
    # Every output is a translated window of the zero-padded image, maybe mirrored.
    padded = np.pad(image[..., 0], 2)
    windows = [padded[y:y + 6, x:x + 6] for y in range(5) for x in range(5)]
    assert any(np.array_equal(got[..., 0], w) or np.array_equal(got[..., 0], w[:, ::-1])
               for w in windows)


def tiny_config(**overrides):
  config = cifar_search.get_config()
  config.model.channels, config.model.layers = 2, 3
  config.epochs, config.batch_size, config.log_every = 1, 4, 1
  config.progress_bar = False
  return override(config, **overrides)


@pytest.mark.parametrize("override,message", [
    ("--config.hypergradient.method=second_order", "hypergradient.method='second_order'"),
    ("--config.model.remat=all", "model.remat='all'"),
    ("--config.model.dtype=float16", "model.dtype='float16'"),
])
def test_bad_config_values_are_one_line_through_main(tmp_path, override, message):
  out = subprocess.run(
      [sys.executable, "main.py", "--config", "configs/quick_search.py",
       f"--workdir={tmp_path}", override], capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert out.returncode != 0
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("ConfigError:") and message in lines[0], out.stderr


# One method: the trainer's data path is the same for all three, and tests/test_search.py
# runs each method's step.
@pytest.mark.parametrize("method", ["first_order"])
def test_search_on_tfds_mock_data(tmp_path, monkeypatch, method):
  monkeypatch.setattr(data, "_reachable", lambda *args: True)  # "online": tfds is mocked
  with tfds.testing.mock_data(num_examples=16):
    result = cnn_search.train_and_evaluate(
        tiny_config(**{"hypergradient.method": method, "data.tfds_data_dir": str(tmp_path)}),
        str(tmp_path / "run"))
  assert np.isfinite(result["train_loss"]) and 0 <= result["search_val_accuracy"] <= 1
  genotype = json.loads((tmp_path / "run" / "genotype.json").read_text())
  assert genotype == result["genotype"] and len(genotype["normal"]) == 8


# The exact search through main.py, its outputs, and its resumption: tests/test_resume.py.


def test_missing_local_data_is_one_line_through_main(tmp_path):
  out = subprocess.run(
      [sys.executable, "main.py", "--config", "configs/cifar_search.py",
       f"--workdir={tmp_path / 'run'}", f"--config.data.dir={tmp_path}"],
      capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert out.returncode != 0
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and "No CIFAR-10 binary files" in lines[0], out.stderr
