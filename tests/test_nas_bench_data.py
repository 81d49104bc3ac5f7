"""NAS-Bench-201's search protocol: its datasets (CIFAR-100's and ImageNet16-120's pickled
batches through the safe unpickler), its weight/alpha splits, and the cells' BN on batch
statistics; then a search on generated ImageNet16-120 files through the trainer."""

import json
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import nb201_search
from darts_jax.data import images as data
from darts_jax.data import safe_pickle
from darts_jax.errors import DataError
from darts_jax.spaces import nas_bench_201
from darts_jax.train import cnn_search
from tests.helpers import override


def write_batch(path, images_nhwc, labels, label_key="labels", bytes_keys=False):
  """A batch in the official layout: `data` rows of channel planes (N, 3 * H * W) uint8."""
  rows = images_nhwc.transpose(0, 3, 1, 2).reshape(len(images_nhwc), -1)
  entry = {"data": rows, label_key: list(map(int, labels)), "mean": rows.mean(0)}
  if bytes_keys:
    entry = {k.encode(): v for k, v in entry.items()}
  with open(path, "wb") as f:
    pickle.dump(entry, f, protocol=2)


def write_imagenet16(folder, per_file=12, seed=0):
  """10 training batches and val_data of 16x16 images labelled 1..1000 (a third of them
  above 120); returns the images and labels written, val last."""
  rng = np.random.default_rng(seed)
  folder.mkdir(parents=True, exist_ok=True)
  written = {}
  for name in [f"train_data_batch_{i}" for i in range(1, 11)] + ["val_data"]:
    images = rng.integers(0, 256, (per_file, 16, 16, 3), dtype=np.uint8)
    labels = np.where(np.arange(per_file) % 3 == 2, rng.integers(121, 1001, per_file),
                      rng.integers(1, 121, per_file))
    write_batch(folder / name, images, labels)
    written[name] = (images, labels)
  return written


def test_imagenet16_keeps_classes_1_to_120_as_labels_0_to_119(tmp_path):
  written = write_imagenet16(tmp_path / "ImageNet16")
  dataset = data.load(override(nb201_search.get_config(), **{
      "data.name": "ImageNet16-120", "data.dir": str(tmp_path / "ImageNet16")}).data)
  keep = lambda names: (np.concatenate([written[n][0][written[n][1] <= 120] for n in names]),
                        np.concatenate([written[n][1][written[n][1] <= 120] for n in names]))
  images, labels = keep([f"train_data_batch_{i}" for i in range(1, 11)])
  np.testing.assert_array_equal(dataset.train.images, images)  # CHW rows back to HWC
  np.testing.assert_array_equal(dataset.train.labels, labels - 1)
  images, labels = keep(["val_data"])
  np.testing.assert_array_equal(dataset.test.images, images)
  np.testing.assert_array_equal(dataset.test.labels, labels - 1)
  assert dataset.num_classes == 120 and dataset.crop_padding == 2
  assert dataset.mean == pytest.approx((122.68 / 255, 116.66 / 255, 104.01 / 255))


def test_imagenet16_errors_are_one_line(tmp_path):
  config = override(nb201_search.get_config(), **{"data.name": "ImageNet16-120"}).data
  with pytest.raises(DataError, match="not in tensorflow-datasets"):
    data.load(config)
  (tmp_path / "empty").mkdir()
  config.dir = str(tmp_path / "empty")
  with pytest.raises(DataError, match="train_data_batch_1 is missing") as e:
    data.load(config)
  assert "\n" not in str(e.value)
  write_imagenet16(tmp_path / "evil")

  class Evil:
    def __reduce__(self):
      return (print, ("ran",))

  with open(tmp_path / "evil" / "val_data", "wb") as f:
    pickle.dump({"data": Evil(), "labels": [1]}, f)
  config.dir = str(tmp_path / "evil")
  with pytest.raises(safe_pickle.UnsafePickleError, match="print"):
    data.load(config)


def test_cifar100_python_folder(tmp_path):
  rng = np.random.default_rng(1)
  folder = tmp_path / "cifar-100-python"
  folder.mkdir()
  want = {}
  for name, n in (("train", 20), ("test", 10)):
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 100, n)
    write_batch(folder / name, images, labels, label_key="fine_labels", bytes_keys=True)
    want[name] = images, labels
  config = override(nb201_search.get_config(), **{"data.name": "cifar100",
                                                  "data.dir": str(tmp_path)}).data
  dataset = data.load(config)
  np.testing.assert_array_equal(dataset.train.images, want["train"][0])
  np.testing.assert_array_equal(dataset.test.labels, want["test"][1])
  assert dataset.num_classes == 100 and dataset.mean == data.CIFAR100_MEAN


def small_dataset(n_train=40, n_test=20):
  images = lambda n, base: (np.arange(n)[:, None, None, None] + base
                            + np.zeros((1, 2, 2, 3), np.int64)).astype(np.uint8)
  return data.Dataset(data.Split(images(n_train, 0), np.arange(n_train) % 10),
                      data.Split(images(n_test, 100), np.arange(n_test) % 10), 10, (0,) * 3,
                      (1,) * 3)


def first_pixels(split):
  return split.images[:, 0, 0, 0].astype(int).tolist()


def test_search_halves_follow_the_benchmark(tmp_path):
  dataset = small_dataset()
  config = nb201_search.get_config().data
  config.train_portion = 0.5
  # CIFAR-10 ("nas_bench_201" means "train"): DARTS' halves of the training split.
  weights, alphas = data.search_halves(dataset, config)
  assert first_pixels(weights) == list(range(20)) and first_pixels(alphas) == list(range(20, 40))
  # CIFAR-100 / ImageNet16-120: every training image, and half of the test split.
  config.name = "cifar100"
  weights, alphas = data.search_halves(dataset, config)
  assert first_pixels(weights) == list(range(40))
  half = first_pixels(alphas)
  assert len(half) == 10 and len(set(half)) == 10 and set(half) <= set(range(100, 120))
  # The benchmark's split files, in their typed JSON form.
  split_file = tmp_path / "cifar100-test-split.txt"
  split_file.write_text(json.dumps({"xvalid": ["int", [3, 1, 4]], "xtest": ["int", [0, 2]]}))
  config.split_file = str(split_file)
  assert first_pixels(data.search_halves(dataset, config)[1]) == [103, 101, 104]
  config.name, config.alpha_split = "cifar10", "train"
  split_file = tmp_path / "cifar-split.txt"
  split_file.write_text(json.dumps({"train": ["int", [5, 30, 2]], "valid": ["int", [7, 39]]}))
  config.split_file = str(split_file)
  weights, alphas = data.search_halves(dataset, config)
  assert first_pixels(weights) == [5, 30, 2] and first_pixels(alphas) == [7, 39]
  config.num_train = 10  # the first 10 training images only
  weights, alphas = data.search_halves(dataset, config)
  assert first_pixels(weights) == [5, 2] and first_pixels(alphas) == [7]
  # A split file of another dataset, or of another kind, is one line.
  config.num_train = 0
  split_file.write_text(json.dumps({"train": ["int", [5, 50_000]], "valid": ["int", [7]]}))
  with pytest.raises(DataError, match="index 50000, outside the 40 images") as e:
    data.search_halves(dataset, config)
  assert "\n" not in str(e.value)
  config.alpha_split = "test_half"
  with pytest.raises(DataError, match="no 'xvalid' list"):
    data.search_halves(dataset, config)


def cell_io(track_running_stats, train, stats=None):
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 5, 5, 3))
  mix = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(1), (6, 5)), -1)
  cell = nas_bench_201.SearchCell201(train, track_running_stats)
  variables = cell.init(jax.random.PRNGKey(2), x, mix)
  if stats is not None:
    variables = {**variables, "batch_stats": stats}
  return cell.apply(variables, x, mix, mutable=["batch_stats"]), variables


def test_cells_bn_on_batch_statistics():
  """track_running_stats=False: evaluation normalises with the batch's statistics (the same
  output as training mode, whatever the stored statistics), and nothing is tracked."""
  (train_out, _), variables = cell_io(True, True)
  garbage = jax.tree.map(lambda s: s + 7.0, variables["batch_stats"])
  (eval_out, new), _ = cell_io(False, False, garbage)
  np.testing.assert_allclose(eval_out, train_out, rtol=1e-5, atol=1e-6)
  (train_out_2, new_train), _ = cell_io(False, True, garbage)
  np.testing.assert_allclose(train_out_2, train_out, rtol=1e-5, atol=1e-6)
  for stats in (new, new_train):  # unchanged: no running averages
    jax.tree.map(np.testing.assert_array_equal, stats["batch_stats"], garbage)
  # With running statistics (the default), evaluation uses the stored ones: it differs.
  (tracked_eval, _), _ = cell_io(True, False, garbage)
  assert float(jnp.max(jnp.abs(tracked_eval - train_out))) > 1e-2


def test_search_on_imagenet16_through_the_trainer(tmp_path):
  """NATS-Bench's protocol end to end: ImageNet16-120 from its batches, the alphas on the
  benchmark's half of the validation images, the cells' BN on batch statistics; the epoch's
  report names ImageNet16-120's benchmark accuracy."""
  write_imagenet16(tmp_path / "ImageNet16", per_file=24)
  split_file = tmp_path / "imagenet-16-120-test-split.txt"
  split_file.write_text(json.dumps({"xvalid": ["int", list(range(0, 16))],
                                    "xtest": ["int", [16]]}))
  config = override(nb201_search.get_config(), **{
      "data.name": "ImageNet16-120", "data.dir": str(tmp_path / "ImageNet16"),
      "data.split_file": str(split_file), "model.track_running_stats": False,
      "model.channels": 4, "model.cells_per_stage": 1, "epochs": 1, "batch_size": 8,
      "hypergradient.method": "first_order", "progress_bar": False, "eval_examples": 8})
  result = cnn_search.train_and_evaluate(config, str(tmp_path / "run"))
  assert np.isfinite(result["train_loss"]) and np.isfinite(result["search_val_loss"])
  metrics = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  # 160 training images of classes 1..120 (two thirds of 240): 20 steps of 8.
  assert metrics[-1]["step"] == 20
  genotype = nas_bench_201.Genotype201.from_json((tmp_path / "run" / "genotype.json").read_text())
  from darts_jax import nas_bench
  assert result["nas_bench_201/ImageNet16-120.valid.12"] == nas_bench.load().accuracy(
      genotype, dataset="ImageNet16-120", split="valid", epochs=12)
