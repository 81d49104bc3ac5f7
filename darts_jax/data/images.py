"""Datasets for search and evaluation, as uint8 NHWC arrays in host memory.

CIFAR-10 comes from tensorflow-datasets (`as_data_source`, which reads array_record files
without TensorFlow) or from a local folder in the standard CIFAR-10 binary format, read with
numpy; CIFAR-100 from tensorflow-datasets or its "python version" folder; NAS-Bench-201's
ImageNet16-120 from the downsampled-ImageNet 16x16 batches (Chrabaszcz et al., 2017). The
last two are pickles, read with `darts_jax.data.safe_pickle` (plain containers and numbers
only). Any other image-classification set can come from a NumPy archive
(`--config.data.dir=/path/to/set.npz`, see `load_npz`). The whole of CIFAR-10 is 180 MB as
uint8, so it is held in memory and batches are gathered by index; augmentation runs on the
device, inside the jitted step (`darts_jax.data.augment`).
"""

from __future__ import annotations

import glob
import os
import socket
import zipfile
import zlib
from typing import NamedTuple

from absl import logging
import numpy as np

from darts_jax.errors import DataError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# CIFAR-100's, as NAS-Bench-201 normalises it (get_dataset_with_transform.py:
# (129.3, 124.1, 112.4) / 255 and (68.2, 65.4, 70.4) / 255).
CIFAR100_MEAN = (129.3 / 255, 124.1 / 255, 112.4 / 255)
CIFAR100_STD = (68.2 / 255, 65.4 / 255, 70.4 / 255)
# ImageNet16's, as NAS-Bench-201 normalises it (xautodl/datasets/get_dataset_with_transform.py:
# (122.68, 116.66, 104.01) / 255 and (63.22, 61.26, 65.09) / 255).
IMAGENET16_MEAN = (122.68 / 255, 116.66 / 255, 104.01 / 255)
IMAGENET16_STD = (63.22 / 255, 61.26 / 255, 65.09 / 255)
IMAGENET16_CLASSES = 120  # NAS-Bench-201's ImageNet16-120: the classes labelled 1..120
_IMAGENET16_FILES = tuple(f"train_data_batch_{i}" for i in range(1, 11))
_RECORD_BYTES = 1 + 32 * 32 * 3  # label, then the red, green and blue planes
_DOWNLOAD_HOST = ("www.cs.toronto.edu", 443)  # where tfds fetches CIFAR-10


class Split(NamedTuple):
  images: np.ndarray  # (N, H, W, C) uint8
  labels: np.ndarray  # (N,) int32


class Dataset(NamedTuple):
  train: Split
  test: Split
  num_classes: int
  mean: tuple
  std: tuple
  crop_padding: int = 4  # the search's random crop: 4 for 32x32 (DARTS), 2 for ImageNet16


def load(config) -> Dataset:
  """The dataset a config names.

  Args:
    config: the `data` part of a config. `config.dir` ending in `.npz` is a NumPy archive
      read by `load_npz` (arrays `train_images` (N, H, W, C) uint8 with C = 1 or 3,
      `train_labels` (N,) integers, optionally `test_images` and `test_labels`), whatever
      `config.name` says. Otherwise `config.name` is "cifar10" (from the CIFAR-10 binary files
      in `config.dir`, or from tensorflow-datasets, in `config.tfds_data_dir`, when `dir` is
      empty), "cifar100" (the `cifar-100-python` folder in `config.dir`, or tfds),
      "ImageNet16-120" (the downsampled 16x16 batches in `config.dir`, `load_imagenet16`) or
      "digits" (scikit-learn's 8x8 digits).

  Raises:
    DataError: the data is missing or malformed; the message says how to fix it.
  """
  if str(config.get("dir") or "").endswith(".npz"):
    return load_npz(config.dir)
  if config.name == "cifar10":
    if config.get("dir"):
      return load_cifar10_binary(config.dir)
    return load_cifar10_tfds(config.get("tfds_data_dir") or None)
  if config.name == "cifar100":
    if config.get("dir"):
      return load_cifar100_python(config.dir)
    return load_cifar10_tfds(config.get("tfds_data_dir") or None, name="cifar100")
  if config.name == "ImageNet16-120":
    if not config.get("dir"):
      raise DataError("ImageNet16-120 is not in tensorflow-datasets: point --config.data.dir "
                      "at the folder of the downsampled-ImageNet 16x16 files "
                      "(train_data_batch_1 .. train_data_batch_10 and val_data, from "
                      "image-net.org's Imagenet16_train / Imagenet16_val).")
    return load_imagenet16(config.dir)
  if config.name == "digits":
    return load_digits()
  raise DataError(f"Unknown dataset {config.name!r}: set --config.data.name to cifar10, "
                  "cifar100, ImageNet16-120 or digits.")


def load_cifar10_binary(path: str) -> Dataset:
  """CIFAR-10 in its binary format: `data_batch_*.bin` (train) and `test_batch.bin` (test).

  `path` is the `cifar-10-batches-bin` folder or one that contains it.
  """
  if os.path.isdir(os.path.join(path, "cifar-10-batches-bin")):
    path = os.path.join(path, "cifar-10-batches-bin")
  train_files = sorted(glob.glob(os.path.join(path, "data_batch_*.bin")))
  test_file = os.path.join(path, "test_batch.bin")
  if not train_files:
    raise DataError(f"No CIFAR-10 binary files (data_batch_*.bin) in {path!r}: point "
                    "--config.data.dir at the extracted cifar-10-batches-bin folder.")
  train = _concat([_read_cifar_binary(f) for f in train_files])
  test = _read_cifar_binary(test_file) if os.path.exists(test_file) else Split(
      train.images[:0], train.labels[:0])
  return Dataset(train, test, 10, CIFAR10_MEAN, CIFAR10_STD)


def _read_cifar_binary(filename: str) -> Split:
  raw = np.fromfile(filename, np.uint8)
  if raw.size == 0 or raw.size % _RECORD_BYTES:
    raise DataError(f"{filename} is not CIFAR-10 binary data: {raw.size} bytes is not a "
                    f"positive multiple of the {_RECORD_BYTES}-byte record (1 label byte + "
                    "3072 pixel bytes).")
  records = raw.reshape(-1, _RECORD_BYTES)
  labels = records[:, 0].astype(np.int32)
  if labels.max() > 9:
    raise DataError(f"{filename}: label {labels.max()} is out of range 0-9; is this "
                    "CIFAR-100 or another format?")
  images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return Split(np.ascontiguousarray(images), labels)


def _read_pickle(path: str, what: str) -> dict:
  """A pickled batch as a dict with str keys, through the safe unpickler."""
  from darts_jax.data import safe_pickle

  if not os.path.isfile(path):
    raise DataError(f"{what}: {path} is missing: point --config.data.dir at the folder that "
                    "holds it.")
  entry = safe_pickle.load_file(path)
  if not isinstance(entry, dict):
    raise DataError(f"{path} holds a {type(entry).__name__}, not the dict of a {what} batch.")
  return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _pickled_images(path: str, entry: dict, what: str, label_key: str, side: int):
  """(N, side, side, 3) uint8 and (N,) int64 from a batch's `data` rows (CHW order) and labels."""
  if "data" not in entry or label_key not in entry:
    raise DataError(f"{path} lacks 'data' or {label_key!r} (it holds {', '.join(map(str, entry))}"
                    f"): is it a {what} batch?")
  rows = np.asarray(entry["data"])
  labels = np.asarray(entry[label_key], np.int64)
  if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != 3 * side * side or \
      len(labels) != len(rows):
    raise DataError(f"{path}: 'data' is {rows.dtype} {rows.shape} with {len(labels)} labels; "
                    f"a {what} batch holds uint8 rows of {3 * side * side} (3 x {side} x {side}) "
                    "and one label per row.")
  return rows.reshape(-1, 3, side, side).transpose(0, 2, 3, 1), labels


def load_cifar100_python(path: str) -> Dataset:
  """CIFAR-100's "python version": the pickles `train` and `test` in `cifar-100-python`
  (`path` is that folder or one that contains it), with the 100 fine labels."""
  if os.path.isdir(os.path.join(path, "cifar-100-python")):
    path = os.path.join(path, "cifar-100-python")
  splits = []
  for name in ("train", "test"):
    filename = os.path.join(path, name)
    images, labels = _pickled_images(filename, _read_pickle(filename, "CIFAR-100"), "CIFAR-100",
                                     "fine_labels", 32)
    if len(labels) and (labels.min() < 0 or labels.max() > 99):
      raise DataError(f"{filename}: fine label {labels.max()} is out of range 0-99.")
    splits.append(Split(np.ascontiguousarray(images), labels.astype(np.int32)))
  return Dataset(*splits, 100, CIFAR100_MEAN, CIFAR100_STD)


def load_imagenet16(path: str, num_classes: int = IMAGENET16_CLASSES) -> Dataset:
  """NAS-Bench-201's ImageNet16-120: the downsampled-ImageNet 16x16 batches, classes 1..120.

  `path` holds `train_data_batch_1` .. `train_data_batch_10` and `val_data`, pickled dicts
  of `data` ((N, 3072) uint8, channel planes) and `labels` (1..1000). As the benchmark
  (xautodl/datasets/DownsampledImageNet.py), only the images labelled 1..`num_classes` are
  kept, label - 1 being the class: 151,700 training and 6,000 validation images for 120. The
  validation images are the test split here; NAS-Bench-201 splits them into its valid and
  test halves (`search_halves`). Each batch is filtered as it is read (a whole batch is
  ~390 MB).
  """
  def read(names):
    images, labels = [], []
    for name in names:
      filename = os.path.join(path, name)
      x, y = _pickled_images(filename, _read_pickle(filename, "ImageNet16"), "ImageNet16",
                             "labels", 16)
      keep = (y >= 1) & (y <= num_classes)
      images.append(np.ascontiguousarray(x[keep]))
      labels.append((y[keep] - 1).astype(np.int32))
    return Split(np.concatenate(images), np.concatenate(labels))

  if not os.path.isdir(path):
    raise DataError(f"--config.data.dir={path!r} is not a folder: point it at the folder of "
                    "train_data_batch_1 .. train_data_batch_10 and val_data.")
  train, test = read(_IMAGENET16_FILES), read(["val_data"])
  if not len(train.labels):
    raise DataError(f"{path}: no training image is labelled 1..{num_classes}: are these the "
                    "downsampled-ImageNet batches (labels 1..1000)?")
  return Dataset(train, test, num_classes, IMAGENET16_MEAN, IMAGENET16_STD, crop_padding=2)


_NPZ_FORM = "(N, H, W, C) uint8 with C = 1 or 3"


def load_npz(path: str) -> Dataset:
  """An image-classification set from a NumPy archive (`np.savez`), read without pickle.

  The archive holds `train_images`, (N, H, W, C) uint8 with C = 1 (grey) or 3 (RGB), and
  `train_labels`, (N,) integers in 0..num_classes - 1; optionally `test_images` and
  `test_labels` of the same form (without them the test split is empty). `num_classes` is
  the largest training label + 1 (at least 2); mean and std are the training images' per
  channel, on the 0-1 scale.

  Raises:
    DataError: the file is missing or unreadable, or an array is missing or of the wrong
      shape, dtype or range; the message names the file, the array and the expected form.
  """
  if not os.path.isfile(path):
    raise DataError(f"NumPy archive {path!r} not found: point --config.data.dir at an .npz "
                    f"file with train_images {_NPZ_FORM} and train_labels (N,).")
  try:
    # np.load guesses the format from the first bytes and takes anything else for a pickle,
    # which allow_pickle=False then refuses with advice to unpickle: check the bytes here.
    with open(path, "rb") as f:
      magic = f.read(6)
    if not magic.startswith(b"PK"):  # every zip file, so every np.savez archive
      kind = "a single .npy array" if magic == b"\x93NUMPY" else "not a zip file"
      raise DataError(f"{path} is {kind}, not an .npz archive: save the arrays with "
                      "np.savez(path, train_images=..., train_labels=...).")
    with np.load(path, allow_pickle=False) as archive:
      present = set(archive.files)
      missing = [k for k in ("train_images", "train_labels") if k not in present]
      test_keys = [k for k in ("test_images", "test_labels") if k in present]
      if len(test_keys) == 1:  # one without the other
        missing += [k for k in ("test_images", "test_labels") if k not in present]
      if missing:
        raise DataError(f"{path} lacks {', '.join(missing)} (it holds "
                        f"{', '.join(archive.files) or 'no arrays'}): save train_images "
                        f"{_NPZ_FORM} and train_labels (N,), and test_images and test_labels "
                        "together or not at all.")
      arrays = {k: archive[k] for k in ("train_images", "train_labels", *test_keys)}
  except DataError:
    raise
  except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as e:
    # ValueError: object arrays, which allow_pickle=False refuses to unpickle.
    raise DataError(f"Cannot read {path} as a NumPy archive ({e}): write it with np.savez "
                    f"and plain arrays, train_images {_NPZ_FORM} and train_labels (N,).") from None
  train = _npz_split(path, arrays["train_images"], arrays["train_labels"], "train")
  num_classes = max(int(train.labels.max()) + 1, 2)
  # The classifier's width is the largest label + 1: a stray label (10^6 for 10 classes)
  # would make it a million-way classifier, so every class up to it must have examples.
  present = np.unique(train.labels)
  if len(present) != int(train.labels.max()) + 1:
    missing = np.setdiff1d(np.arange(int(train.labels.max()) + 1), present, assume_unique=True)
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    raise DataError(f"{path}: train_labels run up to {train.labels.max()} but have no "
                    f"example of class {missing[0]}{more}; expected labels 0..K-1 with every "
                    "class present.")
  if test_keys:
    test = _npz_split(path, arrays["test_images"], arrays["test_labels"], "test")
    if test.images.shape[1:] != train.images.shape[1:]:
      raise DataError(f"{path}: test_images are {test.images.shape[1:]} and train_images "
                      f"{train.images.shape[1:]} (H, W, C): both splits need one image shape.")
    if len(test.labels) and test.labels.max() >= num_classes:
      raise DataError(f"{path}: test_labels has label {test.labels.max()}, but the largest "
                      f"training label is {num_classes - 1}: every class needs training "
                      "examples.")
  else:
    test = Split(train.images[:0], train.labels[:0])
  mean, std = _channel_stats(train.images)
  return Dataset(train, test, num_classes, mean, std)


def _npz_split(path, images, labels, name) -> Split:
  if images.ndim != 4 or images.dtype != np.uint8 or images.shape[-1] not in (1, 3):
    hint = " (add a channel axis: images[..., None])" if images.ndim == 3 else ""
    raise DataError(f"{path}: {name}_images has shape {images.shape} and dtype {images.dtype}; "
                    f"expected {_NPZ_FORM}{hint}.")
  if not len(images) and name == "train":
    raise DataError(f"{path}: train_images holds no images; expected (N, H, W, C) with "
                    "N > 0.")
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f"{path}: {name}_labels has shape {labels.shape} and dtype {labels.dtype}; "
                    "expected (N,) integers, one class index per image.")
  if len(labels) != len(images):
    raise DataError(f"{path}: {len(labels)} {name}_labels for {len(images)} {name}_images; "
                    "expected one label per image.")
  if len(labels) and (labels.min() < 0 or labels.max() > np.iinfo(np.int32).max):
    bad = labels.min() if labels.min() < 0 else labels.max()
    raise DataError(f"{path}: {name}_labels has label {bad}; expected class indices 0, 1, ... "
                    "(num_classes - 1).")
  return Split(np.ascontiguousarray(images), labels.astype(np.int32))


def _channel_stats(images, chunk=1024):
  """Per-channel mean and std of uint8 NHWC images on the 0-1 scale.

  In chunks, so a CIFAR-sized set does not need a float64 copy of itself (1.2 GB); in two
  passes, as sum((x - mean)^2) keeps the precision that E[x^2] - mean^2 loses.
  """
  channels = images.shape[-1]
  count = images.size // channels
  chunks = [images[i:i + chunk].reshape(-1, channels) for i in range(0, len(images), chunk)]
  mean = sum(c.sum(0, dtype=np.float64) for c in chunks) / count / 255
  squares = sum(np.square(c / 255 - mean).sum(0) for c in chunks)
  std = np.sqrt(squares / count)
  std = np.where(std > 0, std, 1.0)  # constant images: normalising must not divide by 0
  return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _concat(splits) -> Split:
  return Split(np.concatenate([s.images for s in splits]),
               np.concatenate([s.labels for s in splits]))


def load_cifar10_tfds(data_dir: str | None = None, name: str = "cifar10") -> Dataset:
  """CIFAR-10 (or `name="cifar100"`, its 100 fine labels) through `tfds.data_source`;
  downloads it once when it is not prepared.

  Offline and unprepared, `tfds` would retry its download for minutes; this checks the
  download host first and fails at once with a message saying how to provide the data.
  """
  import tensorflow_datasets as tfds

  # An empty data_dir makes tfds warn about each missing dataset_info.json; the DataError
  # below says what matters in one line.
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    prepared = builder.is_prepared()
  finally:
    logging.set_verbosity(verbosity)
  title = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}[name]
  local = ("--config.data.dir=<folder with the CIFAR-10 binary files, cifar-10-batches-bin>"
           if name == "cifar10" else "--config.data.dir=<the cifar-100-python folder, or an .npz>")
  if not prepared:
    if not _reachable(*_DOWNLOAD_HOST):
      raise DataError(
          f"{title} is not prepared in {builder.data_dir!r} and {_DOWNLOAD_HOST[0]} is "
          f"unreachable (offline?): run once with network access, or pass {local}.")
    try:
      builder.download_and_prepare(file_format="array_record")
    except ImportError as e:  # writing the records may need TensorFlow; reading does not
      raise DataError(f"Preparing {title} with tensorflow-datasets failed ({e}): install "
                      f"tensorflow-cpu once, or pass {local}.") from None
  sources = builder.as_data_source(split=["train", "test"])
  if name == "cifar100":
    return Dataset(*[_from_source(s) for s in sources], 100, CIFAR100_MEAN, CIFAR100_STD)
  return Dataset(*[_from_source(s) for s in sources], 10, CIFAR10_MEAN, CIFAR10_STD)


def _from_source(source) -> Split:
  examples = [source[i] for i in range(len(source))]
  images = np.stack([np.asarray(e["image"], np.uint8) for e in examples])
  labels = np.array([e["label"] for e in examples], np.int32)
  return Split(images, labels)


def _reachable(host: str, port: int, timeout: float = 3.0) -> bool:
  try:
    with socket.create_connection((host, port), timeout=timeout):
      return True
  except OSError:
    return False


def load_digits() -> Dataset:
  """scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels), shipped with the package.

  Small enough to search on a laptop CPU in a couple of minutes: the quick-start dataset.
  Pixels are scaled from 0-16 to 0-255; the last 297 images are the test split.
  """
  from sklearn.datasets import load_digits as sklearn_digits

  digits = sklearn_digits()
  images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  mean = (float(images[:1500].mean()) / 255,)
  std = (float(images[:1500].std()) / 255,)
  return Dataset(Split(images[:1500], labels[:1500]), Split(images[1500:], labels[1500:]),
                 10, mean, std)


ALPHA_SPLITS = ("train", "test_half", "nas_bench_201")


def search_halves(dataset: Dataset, config) -> tuple[Split, Split]:
  """The images that train the weights and those that train the alphas.

  Args:
    dataset: what `load` returned.
    config: the `data` part of a search config: `num_train` (0: all; else the first
      `num_train` training images), `train_portion`, and, optionally, `alpha_split` and
      `split_file`. `alpha_split`:
      - "train" (DARTS): the first `train_portion` of the training split trains the weights,
        the rest the alphas; with `split_file` (NAS-Bench-201's `cifar-split.txt`), its
        "train" and "valid" index lists instead.
      - "test_half" (NAS-Bench-201 on CIFAR-100 and ImageNet16-120): the whole training split
        trains the weights, the "xvalid" half of the test split the alphas, augmented like
        the training images; the halves are `split_file`'s (`cifar100-test-split.txt`,
        `imagenet-16-120-test-split.txt`), or without one a fixed random half (seed 0), not
        the benchmark's own.
      - "nas_bench_201": the benchmark's choice for the dataset: "train" for CIFAR-10,
        "test_half" for CIFAR-100 and ImageNet16-120.

  Raises:
    DataError: the split file is unreadable or its indices do not fit the dataset.
  """
  train = dataset.train
  if config.get("num_train"):
    train = Split(train.images[:config.num_train], train.labels[:config.num_train])
  mode = config.get("alpha_split") or "train"
  if mode == "nas_bench_201":
    mode = "test_half" if config.name in ("cifar100", "ImageNet16-120") else "train"
  split_file = config.get("split_file") or ""
  if mode == "train":
    if not split_file:
      return search_split(train, config.train_portion)
    lists = _read_split_file(split_file, ("train", "valid"))
    return tuple(_take(dataset.train, lists[k], split_file, k,
                       keep_below=config.get("num_train") or None) for k in ("train", "valid"))
  test = dataset.test
  if not len(test.labels):
    raise DataError(f"--config.data.alpha_split={mode}: {config.name} has no test split to "
                    "take the alphas' half from: use alpha_split=train.")
  if split_file:
    xvalid = _read_split_file(split_file, ("xvalid",))["xvalid"]
  else:
    n = len(test.labels)
    xvalid = np.sort(np.random.default_rng(0).permutation(n)[:n // 2])
  return train, _take(test, xvalid, split_file or "the seed-0 half", "xvalid")


def single_level_split(dataset: Dataset, config) -> tuple[Split, Split]:
  """SNAS' data: the whole training split (its first `config.num_train` images, 0: all) trains
  weights and alphas alike, and the test split is the search-validation set, only evaluated
  (SNAS-Series, SNAS/train_search.py: `train_queue` on the 50,000 training images,
  `valid_queue` on the test set).

  Raises:
    DataError: the dataset has no test split.
  """
  train = dataset.train
  if config.get("num_train"):
    train = Split(train.images[:config.num_train], train.labels[:config.num_train])
  if not len(dataset.test.labels):
    raise DataError(f"--config.hypergradient.method=single_level watches the test split, and "
                    f"{config.name} has none: use a dataset with one, or a bilevel method.")
  return train, dataset.test


def _read_split_file(path: str, keys) -> dict:
  """Index lists from NAS-Bench-201's split files: JSON, each value `["int", [i, ...]]`."""
  import json

  try:
    with open(path) as f:
      content = json.load(f)
  except (OSError, ValueError) as e:
    raise DataError(f"Cannot read the split file {path!r} ({getattr(e, 'strerror', None) or e})"
                    ": pass NAS-Bench-201's cifar-split.txt / cifar100-test-split.txt / "
                    "imagenet-16-120-test-split.txt, JSON.") from None
  out = {}
  for key in keys:
    value = content.get(key) if isinstance(content, dict) else None
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
      value = value[1]  # the release's typed form, ["int", [...]]
    if not isinstance(value, list) or not all(isinstance(i, (int, str)) for i in value):
      raise DataError(f"The split file {path} has no {key!r} list of indices (keys: "
                      f"{', '.join(content) if isinstance(content, dict) else 'none'}): "
                      f"--config.data.alpha_split needs {' and '.join(map(repr, keys))}.")
    try:
      out[key] = np.asarray([int(i) for i in value], np.int64)
    except ValueError:
      raise DataError(f"The split file {path}: {key!r} holds something that is not an "
                      "index.") from None
  return out


def _take(split: Split, rows, source: str, key: str, keep_below: int | None = None) -> Split:
  """The rows of `split` a split file lists; with `keep_below`, only those below it."""
  n = len(split.labels)
  outside = rows[(rows < 0) | (rows >= n)]
  if len(outside):
    raise DataError(f"{source}: {key!r} has index {outside[0]}, outside the {n} images of the "
                    "split: is it the split file of this dataset?")
  if keep_below is not None:
    rows = rows[rows < keep_below]  # --config.data.num_train: the first images only
  if not len(rows):
    raise DataError(f"{source}: no {key!r} index falls in the first {keep_below} images: raise "
                    "--config.data.num_train or set it to 0.")
  return Split(split.images[rows], split.labels[rows])


def search_split(train: Split, portion: float = 0.5) -> tuple[Split, Split]:
  """DARTS' split of the training set: the first `portion` trains the weights, the rest the
  alphas (the official code: the first 25,000 CIFAR-10 training images, then the last)."""
  n = int(len(train.labels) * portion)
  return (Split(train.images[:n], train.labels[:n]),
          Split(train.images[n:], train.labels[n:]))


class Batches:
  """Endless shuffled batches of a split, reshuffled every epoch, from a numpy generator.

  Drops the last partial batch (as DARTS' loaders effectively do for the alpha queue). The
  order is a function of (seed, epoch), so `epoch` and `index` are the whole position.
  """

  def __init__(self, split: Split, batch_size: int, seed: int, epoch: int = 0, index: int = 0):
    if batch_size > len(split.labels):
      raise DataError(f"batch size {batch_size} is larger than the {len(split.labels)} "
                      "examples of the split: lower --config.batch_size.")
    self.split, self.batch_size, self.seed = split, batch_size, seed
    self.epoch, self.index = epoch, index
    self.steps_per_epoch = len(split.labels) // batch_size
    self._order = self._permutation(epoch)

  def _permutation(self, epoch):
    return np.random.default_rng([self.seed, epoch]).permutation(len(self.split.labels))

  def __iter__(self):
    return self

  def __next__(self):
    if self.index >= self.steps_per_epoch:
      self.epoch, self.index = self.epoch + 1, 0
      self._order = self._permutation(self.epoch)
    rows = self._order[self.index * self.batch_size:(self.index + 1) * self.batch_size]
    self.index += 1
    return {"images": self.split.images[rows], "labels": self.split.labels[rows]}


def padded_batches(split: Split, batch_size: int, limit: int | None = None):
  """Yields `(batch, mask)` over the first `limit` (default: all) examples in order; the last
  batch is padded to full size with mask 0, so evaluation compiles one shape."""
  n = len(split.labels) if not limit else min(limit, len(split.labels))
  for start in range(0, n, batch_size):
    rows = np.arange(start, start + batch_size)
    mask = rows < n
    rows = np.where(mask, rows, 0)
    yield {"images": split.images[rows], "labels": split.labels[rows]}, mask.astype(np.float32)
