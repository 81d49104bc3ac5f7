"""RunCheckpoints (rolling saves, fallback past unreadable checkpoints, the config record) and,
through the command line, a corrupt checkpoint, a NaN mid-run, and what each leaves behind."""

import hashlib
import json
import pathlib
import shutil
import subprocess
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from darts_jax.train import checkpoints
from darts_jax.errors import NonFiniteLossError
from tests.test_rnn import write_corpus

ROOT = pathlib.Path(__file__).resolve().parents[1]


class State(NamedTuple):
  weights: dict
  opt_state: object
  key: jax.Array


def make_state(scale):
  weights = {"w": jnp.arange(6.0).reshape(2, 3) * scale, "b": jnp.ones(3) * scale}
  opt = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1, momentum=0.9))
  return State(weights, opt.init(weights), jax.random.PRNGKey(scale))


def make_config(**checkpoint):
  config = ml_collections.ConfigDict({"task": "x", "learning_rate": 0.1, "progress_bar": True})
  config.checkpoint = ml_collections.ConfigDict(
      {"every_steps": 2, "keep": 2, "resume_changed": False, **checkpoint})
  return config


def save_steps(workdir, steps, config=None):
  with checkpoints.RunCheckpoints(str(workdir), config or make_config()) as ckpt:
    for step in steps:
      ckpt.save(step, make_state(step), {"epoch": step, "history": [0.5, float("inf")]})
    return ckpt.steps


def tree_equal(a, b):
  return jax.tree.structure(a) == jax.tree.structure(b) and all(
      np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def files_digest(folder):
  return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(pathlib.Path(folder).rglob("*")) if p.is_file()}


def test_keeps_the_newest_and_restores_state_and_position(tmp_path):
  assert save_steps(tmp_path, [2, 4, 6]) == [4, 6]  # keep=2
  with checkpoints.RunCheckpoints(str(tmp_path), make_config()) as ckpt:
    state, meta = ckpt.restore(make_state(0))
  assert tree_equal(state, make_state(6)) and isinstance(state, State)
  assert meta == {"epoch": 6, "history": [0.5, float("inf")], "step": 6}
  assert json.loads((tmp_path / "config.json").read_text())["learning_rate"] == 0.1


def test_a_fresh_workdir_restores_nothing(tmp_path):
  with checkpoints.RunCheckpoints(str(tmp_path / "new"), make_config()) as ckpt:
    assert ckpt.restore(make_state(0)) is None


def truncate_arrays(step_dir):
  for path in (step_dir / "state").rglob("*"):
    if path.is_file() and path.parent.name == "d":  # the array data files
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_an_unreadable_checkpoint_is_set_aside_and_the_previous_used(tmp_path, capsys):
  save_steps(tmp_path, [2, 4])
  truncate_arrays(tmp_path / "checkpoints" / "last" / "4")
  with checkpoints.RunCheckpoints(str(tmp_path), make_config()) as ckpt:
    state, meta = ckpt.restore(make_state(0))
    assert meta["step"] == 2 and tree_equal(state, make_state(2))
    ckpt.save(4, make_state(40), {"epoch": 4})  # the step can be written again
  warning = capsys.readouterr().err.strip().splitlines()
  assert len(warning) == 1 and warning[0].startswith("warning: checkpoint at step 4 is "
                                                     "unreadable (")
  assert warning[0].endswith("and resumed from step 2 instead.")
  assert (tmp_path / "checkpoints" / "unreadable" / "4" / "state").is_dir()  # kept, not lost


def flip_a_byte(step_dir):
  path = next(p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d")
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0xFF
  path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flipped byte", "truncated, no checksums"])
def test_damage_is_found_by_checksum_or_by_orbax(tmp_path, capsys, damage):
  save_steps(tmp_path, [2, 4])
  step_dir = tmp_path / "checkpoints" / "last" / "4"
  if damage == "flipped byte":  # same size: only the checksum notices
    flip_a_byte(step_dir)
  else:  # as if killed between Orbax's save and the checksums: Orbax's read fails
    (step_dir / checkpoints._CHECKSUMS).unlink()
    truncate_arrays(step_dir)
  with checkpoints.RunCheckpoints(str(tmp_path), make_config()) as ckpt:
    state, meta = ckpt.restore(make_state(0))
  assert meta["step"] == 2 and tree_equal(state, make_state(2))
  err = capsys.readouterr().err
  assert "checkpoint at step 4 is unreadable (" in err
  assert ("does not match its checksum" in err) == (damage == "flipped byte")


def test_no_readable_checkpoint_is_an_error_that_touches_nothing(tmp_path):
  save_steps(tmp_path, [2, 4])
  for step in (2, 4):
    truncate_arrays(tmp_path / "checkpoints" / "last" / str(step))
  before = files_digest(tmp_path)
  with pytest.raises(checkpoints.CheckpointError, match="No checkpoint in .* reads back"):
    with checkpoints.RunCheckpoints(str(tmp_path), make_config()) as ckpt:
      ckpt.restore(make_state(0))
  assert files_digest(tmp_path) == before


def test_partial_writes_of_a_killed_save_are_removed(tmp_path):
  save_steps(tmp_path, [2])
  partial = tmp_path / "checkpoints" / "last" / "4.orbax-checkpoint-tmp-1234"
  (partial / "state").mkdir(parents=True)
  with checkpoints.RunCheckpoints(str(tmp_path), make_config()) as ckpt:
    assert ckpt.restore(make_state(0))[1]["step"] == 2
  assert not partial.exists()


def test_resuming_with_another_config_is_refused_unless_asked(tmp_path, capsys):
  save_steps(tmp_path, [2])
  changed = make_config()
  changed.learning_rate = 0.2
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"different config \(learning_rate: 0.1 -> 0.2\).*resume_changed"):
    checkpoints.RunCheckpoints(str(tmp_path), changed)
  changed.progress_bar = False  # display settings are not part of the computation
  changed.learning_rate = 0.1
  checkpoints.RunCheckpoints(str(tmp_path), changed).close()
  changed = make_config(resume_changed=True)
  changed.learning_rate = 0.2
  with checkpoints.RunCheckpoints(str(tmp_path), changed) as ckpt:
    assert ckpt.restore(make_state(0))[1]["step"] == 2
  assert "warning: resuming with changed settings: learning_rate: 0.1 -> 0.2" in (
      capsys.readouterr().err)


def test_a_state_with_nan_is_never_saved(tmp_path):
  bad = make_state(1)._replace(weights={"w": jnp.full((2, 3), jnp.nan), "b": jnp.ones(3)})
  with checkpoints.RunCheckpoints(str(tmp_path), make_config()) as ckpt:
    ckpt.save(2, make_state(2), {})
    with pytest.raises(NonFiniteLossError, match="after step 4 holds NaN or inf.*step 2"):
      ckpt.save(4, bad, {})
    assert ckpt.steps == [2]


# Through the command line, on a tiny recurrent evaluation (a few seconds to compile).

def ptb_eval(workdir, folder, *extra):
  return subprocess.run(
      [sys.executable, "main.py", "--config", "configs/ptb_eval.py", f"--workdir={workdir}",
       f"--config.data.dir={folder}", "--config.genotype=DARTS_V1",
       "--config.model.embed_size=8", "--config.model.hidden_size=8", "--config.batch_size=4",
       "--config.bptt=8", "--config.max_seq_len_delta=0", "--config.window_bucket=8",
       "--config.progress_bar=False", "--config.checkpoint.every_steps=10", *extra],
      capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A finished 2-epoch run (checkpoints at the last few steps)."""
  root = tmp_path_factory.mktemp("ptb")
  folder = write_corpus(root / "ptb", lines=(150, 20, 20))
  out = ptb_eval(root / "run", folder, "--config.epochs=2")
  assert out.returncode == 0, out.stderr
  return root / "run", folder


def copy_run(finished_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(finished_run[0], workdir)
  return workdir


def test_corrupt_newest_checkpoint_through_main_falls_back(finished_run, tmp_path):
  workdir = copy_run(finished_run, tmp_path)
  steps = sorted(int(p.name) for p in (workdir / "checkpoints" / "last").iterdir())
  truncate_arrays(workdir / "checkpoints" / "last" / str(steps[-1]))
  out = ptb_eval(workdir, finished_run[1], "--config.epochs=2")
  assert out.returncode == 0, out.stderr
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and f"checkpoint at step {steps[-1]} is unreadable" in lines[0]
  assert f"resumed from step {steps[-2]} instead" in lines[0]
  # The run redid the steps from there, and ended where the first one did, bit for bit.
  first = json.loads((finished_run[0] / "summary.json").read_text())
  assert json.loads((workdir / "summary.json").read_text()) == first


def test_no_readable_checkpoint_through_main_is_one_line(finished_run, tmp_path):
  workdir = copy_run(finished_run, tmp_path)
  for step_dir in (workdir / "checkpoints" / "last").iterdir():
    truncate_arrays(step_dir)
  before = files_digest(workdir / "checkpoints")
  out = ptb_eval(workdir, finished_run[1], "--config.epochs=2")
  assert out.returncode == 1 and "Traceback" not in out.stderr
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("CheckpointError: No checkpoint in ")
  assert files_digest(workdir / "checkpoints") == before


def test_nan_mid_run_stops_with_one_line_and_keeps_the_checkpoints(finished_run, tmp_path):
  workdir = copy_run(finished_run, tmp_path)
  before = files_digest(workdir / "checkpoints")
  # Two more epochs at a learning rate that diverges at once.
  out = ptb_eval(workdir, finished_run[1], "--config.epochs=4", "--config.learning_rate=1e30",
                 "--config.checkpoint.resume_changed=True")
  assert out.returncode == 1 and "Traceback" not in out.stderr
  message = out.stderr.strip().splitlines()[-1]
  assert message.startswith("NonFiniteLossError: The ") and " at step " in message, message
  assert "changed settings" in out.stderr  # the one warning line before it
  after = files_digest(workdir / "checkpoints")
  assert all(after[name] == digest for name, digest in before.items())  # nothing damaged
  newest = max(int(p.name) for p in (workdir / "checkpoints" / "last").iterdir()
               if p.name.isdigit())
  state = checkpoints_state(workdir, newest)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state)
             if np.issubdtype(x.dtype, np.floating))


def checkpoints_state(workdir, step):
  path = workdir / "checkpoints" / "last" / str(step) / "state"
  return ocp.StandardCheckpointer().restore(path)
