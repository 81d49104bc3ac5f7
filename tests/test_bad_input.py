"""The bad-input catalogue: each mistake gets one line naming the cause and the fix.

Every entry runs the real command line and must fail before anything compiles: a non-zero
exit status, one message line, no traceback, and an existing workdir left as it was. The
runs start together from one module fixture (a few at a time), so the whole catalogue costs
about as much as a few imports of JAX.
"""

import concurrent.futures
import fcntl
import json
import os
import pathlib
import re
import subprocess
import sys
import time
from typing import NamedTuple

import ml_collections
import numpy as np
import pytest

from darts_jax.data import images as data
from darts_jax.spaces.darts_cnn import genotypes
from darts_jax.spaces.darts_rnn import genotypes as rnn_genotypes
from darts_jax.train import tasks
from darts_jax.errors import WorkdirError

ROOT = pathlib.Path(__file__).resolve().parents[1]
IS_ROOT = os.geteuid() == 0  # root writes through chmod 0o500, so that entry needs a user

# Forces the one entry that needs "offline" to be offline on any machine: the real main.py,
# run as __main__, with the download host pointed at a port where nothing listens.
OFFLINE_MAIN = ("import runpy, sys; from darts_jax import data; "
                "data._DOWNLOAD_HOST = ('127.0.0.1', 9); sys.argv[0] = 'main.py'; "
                "runpy.run_path('main.py', run_name='__main__')")


class Case(NamedTuple):
  args: list  # after `python main.py`
  words: tuple  # must all be on the message line; words[0] starts it
  env: dict = {}
  main: tuple = ("main.py",)


class Result(NamedTuple):
  returncode: int
  output: str  # stderr + stdout
  seconds: float


def snapshot(folder):
  """Every file and folder under `folder`, files with their bytes."""
  tree = {}
  for path in sorted(pathlib.Path(folder).rglob("*")):
    tree[str(path.relative_to(folder))] = path.read_bytes() if path.is_file() else None
  return tree


def make_inputs(root):
  """Writes the bad inputs under `root`; returns {case name: Case}."""
  cnn = json.loads(genotypes.DARTS_V2.to_json())
  cnn["normal"][0][0] = "conv_9x9"
  (root / "unknown_op.json").write_text(json.dumps(cnn))
  rnn = json.loads(rnn_genotypes.RNN_DARTS_V2.to_json())
  rnn["recurrent"][0][0] = "conv_9x9"
  (root / "unknown_rnn_op.json").write_text(json.dumps(rnn))
  (root / "truncated.json").write_text(genotypes.DARTS_V2.to_json()[:40])
  (root / "empty").mkdir()
  (root / "cifar").mkdir()
  (root / "cifar" / "data_batch_1.bin").write_bytes(b"\0" * (2 * 3073 + 5))
  np.savez(root / "grey.npz", train_images=np.zeros((100, 28, 28), np.uint8),
           train_labels=np.zeros(100, np.int64))
  (root / "afile").write_text("not a folder")
  readonly = root / "readonly"
  readonly.mkdir()
  readonly.chmod(0o500)
  # An existing run's workdir: the runs pointed at it must leave it as it was.
  existing = root / "existing"
  (existing / "checkpoints" / "last" / "5").mkdir(parents=True)
  (existing / "checkpoints" / "last" / "5" / "data.bin").write_bytes(bytes(range(256)) * 4)
  (existing / "metrics.jsonl").write_text('{"step": 5, "loss": 1.0}\n')
  # A workdir whose run is live: the test process holds its lock (`live_lock`).
  (root / "live" / "checkpoints" / "last" / "7").mkdir(parents=True)
  (root / "live" / "checkpoints" / "last" / "7" / "data.bin").write_bytes(b"live" * 64)
  (root / "live" / "config.json").write_text("{}")
  # Config files that do not load, and one without a task.
  (root / "syntax.py").write_text("def get_config(:\n")
  (root / "no_task.py").write_text("import ml_collections\n\n\ndef get_config():\n"
                                   "  return ml_collections.ConfigDict({'seed': 0})\n")
  (root / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
  boolean = json.loads(genotypes.DARTS_V2.to_json())
  boolean["normal"][0][1] = True  # JSON true: an input index must be an integer
  (root / "boolean_index.json").write_text(json.dumps(boolean))
  labels = np.arange(40) % 10
  labels[7] = 10**6  # one stray label would make a 1,000,001-way classifier
  np.savez(root / "stray_label.npz", train_images=np.zeros((40, 8, 8, 3), np.uint8),
           train_labels=labels)

  two_devices = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  cases = {
      "unknown_config_key": Case(
          ["--config", "configs/quick_search.py", "--config.no_such_key=1"],
          ("Bad command line", "--config.no_such_key", "names no field", "config file")),
      "wrong_config_type": Case(
          ["--config", "configs/quick_search.py", "--config.batch_size=abc"],
          ("Bad command line", "--config.batch_size=abc", "invalid literal for int()",
           "has its type")),
      "unknown_op": Case(
          ["--config", "configs/cifar_eval.py", f"--config.genotype={root}/unknown_op.json",
           f"--workdir={existing}"],
          ("GenotypeError", "unknown_op.json", "Unknown op 'conv_9x9'", "known ops",
           "sep_conv_3x3")),
      "unknown_recurrent_op": Case(
          ["--config", "configs/ptb_eval.py", f"--config.genotype={root}/unknown_rnn_op.json"],
          ("GenotypeError", "unknown_rnn_op.json", "Unknown recurrent op 'conv_9x9'",
           "known ops", "sigmoid")),
      "malformed_genotype_json": Case(
          ["--config", "configs/cifar_eval.py", f"--config.genotype={root}/truncated.json"],
          ("GenotypeError", "truncated.json", "malformed", "genotype.json a search wrote")),
      "missing_genotype_file": Case(
          ["--config", "configs/cifar_eval.py", f"--config.genotype={root}/nowhere.json"],
          ("GenotypeError", "nowhere.json", "not found", "DARTS_V2")),
      "cifar_offline": Case(
          ["--config", "configs/cifar_search.py", f"--config.data.tfds_data_dir={root}/empty"],
          ("DataError", "not prepared", "unreachable", "--config.data.dir="),
          main=("-c", OFFLINE_MAIN)),
      "ptb_missing": Case(
          ["--config", "configs/ptb_search.py", f"--config.data.dir={root}/empty"],
          ("DataError", "No train split of the ptb corpus", "simple-examples.tgz",
           "--config.data.dir")),
      "imagenet16_missing": Case(
          ["--config", "configs/nb201_search.py", "--config.data.name=ImageNet16-120",
           f"--config.data.dir={root}/empty"],
          ("DataError", "ImageNet16", "train_data_batch_1 is missing", "--config.data.dir")),
      "cifar_record_size": Case(
          ["--config", "configs/cifar_search.py", f"--config.data.dir={root}/cifar"],
          ("DataError", "data_batch_1.bin", "6151 bytes", "3073-byte record")),
      "npz_image_shape": Case(
          ["--config", "configs/cifar_search.py", f"--config.data.dir={root}/grey.npz"],
          ("DataError", "grey.npz", "train_images has shape (100, 28, 28)",
           "expected (N, H, W, C) uint8 with C = 1 or 3")),
      "batch_not_divisible": Case(
          ["--config", "configs/quick_search.py", "--config.batch_size=33",
           f"--workdir={existing}"],
          ("ConfigError", "--config.batch_size=33 is not divisible by the 2 devices",
           "use a multiple of 2"), env=two_devices),
      "unknown_relaxation": Case(
          ["--config", "configs/quick_search.py", "--config.relaxation=sparsemax",
           f"--workdir={existing}"],
          ("ConfigError", "--config.relaxation='sparsemax' must be one of", "softmax")),
      "unroll_steps_with_finite_difference": Case(
          ["--config", "configs/ptb_search.py", "--config.hypergradient.unroll_steps=3",
           "--config.hypergradient.method=finite_difference", f"--workdir={existing}"],
          ("ConfigError", "finite_difference", "unroll_steps=1 only", "method=exact")),
      "unknown_exact_mode": Case(
          ["--config", "configs/toy_search.py", "--config.hypergradient.exact_mode=both",
           f"--workdir={existing}"],
          ("ConfigError", "--config.hypergradient.exact_mode='both' must be one of",
           "forward_over_reverse")),
      "workdir_under_a_file": Case(
          ["--config", "configs/quick_search.py", f"--workdir={root}/afile/run"],
          ("WorkdirError", f"Cannot write to --workdir={root}/afile/run", "is a file",
           "pass a writable folder")),
  }
  # Settings out of range (darts_jax/train/schema.py): each fails before anything is created.
  settings = {
      "negative_batch_size": ("quick_search", "batch_size=-8", "an integer >= 1"),
      "no_cells": ("quick_search", "model.layers=0", "an integer >= 1"),
      "negative_num_train": ("quick_search", "data.num_train=-8", "an integer >= 0"),
      "negative_eval_examples": ("quick_search", "eval_examples=-1", "an integer >= 0"),
      "zero_learning_rate": ("cifar_eval", "learning_rate=0.0", "a number > 0"),
      "nan_alpha_learning_rate": ("ptb_search", "alpha_learning_rate=nan", "a number > 0"),
      "zero_grad_clip": ("toy_search", "grad_clip=0.0", "a number > 0"),
      "zero_epochs": ("cifar_eval", "epochs=0", "an integer >= 1"),
      "negative_seed": ("quick_search", "seed=-1", "an integer from 0 to 2147483647"),
      "zero_channels": ("quick_search", "model.channels=0", "an integer >= 1"),
      "zero_every_steps": ("ptb_eval", "checkpoint.every_steps=0", "an integer >= 1"),
      "zero_log_every": ("toy_search", "log_every=0", "an integer >= 1"),
      "zero_keep": ("cifar_eval", "checkpoint.keep=0", "an integer >= 1"),
      "zero_train_portion": ("quick_search", "data.train_portion=0.0", "a number in (0, 1)"),
  }
  for name, (config, setting, allowed) in settings.items():
    cases[name] = Case(["--config", f"configs/{config}.py", f"--config.{setting}"],
                       ("ConfigError", f"--config.{setting} must be {allowed}"))
  cases.update({
      "missing_config_file": Case(
          ["--config", "configs/no_such_experiment.py"],
          ("Bad command line", "--config=configs/no_such_experiment.py does not exist",
           "configs/")),
      "config_syntax_error": Case(
          ["--config", f"{root}/syntax.py"],
          ("Bad config file", f"{root}/syntax.py, line 1", "Correct the file")),
      "config_without_task": Case(
          ["--config", f"{root}/no_task.py"],
          ("ConfigError", "--config.task=None is not one of", "cnn_search")),
      "deeply_nested_genotype": Case(
          ["--config", "configs/cifar_eval.py", f"--config.genotype={root}/deep.json"],
          ("GenotypeError", "deep.json", "nested too deeply")),
      "boolean_genotype_index": Case(
          ["--config", "configs/cifar_eval.py", f"--config.genotype={root}/boolean_index.json"],
          ("GenotypeError", "boolean_index.json", "('sep_conv_3x3', True)",
           "can only take inputs")),
      "npz_stray_label": Case(
          ["--config", "configs/quick_search.py", f"--config.data.dir={root}/stray_label.npz"],
          ("DataError", "stray_label.npz", "run up to 1000000", "no example of class 10")),
      "workdir_in_use": Case(
          ["--config", "configs/quick_search.py", f"--workdir={root}/live"],
          ("WorkdirError", f"--workdir={root}/live is in use by process {os.getpid()}",
           "another --workdir")),
  })
  if not IS_ROOT:
    cases["workdir_read_only"] = Case(
        ["--config", "configs/quick_search.py", f"--workdir={readonly}/run"],
        ("WorkdirError", f"Cannot write to --workdir={readonly}/run", "Permission denied",
         "pass a writable folder"))
  return cases


CASE_NAMES = ["unknown_config_key", "wrong_config_type", "unknown_op", "unknown_recurrent_op",
              "malformed_genotype_json", "missing_genotype_file", "cifar_offline",
              "ptb_missing", "imagenet16_missing", "cifar_record_size", "npz_image_shape", "batch_not_divisible",
              "unknown_relaxation", "unroll_steps_with_finite_difference",
              "unknown_exact_mode", "workdir_under_a_file", "workdir_read_only",
              "negative_batch_size", "no_cells", "negative_num_train", "negative_eval_examples",
              "zero_learning_rate", "nan_alpha_learning_rate", "zero_grad_clip", "zero_epochs",
              "negative_seed", "zero_channels", "zero_every_steps", "zero_log_every",
              "zero_keep", "zero_train_portion", "missing_config_file", "config_syntax_error",
              "config_without_task", "deeply_nested_genotype", "boolean_genotype_index",
              "npz_stray_label", "workdir_in_use"]


def run_case(case, workdir):
  # CPU only: on a GPU machine the device count would be the GPUs', and starting CUDA
  # would cost more than the whole check.
  env = {**os.environ, "JAX_PLATFORMS": "cpu", **case.env}
  args = case.args if any(a.startswith("--workdir") for a in case.args) else [
      *case.args, f"--workdir={workdir}"]
  start = time.perf_counter()
  out = subprocess.run([sys.executable, *case.main, *args], capture_output=True, text=True,
                       timeout=300, cwd=ROOT, env=env)
  return Result(out.returncode, out.stderr + out.stdout, time.perf_counter() - start)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
  """Runs every case; returns ({name: Result}, existing workdir, its snapshot before)."""
  root = tmp_path_factory.mktemp("bad_input")
  cases = make_inputs(root)
  assert set(cases) == set(CASE_NAMES) - ({"workdir_read_only"} if IS_ROOT else set())
  before = {name: snapshot(root / name) for name in ("existing", "live")}
  # The live run's lock, held by this process as by the run it stands for.
  lock = os.open(root / "live" / tasks.LOCK_FILE, os.O_RDWR | os.O_CREAT)
  fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
  os.write(lock, f"{os.getpid()}\n".encode())
  try:
    # A few at a time: each run is mostly Python importing JAX, on the CI machine's 2 cores.
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
      futures = {name: pool.submit(run_case, case, root / "workdirs" / name)
                 for name, case in cases.items()}
      results = {name: future.result() for name, future in futures.items()}
  finally:
    os.close(lock)
  (root / "readonly").chmod(0o700)  # so pytest can clean up
  return cases, results, root, before


def message_lines(output):
  """The output's lines less logging and Python warnings (absl, JAX, tensorflow-datasets)."""
  lines, skip_next = [], False
  for line in output.splitlines():
    if skip_next:  # the source line a Python warning quotes
      skip_next = False
      continue
    if re.match(r"[IWEF]\d{4} \d\d:\d\d:\d\d", line):  # absl's log prefix
      continue
    if re.match(r"\S+:\d+: \w*Warning: ", line):
      skip_next = True
      continue
    if line.strip():
      lines.append(line)
  return lines


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_gets_one_line(catalogue, name):
  cases, results, _, _ = catalogue
  if name not in cases:
    pytest.skip("root can write to a chmod 0o500 folder")
  case, result = cases[name], results[name]
  assert result.returncode != 0, result.output
  assert "Traceback" not in result.output, result.output
  lines = message_lines(result.output)
  assert len(lines) == 1, result.output
  assert lines[0].startswith(case.words[0]), result.output
  for word in case.words:
    assert word in lines[0], (word, result.output)
  assert result.seconds < 60, f"{name} took {result.seconds:.0f} s: it should fail at once"


@pytest.mark.parametrize("folder,case", [("existing", "unknown_op"),
                                         ("existing", "batch_not_divisible"),
                                         ("live", "workdir_in_use")])
def test_bad_input_leaves_an_existing_workdir_as_it_was(catalogue, folder, case):
  cases, results, root, before = catalogue
  assert "--workdir=" + str(root / folder) in cases[case].args
  assert results[case].returncode
  after = snapshot(root / folder)
  after.pop(tasks.LOCK_FILE, None)  # the run's own lock file, if it got that far
  assert sorted(after) == sorted(before[folder])  # nothing added, nothing removed
  for path, content in before[folder].items():
    assert after[path] == content, f"{path} changed"


def test_bad_input_leaves_no_new_workdir(catalogue):
  cases, results, root, _ = catalogue
  for name, case in cases.items():
    if not any(a.startswith("--workdir") for a in case.args):
      assert results[name].returncode
      assert not (root / "workdirs" / name).exists(), f"{name} left its new workdir behind"


# --- The NumPy-archive loader, in process ------------------------------------------------------

def npz_config(path):
  return ml_collections.ConfigDict({"name": "cifar10", "dir": str(path), "tfds_data_dir": ""})


def test_npz_archive_loads(tmp_path):
  rng = np.random.default_rng(0)
  train_images = rng.integers(0, 256, (20, 6, 6, 3), dtype=np.uint8)
  train_labels = np.arange(20) % 4
  test_images = rng.integers(0, 256, (5, 6, 6, 3), dtype=np.uint8)
  np.savez(tmp_path / "set.npz", train_images=train_images, train_labels=train_labels,
           test_images=test_images, test_labels=np.array([0, 1, 2, 3, 0], np.uint8))
  dataset = data.load(npz_config(tmp_path / "set.npz"))
  assert dataset.train.images.shape == (20, 6, 6, 3) and dataset.test.images.shape == (5, 6, 6, 3)
  assert dataset.train.labels.dtype == dataset.test.labels.dtype == np.int32
  np.testing.assert_array_equal(dataset.train.images, train_images)
  np.testing.assert_array_equal(dataset.test.labels, [0, 1, 2, 3, 0])
  assert dataset.num_classes == 4
  pixels = train_images.reshape(-1, 3) / 255
  np.testing.assert_allclose(dataset.mean, pixels.mean(0), rtol=1e-6)
  np.testing.assert_allclose(dataset.std, pixels.std(0), rtol=1e-6)


def test_npz_archive_without_test_split_and_grey_images(tmp_path):
  images = np.full((10, 4, 4, 1), 51, np.uint8)  # constant: std 0 must not divide by 0
  np.savez(tmp_path / "grey.npz", train_images=images, train_labels=np.zeros(10, np.int32))
  dataset = data.load(npz_config(tmp_path / "grey.npz"))
  assert dataset.test.images.shape == (0, 4, 4, 1) and len(dataset.test.labels) == 0
  assert dataset.num_classes == 2  # a classifier needs two outputs at least
  np.testing.assert_allclose(dataset.mean, (0.2,))
  assert dataset.std == (1.0,)


GOOD = {"train_images": np.zeros((4, 3, 3, 3), np.uint8), "train_labels": np.arange(4)}


@pytest.mark.parametrize("arrays,words", [
    (dict(GOOD, train_images=np.zeros((4, 3, 3, 3), np.float32)),
     ["train_images has shape (4, 3, 3, 3) and dtype float32", "expected (N, H, W, C) uint8"]),
    (dict(GOOD, train_images=np.zeros((4, 3, 3, 2), np.uint8)), ["C = 1 or 3"]),
    (dict(GOOD, train_labels=np.arange(3)), ["3 train_labels for 4 train_images"]),
    (dict(GOOD, train_labels=np.arange(4) - 1), ["train_labels has label -1"]),
    (dict(GOOD, train_labels=np.arange(4.0)), ["train_labels", "dtype float64",
                                               "expected (N,) integers"]),
    ({"train_images": GOOD["train_images"]}, ["lacks train_labels"]),
    (dict(GOOD, test_images=GOOD["train_images"]), ["lacks test_labels"]),
    (dict(GOOD, test_images=GOOD["train_images"], test_labels=np.arange(4) + 1),
     ["test_labels has label 4", "largest training label is 3"]),
    (dict(GOOD, test_images=np.zeros((4, 5, 3, 3), np.uint8), test_labels=np.arange(4)),
     ["one image shape"]),
])
def test_npz_archive_errors_name_the_array(tmp_path, arrays, words):
  np.savez(tmp_path / "bad.npz", **arrays)
  with pytest.raises(data.DataError) as error:
    data.load(npz_config(tmp_path / "bad.npz"))
  message = str(error.value)
  assert "\n" not in message and "bad.npz" in message
  for word in words:
    assert word in message


def test_npz_archive_that_is_not_one(tmp_path):
  (tmp_path / "text.npz").write_text("hello")
  np.save(tmp_path / "array.npy", np.zeros(3))
  (tmp_path / "array.npy").rename(tmp_path / "array.npz")
  np.savez(tmp_path / "objects.npz", train_images=np.array([None, 1], object),
           train_labels=np.arange(2))
  for name, words in [("text.npz", "not a zip file"), ("array.npz", "a single .npy array"),
                      ("objects.npz", "Object arrays"), ("missing.npz", "not found")]:
    with pytest.raises(data.DataError, match=re.escape(words)):
      data.load(npz_config(tmp_path / name))


# --- The workdir probe, in process ---------------------------------------------------------------

def test_workdir_probe_leaves_nothing_behind(tmp_path):
  tasks.check_workdir(str(tmp_path / "new" / "run"))
  assert list((tmp_path / "new" / "run").iterdir()) == []


def test_workdir_probe_names_the_cause(tmp_path, monkeypatch):
  def refuse(*args, dir=None, **kwargs):  # what a read-only folder does to a non-root user
    raise PermissionError(13, "Permission denied", os.path.join(dir, ".write_probe_x"))

  monkeypatch.setattr(tasks.tempfile, "NamedTemporaryFile", refuse)
  with pytest.raises(WorkdirError) as error:
    tasks.check_workdir(str(tmp_path))
  assert str(error.value) == (f"Cannot write to --workdir={tmp_path} (Permission denied): "
                              "pass a writable folder.")


# --- One workdir, one process; Ctrl-C before the checkpoints open; a damaged metrics file ----

def test_a_second_process_on_a_workdir_is_refused(tmp_path):
  with tasks.lock_workdir(str(tmp_path)):
    # A second open file description, as another process would have: flock refuses it too.
    with pytest.raises(WorkdirError, match=f"is in use by process {os.getpid()} "):
      with tasks.lock_workdir(str(tmp_path)):
        pass
  with tasks.lock_workdir(str(tmp_path)):  # released when the run ends
    pass


def test_ctrl_c_outside_the_run_loop_is_one_line(tmp_path, monkeypatch, capsys):
  def interrupted(config, workdir):
    raise KeyboardInterrupt

  module = type(sys)("interrupted_task")
  module.train_and_evaluate = interrupted
  monkeypatch.setitem(sys.modules, "interrupted_task", module)
  monkeypatch.setitem(tasks.TASKS, "toy_search", "interrupted_task:train_and_evaluate")
  from configs import toy_search

  with pytest.raises(SystemExit) as stop:
    tasks.run(toy_search.get_config(), str(tmp_path / "run"))
  assert stop.value.code == 130
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("Interrupted (Ctrl-C): stopped without saving")


def test_a_damaged_metrics_file_is_repaired_with_a_warning(tmp_path, capsys):
  from darts_jax.train.metrics import MetricWriter

  (tmp_path / "metrics.jsonl").write_bytes(b'{"step": 1, "loss": 1.0}\n\xff\xfe garbage\n'
                                           b'{"step": 2, "loss": 0.5}\n{"step": 9, "loss": 0}\n'
                                           b'{"step": 3, "lo')  # the last: cut by a kill
  writer = MetricWriter(str(tmp_path), resume_step=2)
  writer.write(3, {"loss": 0.25})
  writer.close()
  steps = [json.loads(l)["step"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert steps == [1, 2, 3]
  assert "metrics.jsonl: dropped 1 unreadable line(s)." in capsys.readouterr().err
