"""Checkpoints that make a run resumable: killed, preempted or crashed, it loses nothing.

`RunCheckpoints` keeps the last few checkpoints of a run's whole state in
`<workdir>/checkpoints/last/<step>` (Orbax): every array the next step reads (weights, alphas,
BN statistics, every optimiser state, hidden states) plus a JSON record of where the run
stands (epoch, step within the epoch, data position, the host-side history). It saves every
`config.checkpoint.every_steps` steps, at the end of every epoch, and when SIGTERM arrives.

Orbax writes a checkpoint into a temporary folder and renames it when complete, so a
SIGKILL mid-write leaves the previous checkpoints as they were; the next start removes the
partial folder. Starting a run on a workdir that holds checkpoints resumes from the newest
one that reads back; a checkpoint that does not read back (truncated, corrupt) is moved to
`checkpoints/unreadable/` with a one-line warning, and the one before it is used. Data order
and per-step random keys are functions of (seed, epoch, step), so a resumed run on CPU ends
bit for bit where the uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time

import jax
import jax.numpy as jnp

from darts_jax.train import parallel
from darts_jax.errors import NonFiniteLossError, UserError

# Fields that may change when a run is resumed: they do not change the computation.
RESUMABLE_CHANGES = ("progress_bar", "log_every", "checkpoint", "xla_cpu_fast_kernels",
                     "data.dir", "data.tfds_data_dir", "data.num_workers")
PREEMPTED_EXIT_STATUS = 128 + signal.SIGTERM  # 143, what a shell reports for SIGTERM


def default_config(every_steps: int):
  """The `config.checkpoint` block of a trainer's config: save every `every_steps` steps (and
  at each epoch's end, and on SIGTERM), keep the newest 3, refuse to resume a changed config
  unless `resume_changed` is set."""
  import ml_collections

  return ml_collections.ConfigDict(
      {"every_steps": every_steps, "keep": 3, "resume_changed": False})


class CheckpointError(UserError):
  """The workdir's checkpoints cannot be used to resume."""


class Preempted(UserError):
  """SIGTERM arrived; the run saved a checkpoint and stops. Exit status 143."""

  exit_status = PREEMPTED_EXIT_STATUS


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


def _verify_checksums(step_dir: str) -> str | None:
  """Why the checkpoint in `step_dir` is damaged, or None when its files match their
  checksums (or it has none: killed between Orbax's save and the checksums)."""
  path = os.path.join(step_dir, _CHECKSUMS)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      digests = json.load(f)
  except (OSError, ValueError) as e:
    return f"its checksum file is unreadable: {e}"
  for name, digest in digests.items():
    file = os.path.join(step_dir, name)
    if not os.path.exists(file):
      return f"{name} is missing"
    if _file_digest(file) != digest:
      return f"{name} does not match its checksum"
  return None


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


def _flatten_config(d, prefix=""):
  out = {}
  for key, value in d.items():
    if isinstance(value, dict):
      out.update(_flatten_config(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


def _config_dict(config) -> dict:
  return json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") \
      else json.loads(json.dumps(config, default=str))


class RunCheckpoints:
  """A run's rolling checkpoints, its SIGTERM handler and its config record.

  Use as a context manager around the training loop:

      with RunCheckpoints(workdir, config) as ckpt:
        restored = ckpt.restore(state)           # None on a fresh workdir
        ...
        ckpt.step_done(step, progress, lambda: (state, {}))  # after each step
        ckpt.save(step, state, meta)             # at the end of each epoch

  `step_done` saves when `step` is a multiple of `every_steps` or SIGTERM has arrived, and in
  the second case raises `Preempted` once the checkpoint is written.
  """

  def __init__(self, workdir: str, config, best: bool = False):
    import orbax.checkpoint as ocp

    self._ocp = ocp
    self.workdir = os.path.abspath(workdir)
    self.every_steps = int(config.checkpoint.every_steps)
    self.directory = os.path.join(self.workdir, "checkpoints", "last")
    os.makedirs(self.workdir, exist_ok=True)
    self._check_config(config)
    self._remove_partial_writes()
    parallel.sync("darts_jax_checkpoints_open")  # the first host's clean-up is done
    # Synchronous saves: a step donates the previous state's buffers, so the arrays must be
    # on the host before the next step starts. 0.3-1 s for the paper's states
    # (benchmarks/README.md, "Checkpoints"), every hundreds of steps.
    options = ocp.CheckpointManagerOptions(max_to_keep=int(config.checkpoint.keep),
                                           create=True, enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "meta"))
    self._best = None
    if best:
      self._best = ocp.CheckpointManager(
          os.path.join(self.workdir, "checkpoints", "best"),
          options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                               enable_async_checkpointing=False))
    self.preempted = False
    self._previous_handler = None
    self._closed = False

  # -- the config record ------------------------------------------------------------------
  def _check_config(self, config):
    """Writes `<workdir>/config.json`, or checks the run being resumed had the same one."""
    path = os.path.join(self.workdir, "config.json")
    self._changed = []
    current = _config_dict(config)
    last = os.path.join(self.workdir, "checkpoints", "last")
    if os.path.exists(path) and os.path.isdir(last) and any(
        name.isdigit() for name in os.listdir(last)):
      try:
        with open(path) as f:
          saved = json.load(f)
      except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is unreadable ({e}): restore it, or resume with a new "
                              "--workdir.") from None
      old, new = _flatten_config(saved), _flatten_config(current)
      changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)
                       and not any(k == p or k.startswith(p + ".") for p in RESUMABLE_CHANGES))
      self._changed = changed
      if changed and config.checkpoint.get("resume_changed"):
        print("warning: resuming with changed settings: "
              + "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed),
              file=sys.stderr, flush=True)
      elif changed:
        diffs = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:4])
        raise CheckpointError(
            f"--workdir={self.workdir} holds a run with a different config ({diffs}"
            f"{'; ...' if len(changed) > 4 else ''}): resume with the same settings, start "
            "this config in a new --workdir, or pass --config.checkpoint.resume_changed=True.")
    if parallel.is_primary():  # on several hosts, the first writes
      with open(path + ".tmp", "w") as f:
        json.dump(current, f, indent=2)
      os.replace(path + ".tmp", path)

  def _remove_partial_writes(self):
    """A SIGKILL during a save leaves Orbax's temporary folder behind; it is incomplete."""
    if os.path.isdir(self.directory) and parallel.is_primary():
      for name in os.listdir(self.directory):
        if ".orbax-checkpoint-tmp" in name:
          shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

  # -- SIGTERM ----------------------------------------------------------------------------
  def __enter__(self):
    # Several hosts: JAX's coordination service catches SIGTERM and agrees on a step at which
    # every host stops (`_sigterm_agreed`), so each saves the same checkpoint.
    if threading.current_thread() is threading.main_thread() and jax.process_count() == 1:
      self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
    return self

  def _on_sigterm(self, signum, frame):
    del signum, frame  # the loop notices the flag after the current step
    self.preempted = True

  def __exit__(self, *exc):
    if self._previous_handler is not None:
      signal.signal(signal.SIGTERM, self._previous_handler)
      self._previous_handler = None
    self.close()
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
    """Returns `(state, meta)` from the newest readable checkpoint, or None when there is
    none. `template` is a state of the same structure (its arrays are not used)."""
    steps = sorted(self._manager.all_steps(), reverse=True)
    failures = []
    for step in steps:
      cause = _verify_checksums(os.path.join(self.directory, str(step)))
      if cause:
        failures.append((step, cause))
        continue
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
        continue
      for bad_step, cause in failures:
        moved = self._set_aside(bad_step)
        print(f"warning: checkpoint at step {bad_step} is unreadable ({cause}); moved it to "
              f"{moved} and resumed from step {step} instead.", file=sys.stderr, flush=True)
      return restored.state, restored.meta
    if failures:
      time.sleep(0.5)  # let the failed restores' abandoned reads finish while they are quiet
      causes = "; ".join(f"step {s}: {c}" for s, c in failures)
      raise CheckpointError(f"No checkpoint in {self.directory} reads back ({causes}): move "
                            "the folder away to start over, or resume with a new --workdir.")
    return None

  def _set_aside(self, step: int) -> str:
    """Moves an unreadable checkpoint out of Orbax's folder, so the run can save that step
    again; nothing is deleted."""
    target = os.path.join(self.workdir, "checkpoints", "unreadable", str(step))
    if parallel.is_primary():  # every host found it unreadable; the first moves it
      if os.path.exists(target):
        shutil.rmtree(target)
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), target)
    parallel.sync(f"darts_jax_set_aside_{step}")
    self._manager.reload()
    return target

  # -- save -------------------------------------------------------------------------------
  def save(self, step: int, state, meta: dict):
    """Writes checkpoint `step` (refusing a state with NaN or inf in it)."""
    if not bool(_all_finite(state)):
      raise NonFiniteLossError(
          f"The state after step {step} holds NaN or inf, so it was not saved; the last good "
          f"checkpoint (step {self.latest_step()}) is kept. Lower --config.learning_rate.")
    if step in self._manager.all_steps():  # a preempted epoch's last step, now finished
      self._manager.delete(step)
    self._manager.save(step, args=self._ocp.args.Composite(
        state=self._ocp.args.StandardSave(state),
        meta=self._ocp.args.JsonSave({**meta, "step": step})), force=True)
    if parallel.is_primary():
      _write_checksums(os.path.join(self.directory, str(step)))

  def save_best(self, step: int, tree):
    """Replaces `checkpoints/best` with `tree` (the weights of the best epoch so far)."""
    if step in self._best.all_steps():  # the epoch replayed after a resume
      self._best.delete(step)
    self._best.save(step, args=self._ocp.args.StandardSave(tree), force=True)

  def restore_best(self, template):
    step = self._best.latest_step()
    if step is None:
      return None
    return self._best.restore(step, args=self._ocp.args.StandardRestore(template))

  def latest_step(self):
    return self._manager.latest_step()

  def step_done(self, step: int, progress, checkpoint):
    """Call after each training step, `step` counting the steps done so far and `progress`
    the epoch's `metrics.EpochProgress`.

    Saves when `step` is a multiple of `every_steps` or SIGTERM has arrived, except after an
    epoch's last step, which the epoch's end saves once its evaluation is done (unless
    SIGTERM is waiting). `checkpoint()` returns `(state, extra record)` and is only called for
    a save; the record also gets `progress.position()`. Before a save `progress.check()`
    reads back the steps not yet checked (the NaN guard), so a checkpoint never holds a state
    that came from a non-finite loss or gradient.
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
    """After a save: raises `Preempted` when SIGTERM has arrived."""
    if self.preempted:
      self.close()
      raise Preempted(f"SIGTERM received: saved the checkpoint at step {step} in "
                      f"{self.directory} and stopped; run the same command to resume.")
