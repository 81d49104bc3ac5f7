"""ImageNet (ILSVRC2012) input for DARTS' ImageNet evaluation (the mobile setting).

ImageNet does not fit in host memory as CIFAR-10 does (`darts_jax.data.images`) and its images come
in every size, so examples are read one at a time from a random-access source, decoded and
augmented on the host, and stacked into 224x224 uint8 batches.

* Sources: tensorflow-datasets' `imagenet2012` through `as_data_source` (array_record, read
  without TensorFlow), the image kept as JPEG bytes (`SkipDecoding`) so that decoding runs in
  this module's threads; or a folder in the official DARTS code's layout, train/<wnid>/*.JPEG
  and val/<wnid>/*.JPEG. Both give `len(source)` and `source.read(i) -> (image, label)`.
* Augmentation: the official torchvision pipeline, written with PIL and numpy. Training:
  RandomResizedCrop(224), RandomHorizontalFlip, ColorJitter(0.4, 0.4, 0.4, 0.2); evaluation:
  Resize(256), CenterCrop(224). Normalising with MEAN/STD is left to the device, where it
  fuses into the first convolution, and uint8 is a quarter of float32's bytes to transfer.
* Randomness: the epoch's order comes from `default_rng([seed, epoch])`, each example's crop,
  flip and jitter from `default_rng([seed, epoch, index])`: a run resumed at (epoch, index)
  sees the same batches, whatever the number of threads or hosts.
* Parallelism: PIL releases the GIL while it decodes, resizes and blends, so a thread pool
  scales with the cores, with no worker processes or shared memory. A couple of batches are
  prepared ahead, so that the accelerator does not wait for the host.
* Hosts: every host computes the same global order and prepares only its own contiguous
  1/process_count of each global batch.
"""

from __future__ import annotations

import collections
import concurrent.futures
import io
import math
import os
from typing import NamedTuple, Protocol

import numpy as np
from PIL import Image, ImageEnhance

from darts_jax.errors import DataError

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
IMAGE_SIZE = 224  # side of the training and evaluation crops
EVAL_RESIZE = 256  # short side before the evaluation centre crop
_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
_MANUAL_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
_FOLDER_FIX = ("pass --config.data.dir=<folder with train/<class>/*.JPEG and "
               "val/<class>/*.JPEG>")


class Source(Protocol):
  """Random access to (image, label) examples."""

  def __len__(self) -> int: ...

  def read(self, index: int) -> tuple[bytes | np.ndarray, int]: ...

  def name(self, index: int) -> str: ...


class ImageNetData(NamedTuple):
  train: Source
  validation: Source
  num_classes: int
  mean: tuple = MEAN
  std: tuple = STD


class FolderSource:
  """Images in `root/<class>/<file>`, labelled by the index of their sorted class folder."""

  def __init__(self, root: str, classes: list[str] | None = None):
    """Lists the images; `classes` (default: the folders found) fixes the label order."""
    if not os.path.isdir(root):
      raise DataError(f"ImageNet folder {root!r} does not exist: {_FOLDER_FIX} (the "
                      "validation images sorted into class folders too).")
    found = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    self.classes = found if classes is None else list(classes)
    label_of = {name: label for label, name in enumerate(self.classes)}
    unknown = [name for name in found if name not in label_of]
    if unknown:
      raise DataError(f"{root!r} has class folders that the training split lacks "
                      f"({', '.join(unknown[:3])}): {_FOLDER_FIX} with the same classes.")
    self.files, labels = [], []
    for name in found:
      folder = os.path.join(root, name)
      files = sorted(f for f in os.listdir(folder) if f.lower().endswith(_EXTENSIONS))
      self.files += [os.path.join(folder, f) for f in files]
      labels += [label_of[name]] * len(files)
    self.labels = np.array(labels, np.int32)
    if not self.files:
      raise DataError(f"No images in class folders under {root!r}: {_FOLDER_FIX}.")

  def __len__(self) -> int:
    return len(self.files)

  def read(self, index: int) -> tuple[bytes, int]:
    with open(self.files[index], "rb") as f:
      return f.read(), int(self.labels[index])

  def name(self, index: int) -> str:
    return self.files[index]


class TfdsSource:
  """A tensorflow-datasets data source of {"image": JPEG bytes or array, "label": int}."""

  def __init__(self, data_source, split: str):
    self.data_source, self.split = data_source, split

  def __len__(self) -> int:
    return len(self.data_source)

  def read(self, index: int) -> tuple[bytes | np.ndarray, int]:
    example = self.data_source[index]
    return example["image"], int(example["label"])

  def name(self, index: int) -> str:
    return f"imagenet2012 {self.split} example {index}"


def load_imagenet(config) -> ImageNetData:
  """ImageNet's train and validation sources, from `config.dir` or else tensorflow-datasets.

  Args:
    config: the data config; `dir` ("" = tensorflow-datasets) is a folder holding
      train/<class>/*.JPEG and val/<class>/*.JPEG; `tfds_data_dir` ("" = the tfds
      default, ~/tensorflow_datasets) is where `imagenet2012` is prepared.

  Returns:
    The sources, the number of classes (1000, or the training class folders) and MEAN/STD.

  Raises:
    DataError: the data is missing or unprepared; the message says how to provide it.
  """
  if config.get("dir"):
    return load_folder(config.dir)
  return load_tfds(config.get("tfds_data_dir") or None)


def load_folder(root: str) -> ImageNetData:
  """An ImageFolder-style copy of ImageNet: `root/train/<wnid>/*` and `root/val/<wnid>/*`."""
  if not os.path.isdir(root):
    raise DataError(f"ImageNet folder {root!r} does not exist: {_FOLDER_FIX}.")
  train = FolderSource(os.path.join(root, "train"))
  validation = FolderSource(os.path.join(root, "val"), classes=train.classes)
  return ImageNetData(train, validation, len(train.classes))


def load_tfds(data_dir: str | None = None) -> ImageNetData:
  """tensorflow-datasets' `imagenet2012` as random-access sources of JPEG bytes.

  ImageNet cannot be downloaded automatically: unless it is prepared, or its two tar files
  are in the builder's manual folder, this fails at once with a message saying what to do.
  """
  import tensorflow_datasets as tfds

  builder = tfds.builder("imagenet2012", data_dir=data_dir)
  if not builder.is_prepared():
    _prepare(builder)
  try:
    train, validation = builder.as_data_source(
        split=["train", "validation"], decoders={"image": tfds.decode.SkipDecoding()})
  except NotImplementedError:  # prepared as tfrecord, which has no random access
    raise DataError(
        f"imagenet2012 in {builder.data_dir} is not in the array_record format: convert it "
        "once with TensorFlow installed (`tfds convert_format --dataset_version_dir="
        f"{builder.data_dir} --out_file_format=array_record`), or {_FOLDER_FIX}.") from None
  return ImageNetData(TfdsSource(train, "train"), TfdsSource(validation, "validation"),
                      builder.info.features["label"].num_classes)


def _prepare(builder) -> None:
  root = builder.data_dir_root
  manual_dir = root / "downloads" / "manual"  # the default of tfds' DownloadConfig
  build = f"`tfds build imagenet2012 --file_format=array_record --data_dir={root}`"
  if not all((manual_dir / f).exists() for f in _MANUAL_FILES):
    raise DataError(
        f"ImageNet is not prepared in {root} and must be downloaded by hand: put "
        f"{' and '.join(_MANUAL_FILES)} (image-net.org) in {manual_dir} and prepare them "
        f"once with TensorFlow installed ({build}), or {_FOLDER_FIX}.")
  print(f"Preparing imagenet2012 from {manual_dir} into {root}: a one-off of a few hours.")
  try:
    builder.download_and_prepare(file_format="array_record")
  except ImportError as e:  # writing the records needs TensorFlow; reading them does not
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise DataError(f"Preparing imagenet2012 needs TensorFlow ({reason}): run {build} once "
                    f"where TensorFlow is installed, or {_FOLDER_FIX}.") from None


def decode(image: bytes | np.ndarray) -> Image.Image:
  """An RGB PIL image from encoded bytes or a uint8 array."""
  if isinstance(image, np.ndarray):
    pil = Image.fromarray(np.asarray(image, np.uint8))
  else:
    pil = Image.open(io.BytesIO(image))
  # ImageNet holds some greyscale and CMYK JPEGs.
  return pil if pil.mode == "RGB" else pil.convert("RGB")


def random_resized_crop_box(width: int, height: int, rng: np.random.Generator,
                            scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
  """torchvision's RandomResizedCrop box: (left, top, crop width, crop height).

  Area fraction uniform in `scale` and log aspect ratio (width / height) uniform in
  log(`ratio`), 10 tries; if no try fits in the image, the largest centred crop whose aspect
  ratio is clamped to `ratio`.
  """
  area = width * height
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      return int(rng.integers(0, width - w + 1)), top, w, h
  if width / height < ratio[0]:
    w, h = width, round(width / ratio[0])
  elif width / height > ratio[1]:
    w, h = round(height * ratio[1]), height
  else:
    w, h = width, height
  return (width - w) // 2, (height - h) // 2, w, h


def _shift_hue(image: Image.Image, shift: float) -> Image.Image:
  h, s, v = image.convert("HSV").split()
  # uint8 addition wraps around, as hue does around the colour circle.
  hue = np.asarray(h, np.uint8) + np.uint8(round(shift * 255) % 256)
  return Image.merge("HSV", (Image.fromarray(hue), s, v)).convert("RGB")


_ADJUST = (lambda im, f: ImageEnhance.Brightness(im).enhance(f),
           lambda im, f: ImageEnhance.Contrast(im).enhance(f),
           lambda im, f: ImageEnhance.Color(im).enhance(f),  # saturation
           _shift_hue)


def color_jitter(image: Image.Image, rng: np.random.Generator, brightness=0.4, contrast=0.4,
                 saturation=0.4, hue=0.2) -> Image.Image:
  """torchvision's ColorJitter: the four adjustments in a random order, random strengths.

  Brightness, contrast and saturation factors are uniform in [max(0, 1 - s), 1 + s], the hue
  shift uniform in [-hue, hue] of a turn; an adjustment of strength 0 is skipped.
  """
  strengths = (brightness, contrast, saturation, hue)
  factors = [rng.uniform(max(0.0, 1 - s), 1 + s) for s in strengths[:3]]
  factors.append(rng.uniform(-hue, hue))
  for op in rng.permutation(4):
    if strengths[op]:
      image = _ADJUST[op](image, factors[op])
  return image


def train_transform(image: bytes | np.ndarray, rng: np.random.Generator,
                    size: int = IMAGE_SIZE) -> np.ndarray:
  """Decode, random resized crop to `size`, flip with probability 1/2, colour jitter."""
  image = decode(image)
  left, top, w, h = random_resized_crop_box(*image.size, rng)
  image = image.crop((left, top, left + w, top + h)).resize((size, size),
                                                            Image.Resampling.BILINEAR)
  if rng.random() < 0.5:
    image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  return np.asarray(color_jitter(image, rng))


def eval_transform(image: bytes | np.ndarray, size: int = IMAGE_SIZE,
                   resize: int = EVAL_RESIZE) -> np.ndarray:
  """Decode, resize the short side to `resize` (bilinear), crop the centre `size` square."""
  image = decode(image)
  width, height = image.size
  if width <= height:
    new = (resize, int(resize * height / width))
  else:
    new = (int(resize * width / height), resize)
  image = image.resize(new, Image.Resampling.BILINEAR)
  left, top = int(round((new[0] - size) / 2)), int(round((new[1] - size) / 2))
  return np.asarray(image.crop((left, top, left + size, top + size)))


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
  """The generator of one example's augmentation, a function of its position alone."""
  return np.random.default_rng([seed, epoch, index])


def _host_rows(batch_size: int, process_index: int | None, process_count: int | None):
  if process_index is None or process_count is None:
    import jax
    process_index, process_count = jax.process_index(), jax.process_count()
  if batch_size % process_count:
    raise DataError(f"batch size {batch_size} is not a multiple of the {process_count} "
                    "hosts: set --config.batch_size to a multiple.")
  rows = batch_size // process_count
  return slice(process_index * rows, (process_index + 1) * rows)


class _Pending(NamedTuple):
  images: np.ndarray
  labels: np.ndarray
  indices: np.ndarray  # -1 for padding
  futures: list


def _submit(executor, source: Source, indices: np.ndarray, transform) -> _Pending:
  """Starts reading and transforming `indices` into a new batch; -1 stays black padding."""
  images = np.zeros((len(indices), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
  labels = np.zeros(len(indices), np.int32)

  def load(row, index):
    image, labels[row] = source.read(index)
    try:
      images[row] = transform(image, index)
    except (OSError, ValueError) as e:  # PIL's errors for truncated or unknown files
      raise DataError(f"Cannot decode {source.name(index)}: {e}") from None

  futures = [executor.submit(load, row, int(i)) for row, i in enumerate(indices) if i >= 0]
  return _Pending(images, labels, indices, futures)


def _collect(pending: _Pending) -> dict:
  for future in pending.futures:
    future.result()  # re-raises a worker's exception here
  return {"images": pending.images, "labels": pending.labels}


def _with_mask(pending: _Pending) -> tuple[dict, np.ndarray]:
  return _collect(pending), (pending.indices >= 0).astype(np.float32)


class TrainBatches:
  """Endless augmented training batches, reshuffled every epoch, prepared ahead in threads.

  `batch_size` is the global batch: each host (JAX process) yields its own contiguous
  `batch_size // process_count` rows of every global batch, {"images": uint8 (rows, 224,
  224, 3), "labels": int32 (rows,)}. As `darts_jax.data.images.Batches`, the last partial batch of
  an epoch is dropped and (epoch, index) is the whole position: give it to the constructor
  to resume (batches are prepared from there on as soon as the object exists).
  """

  def __init__(self, source: Source, batch_size: int, seed: int, epoch: int = 0,
               index: int = 0, *, num_workers: int | None = None, prefetch: int = 2,
               process_index: int | None = None, process_count: int | None = None):
    if batch_size > len(source):
      raise DataError(f"batch size {batch_size} is larger than the {len(source)} examples "
                      "of the split: lower --config.batch_size.")
    self.source, self.batch_size, self.seed = source, batch_size, seed
    self.epoch, self.index = epoch, index
    self.steps_per_epoch = len(source) // batch_size
    self._rows = _host_rows(batch_size, process_index, process_count)
    self._executor = concurrent.futures.ThreadPoolExecutor(
        num_workers or os.cpu_count() or 1, thread_name_prefix="imagenet_train")
    self._order_epoch, self._order = None, None
    self._cursor = (epoch, index)  # the next batch to submit
    self._pending = collections.deque(self._submit_next() for _ in range(max(1, prefetch)))

  def _submit_next(self) -> _Pending:
    epoch, index = self._cursor
    if index >= self.steps_per_epoch:
      epoch, index = epoch + 1, 0
    if self._order_epoch != epoch:
      rng = np.random.default_rng([self.seed, epoch])
      self._order_epoch, self._order = epoch, rng.permutation(len(self.source))
    self._cursor = (epoch, index + 1)
    indices = self._order[index * self.batch_size:(index + 1) * self.batch_size][self._rows]
    transform = lambda image, i: train_transform(image, example_rng(self.seed, epoch, i))
    return _submit(self._executor, self.source, indices, transform)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    pending = self._pending.popleft()
    self._pending.append(self._submit_next())
    batch = _collect(pending)
    if self.index >= self.steps_per_epoch:
      self.epoch, self.index = self.epoch + 1, 0
    self.index += 1
    return batch

  def close(self) -> None:
    """Stops the threads, dropping the batches prepared ahead."""
    self._executor.shutdown(wait=False, cancel_futures=True)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def eval_batches(source: Source, batch_size: int, *, num_workers: int | None = None,
                 prefetch: int = 2, process_index: int | None = None,
                 process_count: int | None = None):
  """One pass over `source` in order, resized and centre-cropped, in full-size batches.

  The last global batch is padded with black images and mask 0, so every batch has one
  shape (one compilation); weigh per-example metrics by the mask. As for TrainBatches,
  `batch_size` is global and each host yields its own `batch_size // process_count` rows.

  Yields:
    (batch, mask) as `darts_jax.data.images.padded_batches`: {"images": uint8 (rows, 224, 224, 3),
    "labels": int32 (rows,)} and float32 (rows,), 1 for real examples and 0 for padding.
  """
  rows = _host_rows(batch_size, process_index, process_count)
  num_batches = -(-len(source) // batch_size)
  padded = np.arange(num_batches * batch_size)
  padded[len(source):] = -1
  batches = (padded[b * batch_size:(b + 1) * batch_size][rows] for b in range(num_batches))
  transform = lambda image, i: eval_transform(image)
  executor = concurrent.futures.ThreadPoolExecutor(num_workers or os.cpu_count() or 1,
                                                   thread_name_prefix="imagenet_eval")
  try:
    pending = collections.deque()
    for indices in batches:
      pending.append(_submit(executor, source, indices, transform))
      if len(pending) > prefetch:
        yield _with_mask(pending.popleft())
    while pending:
      yield _with_mask(pending.popleft())
  finally:
    executor.shutdown(wait=False, cancel_futures=True)
