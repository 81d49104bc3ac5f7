"""Maps a config's `task` to the library function that runs it."""

import contextlib
import fcntl
import importlib
import os
import shutil
import sys
import tempfile

from darts_jax.errors import ConfigError, UserError, WorkdirError

# task name -> "module:function"; each function is `train_and_evaluate(config, workdir)`.
TASKS = {
    "cnn_eval": "darts_jax.train.cnn_eval:train_and_evaluate",
    "cnn_search": "darts_jax.train.cnn_search:train_and_evaluate",
    "darts_pt": "darts_jax.train.darts_pt:train_and_evaluate",
    "rnn_eval": "darts_jax.train.rnn_eval:train_and_evaluate",
    "rnn_search": "darts_jax.train.rnn_search:train_and_evaluate",
    "toy_search": "darts_jax.train.toy_search:train_and_evaluate",
}


def run(config, workdir):
  """Runs `config.task` with `workdir` for its outputs.

  A `UserError` (bad config, genotype, data or workdir) becomes a one-line `SystemExit`
  ("Type: message", exit status 1) instead of a traceback; a run stopped by SIGTERM or
  Ctrl-C after saving a checkpoint (`checkpoints.Preempted`) exits with status 143 or 130.
  A workdir this call created is removed again when the run fails before writing anything
  but its lock and config record.
  """
  task = config.get("task") if hasattr(config, "get") else None
  if task not in TASKS:
    raise SystemExit(f"ConfigError: --config.task={task!r} is not one of "
                     f"{', '.join(sorted(TASKS))}: set config.task in the config file.")
  module, function = TASKS[task].split(":")
  created = not os.path.exists(workdir)
  try:
    preflight(config, workdir)
    with lock_workdir(workdir):
      return getattr(importlib.import_module(module), function)(config, workdir)
  except UserError as e:
    if created and not isinstance(e, WorkdirError):
      _remove_if_unused(workdir)
    status = getattr(e, "exit_status", None)  # Preempted: 143 or 130, as the signal would
    if status is None:
      raise SystemExit(f"{type(e).__name__}: {e}") from None
    print(f"{type(e).__name__}: {e}", file=sys.stderr, flush=True)
    raise SystemExit(status) from None
  except KeyboardInterrupt:  # a second Ctrl-C, or one before the checkpoints were opened
    print("Interrupted (Ctrl-C): stopped without saving; the checkpoints already in "
          f"{workdir}/checkpoints are kept.", file=sys.stderr, flush=True)
    raise SystemExit(130) from None


def preflight(config, workdir):
  """Checks that hold for every task, before a trainer loads data or compiles anything.

  Raises:
    ConfigError: a field breaks the task's schema (`schema.check`), or `config.batch_size`
      does not split evenly over the devices.
    WorkdirError: `workdir` cannot be created or written to.
  """
  from darts_jax.train import schema

  # The config check comes first so that a bad value does not leave a new, empty workdir.
  schema.check(config)
  import jax  # after main.py's XLA_FLAGS: this starts the backend

  devices = jax.device_count()
  if config.batch_size % devices:
    raise ConfigError(f"--config.batch_size={config.batch_size} is not divisible by the "
                      f"{devices} devices (jax.device_count()): use a multiple of {devices}.")
  check_workdir(workdir)


LOCK_FILE = ".darts_jax.lock"


@contextlib.contextmanager
def lock_workdir(workdir):
  """Holds an advisory lock on `workdir` for the run, so two processes never share one.

  A second run on a live workdir (a scheduler restarting a job whose old process still
  runs) would remove the first one's in-progress save at start-up; instead it stops here,
  having changed nothing. The lock is `flock` on `<workdir>/.darts_jax.lock`, which holds the
  owner's PID; the kernel releases it when the process ends, however it ends. With several
  hosts the first takes it (they share the workdir by design).

  Raises:
    WorkdirError: another process holds the lock.
  """
  import jax

  if jax.process_index() != 0:
    yield
    return
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      owner = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
      raise WorkdirError(f"--workdir={workdir} is in use by process {owner} (it holds "
                         f"{LOCK_FILE}): wait for it to end or stop it, or pass another "
                         "--workdir.") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    yield
  finally:
    os.close(fd)  # releases the lock


def _remove_if_unused(workdir):
  """Removes a workdir the failed run created, when it holds nothing but the lock and the
  config record (a run that stopped before its first step)."""
  files = [os.path.relpath(os.path.join(root, name), workdir)
           for root, _, names in os.walk(workdir) for name in names]
  if set(files) <= {LOCK_FILE, "config.json"}:
    shutil.rmtree(workdir, ignore_errors=True)


def check_workdir(workdir):
  """Creates `workdir` if needed and writes and deletes a probe file in it.

  Without this, a read-only or mistyped workdir would only fail at the first metric or
  checkpoint write: after the data loaded and the step compiled, minutes in.
  """
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write_probe_") as probe:
      probe.write(b"probe")
      probe.flush()  # a full disk shows here, not only at the first real write
  except OSError as e:
    blocking = _existing_file_on_path(workdir)
    cause = f"{blocking} is a file, not a folder" if blocking else (e.strerror or str(e))
    raise WorkdirError(f"Cannot write to --workdir={workdir} ({cause}): pass a writable "
                       "folder.") from None


def _existing_file_on_path(path):
  """The nearest existing one of `path` and its parents when it is not a folder, else None.

  makedirs reports such a file as "Not a directory: <path>", naming the folder it could not
  create rather than the file in the way.
  """
  path = os.path.abspath(path)
  while not os.path.exists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  return None if os.path.isdir(path) else path
