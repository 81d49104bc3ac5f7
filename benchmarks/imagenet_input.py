"""Throughput of the ImageNet input pipeline (darts_jax.data.imagenet) on the host CPUs.

    python benchmarks/imagenet_input.py [--images 256] [--batch 128] [--workers 1 2 4]

Writes `--images` synthetic JPEGs of ImageNet's typical size (mostly 500x375, some portrait,
quality 90, multi-scale noise so that decoding costs what a photograph costs) as an
ImageFolder in a temporary folder, then measures images/s of the training pipeline (read,
decode, random resized crop, flip, colour jitter, stacking) and of the evaluation pipeline
(read, decode, resize 256, centre crop 224) per number of threads (best of 3 runs), and the
cost of each training stage on one thread. The files sit in the page cache: disk reads are
not measured.
Results: benchmarks/results/imagenet_input.json and a markdown table on stdout.
"""

import argparse
import datetime
import io
import json
import os
import platform
import statistics
import tempfile
import time

import jax
import numpy as np
import PIL
from PIL import Image, features

from darts_jax.data import imagenet as inet

SHAPES = ((500, 375),) * 7 + ((375, 500),) * 2 + ((500, 333),)  # (width, height)


def synthetic_jpeg(rng, width, height):
  """Noise at several scales, like the edges and textures of a photograph."""
  image = np.zeros((height, width, 3), np.float32)
  for cells, amplitude in ((4, 60.0), (16, 40.0), (64, 25.0), (256, 20.0)):
    noise = rng.normal(0, amplitude, (3, cells * height // width + 1, cells)).astype(np.float32)
    image += np.stack([np.asarray(Image.fromarray(channel).resize(
        (width, height), Image.Resampling.BICUBIC)) for channel in noise], -1)
  image += rng.normal(0, 6, image.shape)  # sensor noise
  buffer = io.BytesIO()
  Image.fromarray(np.clip(image + 128, 0, 255).astype(np.uint8)).save(buffer, "JPEG",
                                                                      quality=90)
  return buffer.getvalue()


def write_folder(root, count, classes=4):
  rng = np.random.default_rng(0)
  sizes = []
  for i in range(count):
    folder = os.path.join(root, "train", f"n{i % classes:08d}")
    os.makedirs(folder, exist_ok=True)
    data = synthetic_jpeg(rng, *SHAPES[i % len(SHAPES)])
    sizes.append(len(data))
    with open(os.path.join(folder, f"{i}.JPEG"), "wb") as f:
      f.write(data)
  os.symlink(os.path.join(root, "train"), os.path.join(root, "val"))
  return sizes


class Timer:
  """Wall time, this process's CPU time, and the CPU time other processes took meanwhile
  (from /proc/stat; None elsewhere), so that runs slowed by other work can be told apart."""

  def __enter__(self):
    self.start = (time.perf_counter(), time.process_time(), machine_busy_s())
    return self

  def __exit__(self, *exc):
    wall, own, busy = (b - a if a is not None else None for a, b in zip(
        self.start, (time.perf_counter(), time.process_time(), machine_busy_s())))
    self.wall, self.own = wall, own
    self.other_cores = None if busy is None else max(0.0, (busy - own) / wall)


def machine_busy_s():
  try:
    with open("/proc/stat") as f:
      fields = [int(v) for v in f.readline().split()[1:]]
  except (OSError, ValueError):
    return None
  idle = fields[3] + fields[4]  # idle, iowait
  return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def best(runs, count):
  """The fastest run: other work on a shared machine only ever slows a run down."""
  timer = min(runs, key=lambda t: t.wall)
  return {"images_per_s": count / timer.wall, "images_per_cpu_s": count / timer.own,
          "other_processes_cores": timer.other_cores}


def train_rate(source, batch, workers, batches, repeats):
  """`repeats` runs of `batches` batches, after a first batch (thread start, prefetch)."""
  runs = []
  with inet.TrainBatches(source, batch, seed=0, num_workers=workers, process_index=0,
                         process_count=1) as it:
    next(it)
    for _ in range(repeats):
      with Timer() as timer:
        for _ in range(batches):
          next(it)
      runs.append(timer)
  return best(runs, batches * batch)


def eval_rate(source, batch, workers, repeats):
  """`repeats` passes over the split (padding not counted)."""
  runs = []
  for _ in range(repeats):
    with Timer() as timer:
      for _ in inet.eval_batches(source, batch, num_workers=workers, process_index=0,
                                 process_count=1):
        pass
    runs.append(timer)
  return best(runs, len(source))


def stage_costs(source, count=64):
  """Milliseconds per image of each training stage, cumulative, on one thread."""
  datas = [source.read(i)[0] for i in range(count)]
  stages = {
      "read file": lambda i: source.read(i),
      "decode": lambda i: inet.decode(datas[i]).load(),
      "+ random resized crop + flip": lambda i: crop_flip(datas[i], i),
      "+ colour jitter (whole training transform)":
          lambda i: inet.train_transform(datas[i], inet.example_rng(0, 0, i)),
      "evaluation transform": lambda i: inet.eval_transform(datas[i]),
  }
  costs = {}
  for name, fn in stages.items():
    times = []
    for _ in range(3):
      start = time.perf_counter()
      for i in range(count):
        fn(i)
      times.append((time.perf_counter() - start) / count)
    costs[name] = 1e3 * min(times)
  return costs


def crop_flip(data, i):
  rng = inet.example_rng(0, 0, i)
  image = inet.decode(data)
  left, top, w, h = inet.random_resized_crop_box(*image.size, rng)
  image = image.crop((left, top, left + w, top + h)).resize((224, 224),
                                                            Image.Resampling.BILINEAR)
  return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else image


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=256)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--batches", type=int, default=4, help="training batches per run")
  parser.add_argument("--repeats", type=int, default=3, help="runs per figure (best kept)")
  parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                    "imagenet_input.json"))
  args = parser.parse_args()

  with tempfile.TemporaryDirectory() as root:
    sizes = write_folder(root, args.images)
    data = inet.load_folder(root)
    costs = stage_costs(data.train)
    print({"jpeg_kb_mean": statistics.mean(sizes) / 1e3, **costs}, flush=True)
    rows = []
    for workers in args.workers:
      row = {"workers": workers,
             "train": train_rate(data.train, args.batch, workers, args.batches, args.repeats),
             "eval": eval_rate(data.validation, args.batch, workers, args.repeats)}
      rows.append(row)
      print(row, flush=True)

  record = {
      "benchmark": "imagenet_input", "date": datetime.date.today().isoformat(),
      "images": args.images, "batch": args.batch, "train_batches_per_run": args.batches,
      "repeats_best_of": args.repeats,
      "jpeg_kb_mean": statistics.mean(sizes) / 1e3, "jpeg_shapes": sorted(set(SHAPES)),
      "jax": jax.__version__, "pillow": PIL.__version__,
      "libjpeg_turbo": features.check_feature("libjpeg_turbo"),
      "cpu_count": os.cpu_count(), "machine": platform.machine(),
      "processor": platform.processor(), "python": platform.python_version(),
      "stage_ms_per_image": costs, "results": rows,
  }
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(record, f, indent=1)
  print(f"\nSynthetic JPEGs: {record['jpeg_kb_mean']:.0f} KB on average.\n")
  print("| stage (1 thread) | ms per image |\n| --- | --- |")
  for name, ms in costs.items():
    print(f"| {name} | {ms:.2f} |")
  print(f"\n| threads | training images/s (batch {args.batch}) | training images per CPU-s | "
        "evaluation images/s | evaluation images per CPU-s | other processes (cores) |")
  print("| --- | --- | --- | --- | --- | --- |")
  for r in rows:
    other = [r[k]["other_processes_cores"] for k in ("train", "eval")]
    other = "n/a" if None in other else f"{other[0]:.2f} / {other[1]:.2f}"
    print(f"| {r['workers']} | {r['train']['images_per_s']:.0f} | "
          f"{r['train']['images_per_cpu_s']:.0f} | {r['eval']['images_per_s']:.0f} | "
          f"{r['eval']['images_per_cpu_s']:.0f} | {other} |")


if __name__ == "__main__":
  main()
