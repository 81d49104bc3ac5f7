"""The ImageNet input pipeline on a tiny generated ImageFolder and a tiny imagenet2012."""

import importlib.util
import io
import time

import ml_collections
import numpy as np
import pytest
from PIL import Image

from darts_jax.data import imagenet as inet
from darts_jax.errors import DataError

CLASSES = ("n03", "n01", "n02")  # created out of order: labels follow the sorted names
SIZES = ((300, 200), (150, 400), (500, 375), (224, 224))  # (width, height)


def jpeg(width, height, seed):
  """Smooth random colours, so that crops and flips change the pixels."""
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
  image = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
  buffer = io.BytesIO()
  image.save(buffer, "JPEG", quality=90)
  return buffer.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("imagenet")
  for split, count in (("train", 4), ("val", 2)):
    for c, name in enumerate(CLASSES):
      (root / split / name).mkdir(parents=True)
      for k in range(count):
        width, height = SIZES[k]
        (root / split / name / f"{name}_{k}.JPEG").write_bytes(jpeg(width, height, 10 * c + k))
  return root


def load(folder):
  return inet.load_imagenet(ml_collections.ConfigDict({"dir": str(folder),
                                                       "tfds_data_dir": ""}))


def test_folder_labels_are_sorted_class_folders(folder):
  data = load(folder)
  assert data.num_classes == 3 and data.train.classes == ["n01", "n02", "n03"]
  assert (len(data.train), len(data.validation)) == (12, 6)
  assert (data.mean, data.std) == (inet.MEAN, inet.STD)
  for source in (data.train, data.validation):
    for i in range(len(source)):
      image, label = source.read(i)
      assert source.name(i).split("/")[-2] == data.train.classes[label]
      assert image[:2] == b"\xff\xd8"  # JPEG bytes, decoded later in the threads


def test_train_batches_are_deterministic_per_seed_and_epoch(folder):
  source = load(folder).train
  with inet.TrainBatches(source, 4, seed=0, num_workers=2) as batches:
    epoch0 = [next(batches) for _ in range(3)]
    assert batches.steps_per_epoch == 3 and (batches.epoch, batches.index) == (0, 3)
    epoch1 = next(batches)
    assert (batches.epoch, batches.index) == (1, 1)
  assert epoch0[0]["images"].shape == (4, 224, 224, 3) and epoch0[0]["images"].dtype == np.uint8
  assert epoch0[0]["labels"].dtype == np.int32
  order = np.random.default_rng([0, 0]).permutation(12)
  np.testing.assert_array_equal(np.concatenate([b["labels"] for b in epoch0]),
                                source.labels[order])
  # Resuming at (epoch 0, index 1) gives the second batch again, crops and jitter included.
  with inet.TrainBatches(source, 4, seed=0, index=1, num_workers=1, prefetch=1) as resumed:
    np.testing.assert_array_equal(next(resumed)["images"], epoch0[1]["images"])
  with inet.TrainBatches(source, 4, seed=0, epoch=1, num_workers=2) as again:
    np.testing.assert_array_equal(next(again)["images"], epoch1["images"])
  assert not np.array_equal(epoch1["images"], epoch0[0]["images"])


def test_each_host_takes_its_slice_of_the_global_batch(folder):
  source = load(folder).train
  whole = next(inet.TrainBatches(source, 4, seed=3, process_index=0, process_count=1))
  halves = [next(inet.TrainBatches(source, 4, seed=3, process_index=p, process_count=2))
            for p in (0, 1)]
  assert halves[0]["images"].shape == (2, 224, 224, 3)
  for key in ("images", "labels"):
    np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), whole[key])
  with pytest.raises(DataError, match="multiple"):
    inet.TrainBatches(source, 3, seed=0, process_index=0, process_count=2)


def test_eval_transform_is_resize_256_then_centre_224(folder):
  for width, height in SIZES[:2]:
    data = jpeg(width, height, seed=5)
    image = Image.open(io.BytesIO(data)).convert("RGB")
    scale = 256 / min(width, height)
    size = (256, int(height * scale)) if width <= height else (int(width * scale), 256)
    resized = image.resize(size, Image.Resampling.BILINEAR)
    left, top = round((size[0] - 224) / 2), round((size[1] - 224) / 2)
    expected = np.asarray(resized.crop((left, top, left + 224, top + 224)))
    np.testing.assert_array_equal(inet.eval_transform(data), expected)


def test_eval_batches_pad_the_last_batch_and_split_per_host(folder):
  source = load(folder).validation
  pairs = list(inet.eval_batches(source, 4, num_workers=2, process_index=0, process_count=1))
  (first, _), (last, mask) = pairs
  assert first["images"].shape == last["images"].shape == (4, 224, 224, 3)
  np.testing.assert_array_equal(mask, [1, 1, 0, 0])
  assert mask.dtype == np.float32 and not last["images"][2:].any()
  np.testing.assert_array_equal(np.concatenate([first["labels"], last["labels"]])[:6],
                                source.labels)
  np.testing.assert_array_equal(first["images"][1], inet.eval_transform(source.read(1)[0]))
  second_host = list(inet.eval_batches(source, 4, process_index=1, process_count=2))
  assert len(second_host) == 2 and second_host[0][0]["images"].shape == (2, 224, 224, 3)
  np.testing.assert_array_equal(second_host[1][1], [0, 0])
  np.testing.assert_array_equal(second_host[0][0]["images"], first["images"][2:])


def test_random_resized_crop_box_stays_inside_and_in_bounds():
  rng = np.random.default_rng(0)
  scales = []
  for width, height in ((500, 375), (300, 200), (150, 400), (64, 64)):
    for _ in range(500):
      left, top, w, h = inet.random_resized_crop_box(width, height, rng)
      assert 0 <= left and left + w <= width and 0 <= top and top + h <= height
      # Bounds up to the rounding of w and h to whole pixels.
      assert (w + 0.5) / (h - 0.5) >= 3 / 4 and (w - 0.5) / (h + 0.5) <= 4 / 3
      assert (w + 0.5) * (h + 0.5) >= 0.08 * width * height
      scales.append(w * h / (width * height))
  assert min(scales) < 0.12 and max(scales) > 0.9  # the whole range is drawn
  # Too thin for any try: the centred crop with the aspect ratio clamped to 4/3.
  assert inet.random_resized_crop_box(1000, 20, rng) == (486, 0, 27, 20)
  assert inet.random_resized_crop_box(20, 1000, rng) == (0, 486, 20, 27)


def test_colour_jitter_of_zero_strength_is_the_identity():
  image = Image.open(io.BytesIO(jpeg(64, 48, seed=1)))
  rng = np.random.default_rng(0)
  same = inet.color_jitter(image, rng, brightness=0, contrast=0, saturation=0, hue=0)
  np.testing.assert_array_equal(np.asarray(same), np.asarray(image))
  jittered = inet.color_jitter(image, rng)
  assert np.asarray(jittered).shape == (48, 64, 3)
  assert not np.array_equal(np.asarray(jittered), np.asarray(image))


def test_training_flip_happens_about_half_the_time():
  # A grey ramp brightening to the right: crops, resizing and colour jitter keep the right
  # side brighter unless the image was flipped.
  ramp = np.repeat(np.linspace(64, 160, 48).astype(np.uint8)[None, :, None], 32, axis=0)
  ramp = np.repeat(ramp, 3, axis=2)
  flipped = 0
  for i in range(200):
    out = inet.train_transform(ramp, inet.example_rng(0, 0, i), size=16).astype(float)
    left, right = out[:, :8].mean(), out[:, 8:].mean()
    assert left != right
    flipped += left > right
  assert 70 < flipped < 130


def test_missing_folder_is_a_one_line_data_error(tmp_path):
  with pytest.raises(DataError) as error:
    load(tmp_path / "nowhere")
  assert "\n" not in str(error.value) and "--config.data.dir" in str(error.value)
  (tmp_path / "train" / "n01").mkdir(parents=True)
  (tmp_path / "train" / "n01" / "a.JPEG").write_bytes(jpeg(32, 32, 0))
  with pytest.raises(DataError, match="val") as error:  # no validation split
    load(tmp_path)
  assert "\n" not in str(error.value) and "--config.data.dir" in str(error.value)
  (tmp_path / "val" / "n01").mkdir(parents=True)
  with pytest.raises(DataError, match="No images") as error:
    load(tmp_path)
  assert "\n" not in str(error.value)


def test_unprepared_tfds_imagenet_says_how_to_download_it(tmp_path):
  start = time.perf_counter()
  with pytest.raises(DataError) as error:
    inet.load_imagenet(ml_collections.ConfigDict({"dir": "", "tfds_data_dir": str(tmp_path)}))
  message = str(error.value)
  assert time.perf_counter() - start < 10
  assert "\n" not in message and "--config.data.dir" in message
  assert str(tmp_path / "downloads" / "manual") in message
  assert "ILSVRC2012_img_train.tar" in message and "tfds build imagenet2012" in message


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None,
                    reason="checks the error raised where TensorFlow is not installed")
def test_preparing_tfds_imagenet_without_tensorflow_is_a_one_line_data_error(tmp_path):
  manual = tmp_path / "downloads" / "manual"
  manual.mkdir(parents=True)
  for name in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
    (manual / name).write_bytes(b"")
  with pytest.raises(DataError, match="TensorFlow") as error:
    inet.load_tfds(str(tmp_path))
  assert "\n" not in str(error.value)


def write_tfds_imagenet(data_dir, counts):
  """A prepared imagenet2012 with a few JPEGs per split, written without TensorFlow.

  `tfds.testing.mock_data` does not serve here: its data sources report the builder as
  unprepared, and with `decoders` (SkipDecoding) it encodes its random images with
  TensorFlow. Serialising examples whose image is already JPEG bytes needs no TensorFlow, so
  this writes real array_record files and metadata, and the test reads them as in a run.
  """
  import tensorflow_datasets as tfds
  from array_record.python import array_record_module

  builder = tfds.builder("imagenet2012", data_dir=str(data_dir), file_format="array_record")
  features = builder.info.features
  builder.data_path.mkdir(parents=True)
  splits = []
  for split, count in counts.items():
    template = tfds.core.ShardedFileTemplate(
        data_dir=builder.data_path, template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
        dataset_name="imagenet2012", split=split, filetype_suffix="array_record")
    writer = array_record_module.ArrayRecordWriter(
        str(template.sharded_filepath(shard_index=0, num_shards=1)), "group_size:1")
    num_bytes = 0
    for i in range(count):
      record = features.serialize_example({"image": jpeg(*SIZES[i % 4], seed=i),
                                           "label": 7 * i, "file_name": f"{i}.JPEG"})
      writer.write(record)
      num_bytes += len(record)
    writer.close()
    splits.append(tfds.core.SplitInfo(name=split, shard_lengths=[count], num_bytes=num_bytes,
                                      filename_template=template))
  builder.info.set_splits(tfds.core.SplitDict(splits))
  builder.info.write_to_directory(builder.data_path)


def test_tfds_imagenet_is_read_as_jpeg_bytes_without_tensorflow(tmp_path):
  write_tfds_imagenet(tmp_path, {"train": 6, "validation": 3})
  data = inet.load_imagenet(ml_collections.ConfigDict({"dir": "",
                                                       "tfds_data_dir": str(tmp_path)}))
  assert (len(data.train), len(data.validation), data.num_classes) == (6, 3, 1000)
  image, label = data.validation.read(2)
  assert isinstance(image, bytes) and image == jpeg(*SIZES[2], seed=2) and label == 14
  batch = next(inet.TrainBatches(data.train, 4, seed=0, num_workers=2, process_index=0,
                                 process_count=1))
  order = np.random.default_rng([0, 0]).permutation(6)[:4]
  np.testing.assert_array_equal(batch["labels"], 7 * order)
  assert batch["images"].shape == (4, 224, 224, 3)
  ((evaluated, mask),) = inet.eval_batches(data.validation, 4, process_index=0,
                                           process_count=1)
  np.testing.assert_array_equal(mask, [1, 1, 1, 0])
  np.testing.assert_array_equal(evaluated["images"][0],
                                inet.eval_transform(jpeg(*SIZES[0], seed=0)))
