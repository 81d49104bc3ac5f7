"""The evaluation trainer: its pieces (cutout, label smoothing, schedules) and whole runs on
mock CIFAR-10, on CIFAR-10 binary files through main.py, and on a tiny ImageNet folder."""

import json
import math
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import cifar_eval, imagenet_eval
from darts_jax.data import augment
from darts_jax.train import cnn_eval
from darts_jax.errors import ConfigError, NonFiniteLossError
from darts_jax.train.metrics import EpochProgress
from tests.helpers import override
from tests.test_imagenet_input import jpeg

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_cutout_zeroes_one_clipped_square_per_image():
  images = jnp.ones((200, 32, 32, 3))
  out = np.asarray(augment.cutout(jax.random.PRNGKey(0), images, 16))
  zeros = out[..., 0] == 0
  assert np.array_equal(zeros, np.all(out == 0, axis=-1))  # every channel of a pixel
  assert np.all(out[~np.all(out == 0, axis=-1)] == 1)  # the rest untouched
  for mask in zeros:
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    # One axis-aligned rectangle, at most 16 x 16, clipped at the border when smaller.
    assert mask.sum() == len(rows) * len(cols) and len(rows) <= 16 and len(cols) <= 16
    assert len(rows) == 16 or rows[0] == 0 or rows[-1] == 31
    assert len(cols) == 16 or cols[0] == 0 or cols[-1] == 31
  assert (zeros.sum((1, 2)) == 256).mean() > 0.2  # interior centres give full squares


def test_label_smoothing_matches_its_definition():
  logits = jax.random.normal(jax.random.PRNGKey(0), (5, 7))
  labels = jnp.array([0, 3, 6, 2, 2])
  log_p = jax.nn.log_softmax(logits)
  eps = 0.1
  expected = -((1 - eps) * log_p[jnp.arange(5), labels] + eps / 7 * log_p.sum(-1)).mean()
  np.testing.assert_allclose(cnn_eval.cross_entropy(logits, labels, eps), expected, rtol=1e-6)
  np.testing.assert_allclose(
      cnn_eval.cross_entropy(logits, labels),
      optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), rtol=1e-6)


def test_schedules_are_per_epoch():
  config = cifar_eval.get_config()
  config.epochs = 600
  lr = cnn_eval.learning_rate_schedule(config, steps_per_epoch=10)
  assert float(lr(0)) == pytest.approx(0.025) and float(lr(9)) == pytest.approx(0.025)
  assert float(lr(10)) == pytest.approx(0.0125 * (1 + math.cos(math.pi / 600)))
  assert float(lr(3000)) == pytest.approx(0.0125, rel=1e-5)  # epoch 300 of 600
  config = imagenet_eval.get_config()
  lr = cnn_eval.learning_rate_schedule(config, steps_per_epoch=10)
  assert float(lr(25)) == pytest.approx(0.1 * 0.97 ** 2)


def test_nan_guard_names_the_first_non_finite_step_and_quantity():
  progress = EpochProgress(epoch=2, epochs=5, steps=10, log_every=4, show=False)
  progress.log(0, 20, 2.0, 0.5)  # read back at once: the epoch's first step
  progress.log(1, 21, 1.0, 0.7)  # stays on the device until step 4 (or a checkpoint)
  assert (progress.loss, progress.accuracy) == (2.0, 0.5)
  progress.log(2, 22, 3.0, 0.0, {"weight gradient norm": jnp.float32(jnp.nan)})
  progress.log(3, 23, jnp.float32(jnp.inf), 0.0)
  with pytest.raises(NonFiniteLossError) as error:
    progress.log(4, 24, 1.0, 0.0)
  assert str(error.value).startswith("The weight gradient norm is nan at step 22 (epoch 3); "
                                     "the run stopped without saving it")
  assert "\n" not in str(error.value)
  assert progress.sums[2] == 2  # steps 20 and 21 counted; nothing after the first bad one
  progress = EpochProgress(epoch=0, epochs=1, steps=10, log_every=100, show=False)
  progress.log(1, 1, jnp.float32(jnp.inf), 0.0)
  with pytest.raises(NonFiniteLossError, match="The training loss is inf at step 1 "):
    progress.check()  # what a checkpoint save calls first


def tiny(config, **overrides):
  # 5 cells (reductions at 1 and 3, the auxiliary head after cell 3), C=4.
  config.model.channels, config.model.layers = 4, 5
  config.epochs, config.batch_size, config.log_every = 2, 8, 1
  config.progress_bar = False
  return override(config, **overrides)


# Training on tfds mock data, its outputs and its resumption: tests/test_resume.py.


def test_cifar_eval_through_main_learns_separable_data(tmp_path):
  """A search's genotype.json, CIFAR-10 binary files, the CLI: the test accuracy on an easy
  problem (the label is the image's brightness) rises well above chance."""
  folder = tmp_path / "cifar"
  folder.mkdir()
  labels = np.arange(128) % 2
  for name, rows in (("data_batch_1.bin", labels), ("test_batch.bin", labels[:32])):
    images = np.where(np.asarray(rows)[:, None, None, None] == 1, 200, 40).astype(np.uint8)
    noise = np.random.default_rng(len(rows)).integers(0, 50, (len(rows), 32, 32, 3))
    records = np.concatenate([np.asarray(rows, np.uint8)[:, None],
                              (images + noise).astype(np.uint8).transpose(0, 3, 1, 2)
                              .reshape(len(rows), -1)], axis=1)
    (folder / name).write_bytes(records.tobytes())
  genotype = tmp_path / "genotype.json"
  genotype.write_text(json.dumps({
      "normal": [["sep_conv_3x3", 0], ["skip_connect", 1], ["dil_conv_5x5", 0],
                 ["avg_pool_3x3", 2], ["max_pool_3x3", 1], ["sep_conv_5x5", 3],
                 ["skip_connect", 4], ["dil_conv_3x3", 0]],
      "normal_concat": [2, 3, 4, 5], "reduce": [["max_pool_3x3", 0], ["skip_connect", 1],
                                               ["sep_conv_3x3", 2], ["avg_pool_3x3", 0],
                                               ["dil_conv_3x3", 1], ["skip_connect", 0],
                                               ["sep_conv_5x5", 4], ["max_pool_3x3", 1]],
      "reduce_concat": [2, 3, 4, 5]}))
  workdir = tmp_path / "run"
  out = subprocess.run(
      [sys.executable, "main.py", "--config", "configs/cifar_eval.py", f"--workdir={workdir}",
       f"--config.genotype={genotype}", f"--config.data.dir={folder}",
       "--config.model.channels=4", "--config.model.layers=5", "--config.epochs=3",
       "--config.batch_size=16", "--config.learning_rate=0.05", "--config.progress_bar=False"],
      capture_output=True, text=True, timeout=600, cwd=ROOT)
  assert out.returncode == 0, out.stderr
  assert "NetworkCIFAR" in out.stdout and "epoch 3/3" in out.stdout
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["best_test_accuracy"] >= 0.9, out.stdout
  assert json.loads((workdir / "genotype.json").read_text()) == json.loads(genotype.read_text())


@pytest.mark.parametrize("spec, message", [
    ("DARTS_V3", "Unknown genotype 'DARTS_V3'"),
    ("missing/genotype.json", "Genotype file 'missing/genotype.json' not found"),
])
def test_bad_genotype_is_one_line_through_main(tmp_path, spec, message):
  out = subprocess.run(
      [sys.executable, "main.py", "--config", "configs/cifar_eval.py", f"--workdir={tmp_path}",
       f"--config.genotype={spec}"], capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert out.returncode != 0
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("GenotypeError:") and message in lines[0], (
      out.stderr)


def test_imagenet_training_on_a_tiny_image_folder(tmp_path):
  for split, count in (("train", 4), ("val", 2)):
    for c in range(3):
      (tmp_path / "inet" / split / f"n0{c}").mkdir(parents=True)
      for k in range(count):
        (tmp_path / "inet" / split / f"n0{c}" / f"{k}.JPEG").write_bytes(
            jpeg(260 + 20 * k, 230, 10 * c + k))
  config = tiny(imagenet_eval.get_config(), **{"data.dir": str(tmp_path / "inet"),
                                               "data.num_workers": 2})
  config.model.channels, config.epochs, config.batch_size = 8, 1, 4
  workdir = tmp_path / "run"
  summary = cnn_eval.train_and_evaluate(config, str(workdir))
  # 14 cells are the paper's; here 5, at full 224x224 resolution and 3 classes.
  assert summary["parameters"] > 0 and 0 <= summary["final_test_top5_accuracy"] <= 1
  assert summary["final_test_top5_accuracy"] == 1.0  # 3 classes: the top 5 holds them all
  metrics = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
  assert np.isfinite(metrics["train_loss"]) and metrics["learning_rate"] == pytest.approx(0.1)


def test_data_without_a_test_split_trains_and_reports_no_test_accuracy(tmp_path):
  """An .npz of train_* arrays only: no NaN accuracy, no "error 200%", JSON null instead."""
  rng = np.random.default_rng(0)
  np.savez(tmp_path / "train_only.npz", train_labels=np.arange(16) % 2,
           train_images=rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8))
  config = tiny(cifar_eval.get_config(), **{"data.dir": str(tmp_path / "train_only.npz"),
                                            "epochs": 1, "model.layers": 3,
                                            "model.channels": 2, "augment.cutout": 0})
  with pytest.raises(ConfigError, match="auxiliary head needs images of at least 29x29, and "
                                        "these are 8x8"):
    cnn_eval.train_and_evaluate(config, str(tmp_path / "run"))
  config.model.auxiliary_weight = 0.0
  summary = cnn_eval.train_and_evaluate(config, str(tmp_path / "run"))
  assert summary["final_test_accuracy"] is None and summary["best_test_accuracy"] is None
  text = (tmp_path / "run" / "summary.json").read_text()
  assert "NaN" not in text and json.loads(text)["final_test_accuracy"] is None
  assert not (tmp_path / "run" / "checkpoints" / "best").exists() or not any(
      (tmp_path / "run" / "checkpoints" / "best").iterdir())
