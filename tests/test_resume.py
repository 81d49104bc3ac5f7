"""Exact resume through the command line: SIGKILL and SIGTERM mid-run, then the same command.

The runs share a persistent compilation cache, so only the first compiles the search step.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

from configs import cifar_eval, ptb_eval, ptb_search
from darts_jax.train import checkpoints
from darts_jax.train import cnn_eval
from darts_jax.data import images as data
from darts_jax.train import rnn_eval
from darts_jax.train import rnn_search
from darts_jax.data import text as text_data
from tests.helpers import override
from tests.test_rnn import write_corpus

ROOT = pathlib.Path(__file__).resolve().parents[1]
# 3 epochs of 6 steps on 96 digits; checkpoints at steps 4, 6, 8, 12, 16, 18.
SEARCH = ["--config", "configs/quick_search.py", "--config.epochs=3",
          "--config.data.num_train=96", "--config.batch_size=8", "--config.model.channels=2",
          "--config.model.layers=3", "--config.checkpoint.every_steps=4",
          "--config.progress_bar=False"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  cache = tmp_path_factory.mktemp("jax_cache")
  return {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "1"}


def start(workdir, env, *extra):
  return subprocess.Popen([sys.executable, "main.py", *SEARCH, f"--workdir={workdir}", *extra],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def checkpoint_steps(workdir):
  """The complete checkpoints: those whose checksum manifest is written."""
  folder = pathlib.Path(workdir) / "checkpoints" / "last"
  return sorted(int(p.name) for p in folder.iterdir()
                if p.name.isdigit() and (p / checkpoints._CHECKSUMS).exists()) \
      if folder.is_dir() else []


def signal_after_checkpoint(process, workdir, after_step, signum, timeout=300):
  """Sends `signum` as soon as a checkpoint newer than `after_step` is complete."""
  deadline = time.time() + timeout
  while time.time() < deadline and process.poll() is None:
    if any(s > after_step for s in checkpoint_steps(workdir)):
      process.send_signal(signum)
      break
    time.sleep(0.01)
  out, err = process.communicate(timeout=timeout)
  return process.returncode, out, err


def final_state(workdir):
  step = max(checkpoint_steps(workdir))
  path = pathlib.Path(workdir) / "checkpoints" / "last" / str(step) / "state"
  return step, ocp.StandardCheckpointer().restore(path)


def check_search_outputs(workdir, stdout):
  """What an uninterrupted search through main.py leaves in its workdir."""
  assert "exact hypergradient" in stdout and "epoch 3/3" in stdout
  for name in ("genotype.json", "alphas.npz", "normal.png", "reduction.png", "alphas.png",
               "metrics.jsonl", "config.json", "genotypes/epoch_001.json",
               "genotypes/epoch_003.json"):
    assert (workdir / name).exists(), name
  assert list((workdir / "tensorboard").iterdir())
  assert checkpoint_steps(workdir) == [12, 16, 18]  # every 4 steps and each epoch's end, 3 kept
  alphas = np.load(workdir / "alphas.npz")
  assert alphas["softmax_normal_per_epoch"].shape == (3, 14, 8)
  # The alphas moved from their 1e-3 initialisation, and the genotype printed is the saved one.
  assert np.abs(alphas["normal"]).max() > 1e-3
  genotype = json.loads((workdir / "genotype.json").read_text())
  assert "derived genotype: " in stdout and genotype["normal"][0][0] in stdout


def test_killed_and_preempted_search_resumes_bit_for_bit(tmp_path, env):
  reference = start(tmp_path / "reference", env)
  out, err = reference.communicate(timeout=600)
  assert reference.returncode == 0, err
  check_search_outputs(tmp_path / "reference", out)

  run = tmp_path / "interrupted"
  code, _, err = signal_after_checkpoint(start(run, env), run, 0, signal.SIGKILL)
  assert code == -signal.SIGKILL, err
  assert not (run / "genotype.json").exists()  # killed before the end
  killed_at = max(checkpoint_steps(run))

  # Restarted with the same command, then Ctrl-C: like SIGTERM (which the in-process tests
  # below send), it saves where it stands, in one line after the notice, with status 130.
  code, out, err = signal_after_checkpoint(start(run, env), run, killed_at, signal.SIGINT)
  assert f"resuming from the checkpoint at step {killed_at}" in out
  assert code == 130 and "Traceback" not in err and "KeyboardInterrupt" not in err, err
  notice, message = err.strip().splitlines()[-2:]
  assert notice.startswith("Ctrl-C: stopping after this step, once its checkpoint is saved")
  assert message.startswith("Preempted: Ctrl-C: saved the checkpoint at step ")
  stopped_at = int(message.split("at step ")[1].split()[0])
  assert stopped_at in checkpoint_steps(run) and stopped_at > killed_at
  assert stopped_at < 18, "preempted too late to test anything"

  finished = start(run, env)
  out, err = finished.communicate(timeout=600)
  assert finished.returncode == 0, err
  assert f"resuming from the checkpoint at step {stopped_at}" in out

  for name in ("genotype.json", "genotypes/epoch_001.json", "genotypes/epoch_003.json"):
    assert (run / name).read_text() == (tmp_path / "reference" / name).read_text(), name
  ours, theirs = np.load(run / "alphas.npz"), np.load(tmp_path / "reference" / "alphas.npz")
  assert set(ours) == set(theirs)
  for key in ours:
    np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
  (step, ours), (ref_step, theirs) = final_state(run), final_state(tmp_path / "reference")
  assert step == ref_step == 18
  assert ours["alphas"]["normal"].shape == (14, 8)  # the README's example of reading one
  leaves, ref_leaves = jax.tree.leaves_with_path(ours), jax.tree.leaves_with_path(theirs)
  assert [p for p, _ in leaves] == [p for p, _ in ref_leaves] and len(leaves) > 50
  for (path, a), (_, b) in zip(leaves, ref_leaves):
    assert a.dtype == b.dtype and np.array_equal(a, b), jax.tree_util.keystr(path)
  # One line per epoch in the metrics, none twice after the restarts.
  epochs = [json.loads(l)["epoch"] for l in (run / "metrics.jsonl").read_text().splitlines()]
  assert epochs == [1, 2, 3]


# In-process: the trainers of evaluation and recurrent search, interrupted at a chosen step
# (a real SIGTERM to this process, or a crash), then resumed by calling them again.

class Crash(Exception):
  pass


def interrupt_at(monkeypatch, step, how):
  """Interrupts the next run after its `step`-th step: SIGTERM (handled by the run) or an
  exception standing in for a crash or SIGKILL (the run saves nothing more)."""
  original = checkpoints.RunCheckpoints.step_done

  def step_done(self, done, *args, **kwargs):
    if done == step:
      if how == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
      else:
        raise Crash(step)
    return original(self, done, *args, **kwargs)

  monkeypatch.setattr(checkpoints.RunCheckpoints, "step_done", step_done)


def assert_same_final_state(workdir, reference):
  (step, ours), (ref_step, theirs) = final_state(workdir), final_state(reference)
  assert step == ref_step
  leaves, ref_leaves = jax.tree.leaves_with_path(ours), jax.tree.leaves_with_path(theirs)
  assert [p for p, _ in leaves] == [p for p, _ in ref_leaves]
  for (path, a), (_, b) in zip(leaves, ref_leaves):
    assert np.array_equal(a, b), jax.tree_util.keystr(path)


def run_interrupted(train_and_evaluate, config, tmp_path, monkeypatch, step, how):
  """Reference run, then a run interrupted after `step` steps and resumed; returns both."""
  reference = train_and_evaluate(config, str(tmp_path / "reference"))
  with monkeypatch.context() as patch:
    interrupt_at(patch, step, how)
    with pytest.raises(checkpoints.Preempted if how == "sigterm" else Crash):
      train_and_evaluate(config, str(tmp_path / "run"))
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler was put back
  resumed = train_and_evaluate(config, str(tmp_path / "run"))
  assert_same_final_state(tmp_path / "run", tmp_path / "reference")
  return reference, resumed


def test_evaluation_training_on_tfds_mock_data_preempted_mid_epoch_resumes_exactly(
    tmp_path, monkeypatch):
  monkeypatch.setattr(data, "_reachable", lambda *args: True)  # "online": tfds is mocked
  config = override(cifar_eval.get_config(), **{
      "data.tfds_data_dir": str(tmp_path / "tfds"), "data.num_train": 32, "data.num_test": 12,
      "model.channels": 4, "model.layers": 3, "epochs": 2, "batch_size": 8,
      "progress_bar": False, "checkpoint.every_steps": 3})
  # 3 cells (the auxiliary head after the third), 4 steps per epoch: preempted after step 6,
  # in the second epoch (auxiliary head, cutout, drop path at the second epoch's rate).
  with tfds.testing.mock_data(num_examples=32):
    reference, resumed = run_interrupted(cnn_eval.train_and_evaluate, config, tmp_path,
                                         monkeypatch, 6, "sigterm")
  assert resumed == reference
  # What the run wrote.
  workdir = tmp_path / "reference"
  assert reference["parameters"] < reference["parameters_with_auxiliary"]
  assert 0 <= reference["best_test_accuracy"] <= 1 and reference["mult_adds"] > 0
  metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [m["epoch"] for m in metrics] == [1, 2]
  assert metrics[0]["drop_path_rate"] == 0 and metrics[1]["drop_path_rate"] == pytest.approx(0.1)
  assert all(np.isfinite(m["train_loss"]) and np.isfinite(m["test_loss"]) for m in metrics)
  assert json.loads((workdir / "summary.json").read_text()) == reference
  assert checkpoint_steps(workdir) == [4, 6, 8]
  assert any((workdir / "checkpoints" / "best").iterdir())


def rnn_config(base, folder, **overrides):
  config = base.get_config()
  return override(config, **{
      "data.dir": str(folder), "model.embed_size": 8, "model.hidden_size": 8,
      "batch_size": 4, "eval_batch_size": 2, "bptt": 8, "max_seq_len_delta": 0,
      "window_bucket": 8, "progress_bar": False, **overrides})


def test_recurrent_search_crashed_mid_epoch_resumes_exactly(tmp_path, monkeypatch):
  folder = write_corpus(tmp_path / "ptb", lines=(200, 30, 30))
  # First order: the resume is the trainer's, and the exact step's compile costs a minute.
  config = rnn_config(ptb_search, folder, epochs=2, **{"checkpoint.every_steps": 10,
                                                      "hypergradient.method": "first_order"})
  # Crashes after step 25: resumes from step 20, mid-epoch, with the streams' hidden states.
  reference, resumed = run_interrupted(rnn_search.train_and_evaluate, config, tmp_path,
                                       monkeypatch, 25, "crash")
  assert resumed["genotype"] == reference["genotype"]
  assert resumed["valid_ppl"] == reference["valid_ppl"]


def test_recurrent_evaluation_preempted_after_the_averaging_switch_resumes_exactly(
    tmp_path, monkeypatch):
  folder = write_corpus(tmp_path / "ptb", lines=(200, 30, 30))
  # lr 50 and nonmono 0: averaged SGD switches on after the second epoch (as in test_rnn).
  config = rnn_config(ptb_eval, folder, epochs=4, nonmono=0, learning_rate=50.0,
                      genotype="DARTS_V1", **{"checkpoint.every_steps": 10})
  corpus = text_data.load_corpus(str(folder), "ptb")
  streams = len(text_data.batchify(corpus.train, config.batch_size))
  windows = [len(text_data.epoch_window_lengths(np.random.default_rng([config.seed, e]),
                                                streams, 8, 8)) for e in range(3)]
  stop = windows[0] + windows[1] + windows[2] // 2  # mid third epoch, averaging on
  reference, resumed = run_interrupted(rnn_eval.train_and_evaluate, config, tmp_path,
                                       monkeypatch, stop, "sigterm")
  assert resumed == reference
  metrics = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert [m["averaging"] for m in metrics] == [0, 1, 1, 1]
