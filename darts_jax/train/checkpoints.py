"""Checkpoints that make a run resumable: killed, preempted or crashed, it loses nothing.

`RunCheckpoints` keeps the last few checkpoints of a run's whole state in
`<workdir>/checkpoints/last/<step>` (Orbax): every array the next step reads (weights, alphas,
BN statistics, every optimiser state, hidden states) plus a JSON record of where the run
stands (epoch, step within the epoch, data position, the host-side history). It saves every
`config.checkpoint.every_steps` steps, at the end of every epoch, and when SIGTERM or Ctrl-C
arrives.

A save is complete when its step folder holds a checksum manifest
(`darts_jax_checksums.json`, a SHA-256 of every file), written after Orbax's atomic rename:
Orbax writes into a temporary folder, so a SIGKILL mid-write leaves the previous checkpoints
as they were, and a kill between the rename and the manifest leaves a folder that is not
trusted. A restore uses the newest checkpoint whose every file matches its manifest and that
reads back; the others are moved to `checkpoints/unreadable/` with a one-line warning (never
deleted). A folder without a manifest is used only as an announced last resort, when
`--config.checkpoint.trust_unverified=True` asks for it; when such folders are all there is,
they are set aside and the run starts over. Old checkpoints are discarded by
moving them to `checkpoints/.trash` first, so a kill mid-deletion leaves no half-deleted step.
Data order and per-step random keys are functions of (seed, epoch, step), so a resumed run on
CPU ends bit for bit where the uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import stat
import sys
import threading
import time

import jax
import jax.numpy as jnp

from darts_jax.train import parallel, schema
from darts_jax.errors import NonFiniteLossError, UserError

# Fields that may change when a run is resumed: they do not change the computation.
RESUMABLE_CHANGES = ("progress_bar", "log_every", "checkpoint", "xla_cpu_fast_kernels",
                     "data.dir", "data.tfds_data_dir", "data.num_workers")
PREEMPTED_EXIT_STATUS = 128 + signal.SIGTERM  # 143, what a shell reports for SIGTERM
INTERRUPTED_EXIT_STATUS = 128 + signal.SIGINT  # 130, for Ctrl-C


def default_config(every_steps: int):
  """The `config.checkpoint` block of a trainer's config: save every `every_steps` steps (and
  at each epoch's end, and on SIGTERM or Ctrl-C), keep the newest 3, refuse to resume a
  changed config unless `resume_changed` is set, and never restore a checkpoint whose save did
  not finish its checksums unless `trust_unverified` is set."""
  import ml_collections

  return ml_collections.ConfigDict({"every_steps": every_steps, "keep": 3,
                                    "resume_changed": False, "trust_unverified": False})


class CheckpointError(UserError):
  """The workdir's checkpoints cannot be used to resume."""


class Damaged(CheckpointError):
  """A checkpoint whose files do not match their manifest or do not read back."""


class Preempted(UserError):
  """SIGTERM (exit status 143) or Ctrl-C (130) arrived; the run saved a checkpoint and
  stops."""

  def __init__(self, message, exit_status=PREEMPTED_EXIT_STATUS):
    super().__init__(message)
    self.exit_status = exit_status


@jax.jit
def _all_finite(tree):
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


_CHECKSUMS = "darts_jax_checksums.json"


def _file_digest(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _write_checksums(step_dir: str):
  """Records a SHA-256 per file of a finished checkpoint: Orbax notices a truncated file
  only partway through a restore, and a flipped bit not at all."""
  digests = {}
  for root, _, files in os.walk(step_dir):
    for name in files:
      path = os.path.join(root, name)
      if name != _CHECKSUMS:
        digests[os.path.relpath(path, step_dir)] = _file_digest(path)
  target = os.path.join(step_dir, _CHECKSUMS)
  with open(target + ".tmp", "w") as f:
    json.dump(digests, f, indent=0)
  os.replace(target + ".tmp", target)


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _regular_files(step_dir: str) -> set[str]:
  """The paths, relative to `step_dir`, of everything in it but the manifest (links and
  other non-regular entries included, so that they fail the comparison)."""
  found = set()
  for root, folders, files in os.walk(step_dir):
    for name in files + [f for f in folders if os.path.islink(os.path.join(root, f))]:
      found.add(os.path.relpath(os.path.join(root, name), step_dir))
  found.discard(_CHECKSUMS)
  return found


def _verify_checksums(step_dir: str) -> str | None:
  """Why the checkpoint in `step_dir` cannot be trusted, or None when it has a manifest that
  names exactly its files, each a regular file inside `step_dir` matching its SHA-256."""
  path = os.path.join(step_dir, _CHECKSUMS)
  if not os.path.lexists(path):
    return UNVERIFIED
  try:
    with open(path) as f:
      digests = json.load(f)
  except (OSError, ValueError) as e:
    return f"its checksum file is unreadable: {e}"
  if not (isinstance(digests, dict) and digests and all(
      isinstance(k, str) and isinstance(v, str) and _SHA256.fullmatch(v)
      for k, v in digests.items())):
    return "its checksum file is not a map of file names to SHA-256 digests"
  root = os.path.realpath(step_dir)
  for name in digests:
    file = os.path.join(root, name)
    inside = (not os.path.isabs(name) and ".." not in name.split(os.sep)
              and os.path.realpath(file).startswith(root + os.sep))
    if not inside:
      return f"its checksum file names {name!r}, outside the step folder"
    try:
      mode = os.lstat(file).st_mode
    except OSError:
      return f"{name} is missing"
    if not stat.S_ISREG(mode):
      return f"{name} is not a regular file"
  extra = sorted(_regular_files(step_dir) - set(digests))
  if extra:
    return f"{extra[0]} is not in its checksum file"
  for name, digest in digests.items():
    if _file_digest(os.path.join(root, name)) != digest:
      return f"{name} does not match its checksum"
  return None


UNVERIFIED = "it has no checksum file (its save was cut short before the checksums)"


def _os_cause(error: BaseException) -> str:
  """The first OSError's reason in `error`'s chain (Orbax wraps them), else its first line."""
  seen = error
  while seen is not None:
    if isinstance(seen, OSError) and seen.strerror:
      return seen.strerror
    seen = seen.__cause__ or seen.__context__
  return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}"


def _quiet_abandoned_reads():
  """After a failed restore, TensorStore still completes the other arrays' reads and hands
  them to the restore's asyncio loop, which is closed by then: each prints a traceback
  ("Event loop is closed", "Task exception was never retrieved") that says nothing the
  one-line message does not."""
  previous = sys.unraisablehook
  if getattr(previous, "_darts_jax_quiet", False):
    return

  def hook(unraisable):
    error = unraisable.exc_value
    if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
      previous(unraisable)

  hook._darts_jax_quiet = True
  sys.unraisablehook = hook
  # The reads that failed too are tasks nobody awaits; asyncio logs each one at exit.
  logging.getLogger("asyncio").addFilter(
      lambda record: not record.getMessage().startswith("Task exception was never retrieved"))


def _config_dict(config) -> dict:
  return json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") \
      else json.loads(json.dumps(config, default=str))


class RunCheckpoints:
  """A run's rolling checkpoints, its SIGTERM and Ctrl-C handler and its config record.

  Use as a context manager around the training loop (`tasks.run` holds the workdir's lock,
  so one process at a time opens it):

      with RunCheckpoints(workdir, config) as ckpt:
        restored = ckpt.restore(state)           # None on a fresh workdir
        ...
        ckpt.step_done(step, progress, lambda: (state, {}))  # after each step
        ckpt.save(step, state, meta)             # at the end of each epoch

  `step_done` saves when `step` is a multiple of `every_steps` or a stop signal has arrived,
  and in the second case raises `Preempted` once the checkpoint is written.
  """

  def __init__(self, workdir: str, config, best: bool = False):
    import orbax.checkpoint as ocp

    self._ocp = ocp
    self.workdir = os.path.abspath(workdir)
    self.every_steps = int(config.checkpoint.every_steps)
    self.keep = int(config.checkpoint.keep)
    self.trust_unverified = bool(config.checkpoint.get("trust_unverified", False))
    self.root = os.path.join(self.workdir, "checkpoints")
    self.directory = os.path.join(self.root, "last")
    self.best_directory = os.path.join(self.root, "best")
    os.makedirs(self.workdir, exist_ok=True)
    for folder in (self.root, self.directory, self.best_directory):
      if os.path.lexists(folder) and not os.path.isdir(folder):
        raise CheckpointError(f"{folder} is a file, not the checkpoints folder: move it away "
                              "and run the same command again.")
    self._check_config(config)
    self._remove_partial_writes()
    parallel.sync("darts_jax_checkpoints_open")  # the first host's clean-up is done
    # Synchronous saves: a step donates the previous state's buffers, so the arrays must be
    # on the host before the next step starts. 0.3-1 s for the paper's states
    # (benchmarks/README.md, "Checkpoints"), every hundreds of steps. No max_to_keep: old
    # steps are discarded here, after the new step's manifest (`_prune`).
    options = ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "meta"))
    self._best = None
    if best:
      self._best = ocp.CheckpointManager(self.best_directory, options=ocp.CheckpointManagerOptions(
          create=True, enable_async_checkpointing=False))
    self.preempted = False
    self._signal = None
    self._previous_handlers = {}
    self._closed = False

  # -- the config record ------------------------------------------------------------------
  def _check_config(self, config):
    """Checks that a resumed run has the config of the run that wrote its checkpoints.

    `<workdir>/config.json` is written only once the restore has worked (`_write_config`),
    so a refused or failed attempt leaves the record of the config that ran.
    """
    path = os.path.join(self.workdir, "config.json")
    self._changed = []
    self._record = _config_dict(config)
    self._previous_record = None
    self._config_written = False
    if not _holds_steps(self.directory):
      return
    allow = bool(config.checkpoint.get("resume_changed"))
    if not os.path.exists(path):
      if not allow:
        raise CheckpointError(
            f"--workdir={self.workdir} holds checkpoints but no config.json, so the settings "
            "they were made with are unknown: restore config.json, or pass "
            "--config.checkpoint.resume_changed=True to resume with this config.")
      print(f"warning: {path} is missing; resuming with this command's config "
            "(--config.checkpoint.resume_changed=True).", file=sys.stderr, flush=True)
      return
    try:
      with open(path) as f:
        saved = json.load(f)
      if not isinstance(saved, dict):
        raise ValueError(f"a JSON {type(saved).__name__}, not a config")
    except (OSError, ValueError) as e:
      raise CheckpointError(f"{path} is unreadable ({' '.join(str(e).split())}): restore it, "
                            "or resume with a new --workdir.") from None
    old, new = schema.flatten(saved), schema.flatten(self._record)
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)
                     and not any(k == p or k.startswith(p + ".") for p in RESUMABLE_CHANGES))
    self._changed = changed
    if changed and allow:
      print("warning: resuming with changed settings: "
            + "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed),
            file=sys.stderr, flush=True)
      self._previous_record = saved
    elif changed:
      diffs = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:4])
      raise CheckpointError(
          f"--workdir={self.workdir} holds a run with a different config ({diffs}"
          f"{'; ...' if len(changed) > 4 else ''}): resume with the same settings, start "
          "this config in a new --workdir, or pass --config.checkpoint.resume_changed=True.")

  def _write_config(self):
    """Writes `config.json`; a changed config that resumed keeps the old record beside it
    (`config.previous.json`)."""
    self._config_written = True
    if not parallel.is_primary():  # on several hosts, the first writes
      return
    path = os.path.join(self.workdir, "config.json")
    records = [(path, self._record)]
    if self._previous_record is not None:
      records.insert(0, (os.path.join(self.workdir, "config.previous.json"),
                         self._previous_record))
    for target, record in records:
      with open(target + ".tmp", "w") as f:
        json.dump(record, f, indent=2)
      os.replace(target + ".tmp", target)

  def _remove_partial_writes(self):
    """A SIGKILL during a save leaves Orbax's temporary folder behind (incomplete), and one
    during a deletion a folder in `.trash`."""
    if not parallel.is_primary():
      return
    for folder in (self.directory, self.best_directory):
      if os.path.isdir(folder):
        for name in os.listdir(folder):
          if ".orbax-checkpoint-tmp" in name:
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    shutil.rmtree(os.path.join(self.root, ".trash"), ignore_errors=True)

  def _discard(self, folder: str):
    """Deletes a step folder by first moving it out of sight: a kill mid-deletion then
    leaves a partial folder in `.trash` (removed at the next start), not a damaged step."""
    if parallel.is_primary() and os.path.lexists(folder):
      trash = os.path.join(self.root, ".trash")
      os.makedirs(trash, exist_ok=True)
      target = os.path.join(trash, f"{os.path.basename(os.path.dirname(folder))}-"
                            f"{os.path.basename(folder)}-{time.time_ns()}")
      os.rename(folder, target)
      shutil.rmtree(trash, ignore_errors=True)

  def _prune(self, manager, directory: str, keep: int):
    """Discards all but the newest `keep` steps of `manager`."""
    for step in sorted(manager.all_steps())[:-keep]:
      self._discard(os.path.join(directory, str(step)))
    parallel.sync(f"darts_jax_prune_{os.path.basename(directory)}")
    manager.reload()

  # -- SIGTERM and Ctrl-C -----------------------------------------------------------------
  def __enter__(self):
    # Several hosts: JAX's coordination service catches SIGTERM and agrees on a step at which
    # every host stops (`_sigterm_agreed`), so each saves the same checkpoint.
    if threading.current_thread() is threading.main_thread() and jax.process_count() == 1:
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous_handlers[signum] = signal.signal(signum, self._on_signal)
    return self

  def _on_signal(self, signum, frame):
    del frame  # the loop notices the flag after the current step
    if signum == signal.SIGINT:
      if self._signal == signal.SIGINT:  # the second Ctrl-C: stop now
        raise KeyboardInterrupt
      print("\nCtrl-C: stopping after this step, once its checkpoint is saved (Ctrl-C again "
            "stops at once, without saving).", file=sys.stderr, flush=True)
    self._signal = self._signal or signum
    self.preempted = True

  def __exit__(self, *exc):
    for signum, handler in self._previous_handlers.items():
      signal.signal(signum, handler)
    self._previous_handlers = {}
    try:
      self.close()
    except Exception:  # pylint: disable=broad-except
      if exc[0] is None:  # else the error that ended the run is the one to report
        raise
    return False

  def close(self):
    if self._closed:
      return
    self._closed = True
    for manager in (self._manager, self._best):
      if manager is not None:
        manager.wait_until_finished()
        manager.close()

  # -- restore ----------------------------------------------------------------------------
  @property
  def steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def restore(self, template):
    """Returns `(state, meta)` from the newest trustworthy checkpoint, or None when there is
    none. With `best`, a checkpoint whose record names a `best_step` counts only if that
    `checkpoints/best` step is intact too.

    Args:
      template: a state of the same structure (its arrays are not used).

    Raises:
      CheckpointError: checkpoints exist but none can be used; nothing was moved.
    """
    steps = sorted(self._manager.all_steps(), reverse=True)
    failures, unverified = [], []
    for step in steps:
      cause = _verify_checksums(os.path.join(self.directory, str(step)))
      if cause == UNVERIFIED:
        unverified.append(step)
        failures.append((step, cause))
        continue
      if cause:
        failures.append((step, cause))
        continue
      restored = self._restore_step(step, template, failures)
      if restored is not None:
        return self._chosen(step, restored, failures)
    if unverified and self.trust_unverified:
      step = unverified[0]
      print(f"warning: no checkpoint has complete checksums; resuming from step {step}, whose "
            "files are not verified (--config.checkpoint.trust_unverified=True).",
            file=sys.stderr, flush=True)
      failures = [(s, c) for s, c in failures if s != step]
      restored = self._restore_step(step, template, failures)
      if restored is not None:
        return self._chosen(step, restored, failures)
    if failures and all(c == UNVERIFIED for _, c in failures) and not self.trust_unverified:
      # Only saves cut short before their checksums (a kill in the moment after the first
      # save's rename): incomplete, like Orbax's temporary folders. Set them aside and start
      # over, so that a scheduler's restart goes on; nothing is deleted.
      for step, _ in failures:
        moved = self._set_aside(step)
        print(f"warning: checkpoint at step {step} {UNVERIFIED[3:]}; moved it to {moved} and "
              "started from the beginning (to resume from it instead, move it back and pass "
              "--config.checkpoint.trust_unverified=True).", file=sys.stderr, flush=True)
      failures = []
    if failures:
      time.sleep(0.5)  # let the failed restores' abandoned reads finish while they are quiet
      causes = "; ".join(f"step {s}: {c}" for s, c in failures)
      raise CheckpointError(f"No checkpoint in {self.directory} reads back ({causes}): move "
                            "the folder away to start over, or resume with a new --workdir.")
    self._write_config()
    return None

  def _restore_step(self, step, template, failures):
    """`restored` for checkpoint `step`, or None (the cause appended to `failures`)."""
    try:
      restored = self._manager.restore(step, args=self._ocp.args.Composite(
          state=self._ocp.args.StandardRestore(template),
          meta=self._ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except  (any failure: unreadable)
      _quiet_abandoned_reads()
      first_line = (str(e).splitlines() or [""])[0][:240]
      failures.append((step, f"{type(e).__name__}: {first_line}"))
      if self._changed:  # most likely the settings, not the files: touch nothing
        raise CheckpointError(
            f"The checkpoint at step {step} does not fit the changed settings "
            f"({', '.join(self._changed)}): {failures[-1][1]}. Resume with the original "
            "config.") from None
      return None
    best_step = restored.meta.get("best_step") if self._best is not None else None
    if best_step is not None:
      cause = _verify_checksums(os.path.join(self.best_directory, str(best_step)))
      if cause and not (cause == UNVERIFIED and self.trust_unverified):
        failures.append((step, f"its best weights, checkpoints/best/{best_step}, cannot be "
                               f"used: {cause}"))
        return None
    return restored

  def _chosen(self, step, restored, failures):
    for bad_step, cause in failures:
      moved = self._set_aside(bad_step)
      print(f"warning: checkpoint at step {bad_step} is unreadable ({cause}); moved it to "
            f"{moved} and resumed from step {step} instead.", file=sys.stderr, flush=True)
    self._write_config()
    return restored.state, restored.meta

  def _set_aside(self, step: int) -> str:
    """Moves an unusable checkpoint out of Orbax's folder, so the run can save that step
    again; nothing is deleted."""
    target = os.path.join(self.root, "unreadable", str(step))
    if parallel.is_primary():  # every host found it unusable; the first moves it
      if os.path.exists(target):
        shutil.rmtree(target)
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), target)
    parallel.sync(f"darts_jax_set_aside_{step}")
    self._manager.reload()
    return target

  # -- save -------------------------------------------------------------------------------
  def save(self, step: int, state, meta: dict):
    """Writes checkpoint `step` (refusing a state with NaN or inf in it), then its manifest,
    then discards all but the newest `keep`.

    Raises:
      NonFiniteLossError: `state` holds NaN or inf.
      CheckpointError: the write failed (a full disk, a vanished workdir); the checkpoints
        before it are kept.
    """
    if not bool(_all_finite(state)):
      raise NonFiniteLossError(
          f"The state after step {step} holds NaN or inf, so it was not saved; the last good "
          f"checkpoint (step {self.latest_step()}) is kept. Lower the learning rates.")
    self._write(self._manager, self.directory, step, self._ocp.args.Composite(
        state=self._ocp.args.StandardSave(state),
        meta=self._ocp.args.JsonSave({**meta, "step": step})), self.keep)

  def _write(self, manager, directory, step, args, keep):
    if not self._config_written:  # saved without a restore first: this run's record
      self._write_config()
    kept = [s for s in manager.all_steps() if s != step]
    try:
      if step in manager.all_steps():  # a preempted epoch's last step, now finished
        self._discard(os.path.join(directory, str(step)))
        parallel.sync(f"darts_jax_replace_{os.path.basename(directory)}_{step}")
        manager.reload()
      manager.save(step, args=args, force=True)
      if parallel.is_primary():
        _write_checksums(os.path.join(directory, str(step)))
      self._prune(manager, directory, keep)
    except Exception as e:  # pylint: disable=broad-except  (I/O, however Orbax wraps it)
      self._remove_partial_writes()
      what = f"checkpoint{'s/best' if directory == self.best_directory else ''}"
      raise CheckpointError(
          f"Could not save the {what} at step {step} ({_os_cause(e)}); "
          f"{'the one at step ' + str(max(kept)) + ' is kept' if kept else 'none is kept'}: "
          "make room or restore the workdir, then run the same command to resume.") from None

  def save_best(self, step: int, tree):
    """Adds `tree` (the weights of the best epoch so far) to `checkpoints/best` as `step`.

    The newest `keep + 1` are kept, so every checkpoint in `last` still has the best weights
    its record names (`best_step` in the record; `restore_best`).
    """
    self._write(self._best, self.best_directory, step, self._ocp.args.StandardSave(tree),
                self.keep + 1)

  def restore_best(self, template, step=None):
    """The weights saved by `save_best` at `step` (default: the newest), or None if there are
    none.

    Raises:
      Damaged: that checkpoint's files do not match its manifest or do not read back.
    """
    step = self._best.latest_step() if step is None else step
    if step is None:
      return None
    cause = _verify_checksums(os.path.join(self.best_directory, str(step)))
    if cause == UNVERIFIED and self.trust_unverified:
      cause = None
    if cause is None:
      try:
        return self._best.restore(step, args=self._ocp.args.StandardRestore(template))
      except Exception as e:  # pylint: disable=broad-except
        _quiet_abandoned_reads()
        cause = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:240]}"
    hint = ("; pass --config.checkpoint.trust_unverified=True to use them anyway"
            if cause == UNVERIFIED else "")
    raise Damaged(f"The best weights, {self.best_directory}/{step}, cannot be used: "
                  f"{cause}{hint}.")

  def latest_step(self):
    return self._manager.latest_step()

  def step_done(self, step: int, progress, checkpoint):
    """Call after each training step, `step` counting the steps done so far and `progress`
    the epoch's `metrics.EpochProgress`.

    Saves when `step` is a multiple of `every_steps` or a stop signal has arrived, except
    after an epoch's last step, which the epoch's end saves once its evaluation is done
    (unless a signal is waiting). `checkpoint()` returns `(state, extra record)` and is only
    called for a save; the record also gets `progress.position()`. Before a save
    `progress.check()` reads back the steps not yet checked (the NaN guard), so a checkpoint
    never holds a state that came from a non-finite loss or gradient.
    """
    if not (self._sigterm_agreed(step) or step % self.every_steps == 0):
      return
    if progress.done == progress.steps and not self.preempted:
      return
    progress.check()
    state, extra = checkpoint()
    self.save(step, state, {**progress.position(), **extra})
    if self.preempted:
      self.stop(step)

  def _sigterm_agreed(self, step: int) -> bool:
    if jax.process_count() > 1 and not self.preempted:
      from jax.experimental import multihost_utils

      self.preempted = multihost_utils.reached_preemption_sync_point(step)
    return self.preempted

  def stop(self, step: int):
    """After a save: raises `Preempted` when SIGTERM or Ctrl-C has arrived."""
    if self.preempted:
      self.close()
      name, status = (("Ctrl-C", INTERRUPTED_EXIT_STATUS) if self._signal == signal.SIGINT
                      else ("SIGTERM received", PREEMPTED_EXIT_STATUS))
      raise Preempted(f"{name}: saved the checkpoint at step {step} in {self.directory} and "
                      "stopped; run the same command to resume.", status)


def _holds_steps(directory: str) -> bool:
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def read_run(workdir: str, template):
  """The newest verified checkpoint of the run in `workdir`, read and nothing changed there.

  For a run that starts from another run's result (DARTS-PT from a search): unlike
  `RunCheckpoints.restore`, nothing is moved aside or written, and a checkpoint without
  complete checksums is never used.

  Args:
    workdir: the other run's workdir (its `checkpoints/last/<step>` folders).
    template: a state of the structure that run saved (its arrays are not used).

  Returns:
    `(state, meta)`: the state and the checkpoint record (`epoch`, `step`, ...).

  Raises:
    CheckpointError: `workdir` holds no checkpoint that verifies and reads back (the message
      names each step's cause).
  """
  import orbax.checkpoint as ocp

  workdir = os.path.abspath(workdir)
  directory = os.path.join(workdir, "checkpoints", "last")
  steps = sorted((int(n) for n in (os.listdir(directory) if os.path.isdir(directory) else [])
                  if n.isdigit()), reverse=True)
  if not steps:
    raise CheckpointError(f"{directory} holds no checkpoint: pass the --workdir of a finished "
                          "search.")
  from absl import logging as absl_logging  # Orbax's logger

  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.ERROR)  # not its warning that the folder is read-only
  try:
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
        read_only=True, create=False, save_interval_steps=0), item_names=("state", "meta"))
  finally:
    absl_logging.set_verbosity(verbosity)
  failures = []
  try:
    for step in steps:
      cause = _verify_checksums(os.path.join(directory, str(step)))
      if cause is None:
        try:
          restored = manager.restore(step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(template), meta=ocp.args.JsonRestore()))
          return restored.state, restored.meta
        except Exception as e:  # pylint: disable=broad-except  (any failure: unreadable)
          _quiet_abandoned_reads()
          cause = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:240]}"
      failures.append(f"step {step}: {cause}")
  finally:
    manager.close()
  raise CheckpointError(f"No checkpoint in {directory} can be used ({'; '.join(failures)}): "
                        "pass the --workdir of a finished search.")
