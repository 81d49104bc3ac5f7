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
  path = next(p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d")
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0xFF
  path.write_bytes(bytes(data))


def write_manifest(step_dir, manifest):
  (step_dir / checkpoints._CHECKSUMS).write_text(json.dumps(manifest))


def manifest_of(step_dir):
  return json.loads((step_dir / checkpoints._CHECKSUMS).read_text())


# Each damage to the newest of two checkpoints: the restore must use the older one, say why in
# one warning, and set the damaged one aside. "no checksums, flipped byte" is a kill between
# Orbax's save and the manifest followed by a bit flip, which Orbax alone restores silently.
DAMAGES = {
    "flipped byte": (flip_a_byte, "does not match its checksum"),
    "no checksums, flipped byte": (
        lambda d: ((d / checkpoints._CHECKSUMS).unlink(), flip_a_byte(d)), "no checksum file"),
    "no checksums, intact": (lambda d: (d / checkpoints._CHECKSUMS).unlink(), "no checksum file"),
    "names /dev/zero": (lambda d: write_manifest(d, {**manifest_of(d), "/dev/zero": "0" * 64}),
                        "names '/dev/zero', outside the step folder"),
    "names ../..": (lambda d: write_manifest(d, {**manifest_of(d), "../../config.json": "0" * 64}),
                    "outside the step folder"),
    "a link": (lambda d: (d / "link").symlink_to("/dev/zero"), "link is not in its checksum file"),
    "a listed link": (lambda d: ((d / "link").symlink_to(d / "_CHECKPOINT_METADATA"),
                                 write_manifest(d, {**manifest_of(d), "link": "0" * 64})),
                      "link is not a regular file"),
    "a listed link out": (lambda d: ((d / "link").symlink_to("/dev/zero"),
                                     write_manifest(d, {**manifest_of(d), "link": "0" * 64})),
                          "names 'link', outside the step folder"),
    "manifest a list": (lambda d: write_manifest(d, [1, 2]), "not a map of file names"),
    "manifest of numbers": (lambda d: write_manifest(d, {k: 1 for k in manifest_of(d)}),
                            "not a map of file names"),
    "manifest cut short": (lambda d: (d / checkpoints._CHECKSUMS).write_text('{"a": '),
                           "checksum file is unreadable"),
    "a file missing": (lambda d: next(p for p in (d / "state").rglob("*") if p.is_file()
                                      and p.parent.name == "d").unlink(), "is missing"),
    "an extra file": (lambda d: (d / "state" / "extra").write_text("x"),
                      "state/extra is not in its checksum file"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_checkpoint_is_trusted_only_with_a_complete_manifest(tmp_path, capsys, damage):
  save_steps(tmp_path, [2, 4])
  step_dir = tmp_path / "checkpoints" / "last" / "4"
  do, cause = DAMAGES[damage]
  do(step_dir)
  with checkpoints.RunCheckpoints(str(tmp_path), make_config()) as ckpt:
    state, meta = ckpt.restore(make_state(0))
  assert meta["step"] == 2 and tree_equal(state, make_state(2))
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "checkpoint at step 4 is unreadable (" in err[0], err
  assert cause in err[0], err
  assert (tmp_path / "checkpoints" / "unreadable" / "4").is_dir()  # set aside, not deleted


def test_without_any_manifest_the_run_starts_over_unless_told_to_trust(tmp_path, capsys):
  save_steps(tmp_path / "a", [2])
  (tmp_path / "a" / "checkpoints" / "last" / "2" / checkpoints._CHECKSUMS).unlink()
  shutil.copytree(tmp_path / "a", tmp_path / "b")
  with checkpoints.RunCheckpoints(str(tmp_path / "a"), make_config()) as ckpt:
    assert ckpt.restore(make_state(0)) is None  # a fresh start
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("warning: checkpoint at step 2 has no checksum "
                                             "file"), err
  assert "trust_unverified=True" in err[0]
  assert (tmp_path / "a" / "checkpoints" / "unreadable" / "2" / "state").is_dir()  # kept
  with checkpoints.RunCheckpoints(str(tmp_path / "b"), make_config(trust_unverified=True)) \
      as ckpt:
    state, meta = ckpt.restore(make_state(0))
  assert meta["step"] == 2 and tree_equal(state, make_state(2))
  assert "warning: no checkpoint has complete checksums; resuming from step 2" in (
      capsys.readouterr().err)


def test_a_kill_during_a_deletion_leaves_no_half_deleted_step(tmp_path):
  save_steps(tmp_path, [2, 4])
  # What a kill during `_discard`'s rmtree leaves: part of a folder, out of sight.
  half = tmp_path / "checkpoints" / ".trash" / "last-0-123"
  (half / "state").mkdir(parents=True)
  with checkpoints.RunCheckpoints(str(tmp_path), make_config()) as ckpt:
    assert ckpt.restore(make_state(0))[1]["step"] == 4
    ckpt.save(6, make_state(6), {})
    assert ckpt.steps == [4, 6]
  assert not (tmp_path / "checkpoints" / ".trash").exists()


def test_a_failed_save_is_one_line_and_keeps_the_previous_step(tmp_path, monkeypatch):
  with checkpoints.RunCheckpoints(str(tmp_path), make_config()) as ckpt:
    ckpt.save(2, make_state(2), {})

    def full(*args, **kwargs):
      raise RuntimeError("save failed") from OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt._manager, "save", full)
    with pytest.raises(checkpoints.CheckpointError) as error:
      ckpt.save(4, make_state(4), {})
  assert str(error.value).startswith("Could not save the checkpoint at step 4 (No space left "
                                     "on device); the one at step 2 is kept")
  assert sorted(p.name for p in (tmp_path / "checkpoints" / "last").iterdir()) == ["2"]


def test_a_vanished_workdir_during_a_save_is_one_line(tmp_path, monkeypatch):
  original = checkpoints._write_checksums

  def vanish_first(step_dir):  # the workdir deleted between Orbax's write and the manifest
    shutil.rmtree(tmp_path / "run")
    original(step_dir)

  with pytest.raises(checkpoints.CheckpointError, match=r"^Could not save the checkpoint at "
                     r"step 4 \(No such file or directory\); the one at step 2 is kept"):
    with checkpoints.RunCheckpoints(str(tmp_path / "run"), make_config()) as ckpt:
      ckpt.save(2, make_state(2), {})
      monkeypatch.setattr(checkpoints, "_write_checksums", vanish_first)
      ckpt.save(4, make_state(4), {})


def test_best_checkpoints_are_verified_and_a_damaged_one_is_not_resumed_from(tmp_path, capsys):
  with checkpoints.RunCheckpoints(str(tmp_path), make_config(), best=True) as ckpt:
    ckpt.save_best(2, {"w": jnp.ones(3)})
    ckpt.save(2, make_state(2), {"best_step": 2})
    ckpt.save_best(4, {"w": jnp.ones(3) * 4})
    ckpt.save(4, make_state(4), {"best_step": 4})
  best = tmp_path / "checkpoints" / "best"
  assert (best / "4" / checkpoints._CHECKSUMS).is_file()
  flip_a_byte(best / "4")
  with checkpoints.RunCheckpoints(str(tmp_path), make_config(), best=True) as ckpt:
    state, meta = ckpt.restore(make_state(0))
    assert meta["best_step"] == 2  # the newest checkpoint whose best weights are intact
    np.testing.assert_array_equal(ckpt.restore_best({"w": jnp.zeros(3)}, step=2)["w"], 1.0)
    with pytest.raises(checkpoints.Damaged, match="checkpoints/best/4.*does not match"):
      ckpt.restore_best({"w": jnp.zeros(3)}, step=4)
  assert "checkpoints/best/4, cannot be used" in capsys.readouterr().err


@pytest.mark.parametrize("damage,words", [
    ("list", "config.json is unreadable (a JSON list, not a config)"),
    ("missing", "holds checkpoints but no config.json"),
    ("last a file", "checkpoints/last is a file"),
])
def test_a_damaged_config_record_or_folder_is_one_line_that_touches_nothing(tmp_path, damage,
                                                                           words):
  save_steps(tmp_path, [2])
  if damage == "list":
    (tmp_path / "config.json").write_text("[1, 2]")
  elif damage == "missing":
    (tmp_path / "config.json").unlink()
  else:
    shutil.rmtree(tmp_path / "checkpoints" / "last")
    (tmp_path / "checkpoints" / "last").write_text("x")
  before = files_digest(tmp_path)
  with pytest.raises(checkpoints.CheckpointError) as error:
    checkpoints.RunCheckpoints(str(tmp_path), make_config())
  assert words in str(error.value) and "\n" not in str(error.value)
  assert files_digest(tmp_path) == before


def test_a_missing_config_record_resumes_when_asked(tmp_path, capsys):
  save_steps(tmp_path, [2])
  (tmp_path / "config.json").unlink()
  with checkpoints.RunCheckpoints(str(tmp_path), make_config(resume_changed=True)) as ckpt:
    assert ckpt.restore(make_state(0))[1]["step"] == 2
  assert "config.json is missing; resuming with this command's config" in (
      capsys.readouterr().err)
  assert (tmp_path / "config.json").is_file()


def test_a_failed_resume_of_a_changed_config_keeps_the_record(tmp_path):
  save_steps(tmp_path, [2])
  record = (tmp_path / "config.json").read_bytes()
  changed = make_config(resume_changed=True)
  changed.learning_rate = 0.2
  other_shape = make_state(0)._replace(weights={"w": jnp.zeros((5, 5)), "b": jnp.ones(3)})
  with pytest.raises(checkpoints.CheckpointError, match="does not fit the changed settings"):
    with checkpoints.RunCheckpoints(str(tmp_path), changed) as ckpt:
      ckpt.restore(other_shape)
  assert (tmp_path / "config.json").read_bytes() == record  # the config that ran
  # A changed config that does resume keeps the earlier record beside the new one.
  with checkpoints.RunCheckpoints(str(tmp_path), changed) as ckpt:
    ckpt.restore(make_state(0))
  assert (tmp_path / "config.previous.json").read_bytes() == record
  assert json.loads((tmp_path / "config.json").read_text())["learning_rate"] == 0.2


def test_a_second_ctrl_c_stops_at_once(tmp_path):
  import signal

  with checkpoints.RunCheckpoints(str(tmp_path), make_config()) as ckpt:
    ckpt._on_signal(signal.SIGINT, None)
    assert ckpt.preempted
    with pytest.raises(KeyboardInterrupt):
      ckpt._on_signal(signal.SIGINT, None)
    with pytest.raises(checkpoints.Preempted, match="^Ctrl-C: saved the checkpoint at step 3") \
        as stop:
      ckpt.stop(3)
  assert stop.value.exit_status == 130


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


def test_damaged_best_weights_through_main_fall_back_and_finish_the_same(finished_run,
                                                                         tmp_path):
  workdir = copy_run(finished_run, tmp_path)
  best = sorted(int(p.name) for p in (workdir / "checkpoints" / "best").iterdir())
  assert len(best) == 2, best  # each epoch improved: its weights at its end
  flip_a_byte(workdir / "checkpoints" / "best" / str(best[-1]))
  out = ptb_eval(workdir, finished_run[1], "--config.epochs=2")
  assert out.returncode == 0, out.stderr
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert lines and all(f"checkpoints/best/{best[-1]}, cannot be used" in l for l in lines), \
      out.stderr
  # It resumed from a checkpoint of the second epoch, before its best weights were saved, and
  # ended where the first run did, bit for bit.
  first = json.loads((finished_run[0] / "summary.json").read_text())
  assert json.loads((workdir / "summary.json").read_text()) == first


def damage_config_list(workdir):
  (workdir / "config.json").write_text("[1, 2]")


def damage_config_missing(workdir):
  (workdir / "config.json").unlink()


def damage_last_a_file(workdir):
  shutil.move(workdir / "checkpoints" / "last", workdir / "last.moved")
  (workdir / "checkpoints" / "last").write_text("not a folder")


def damage_metrics_a_folder(workdir):
  (workdir / "metrics.jsonl").unlink()
  (workdir / "metrics.jsonl").mkdir()


@pytest.mark.parametrize("damage,words", [
    (damage_config_list, "CheckpointError: {w}/config.json is unreadable (a JSON list"),
    (damage_config_missing, "CheckpointError: --workdir={w} holds checkpoints but no "
                            "config.json"),
    (damage_last_a_file, "CheckpointError: {w}/checkpoints/last is a file"),
    (damage_metrics_a_folder, "WorkdirError: {w}/metrics.jsonl is not a file"),
])
def test_a_damaged_workdir_file_through_main_is_one_line(finished_run, tmp_path, damage, words):
  workdir = copy_run(finished_run, tmp_path)
  damage(workdir)
  before = files_digest(workdir)
  out = ptb_eval(workdir, finished_run[1], "--config.epochs=2")
  assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(words.format(w=workdir)), out.stderr
  after = files_digest(workdir)
  after.pop(".darts_jax.lock", None)
  before.pop(".darts_jax.lock", None)
  assert after == before


def test_rerunning_a_finished_run_says_so_and_trains_nothing(finished_run, tmp_path):
  workdir = copy_run(finished_run, tmp_path)
  out = ptb_eval(workdir, finished_run[1], "--config.epochs=2")
  assert out.returncode == 0 and not out.stderr.strip(), out.stderr
  assert "the workdir holds a finished run (2 epochs, " in out.stdout
  assert "resuming from" not in out.stdout and "epoch 3" not in out.stdout
  first = json.loads((finished_run[0] / "summary.json").read_text())
  assert json.loads((workdir / "summary.json").read_text()) == first
