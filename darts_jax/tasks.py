"""Maps a config's `task` to the library function that runs it."""

import importlib
import os
import sys
import tempfile

from darts_jax.errors import ConfigError, UserError, WorkdirError

# task name -> "module:function"; each function is `train_and_evaluate(config, workdir)`.
TASKS = {
    "cnn_eval": "darts_jax.cnn_eval:train_and_evaluate",
    "cnn_search": "darts_jax.cnn_search:train_and_evaluate",
    "rnn_eval": "darts_jax.rnn_eval:train_and_evaluate",
    "rnn_search": "darts_jax.rnn_search:train_and_evaluate",
    "toy_search": "darts_jax.toy_search:train_and_evaluate",
}


def run(config, workdir):
  """Runs `config.task` with `workdir` for its outputs.

  A `UserError` (bad config, genotype, data or workdir) becomes a one-line `SystemExit`
  ("Type: message", exit status 1) instead of a traceback; a run stopped by SIGTERM after
  saving a checkpoint (`checkpoints.Preempted`) exits with status 143.
  """
  if config.task not in TASKS:
    raise SystemExit(f"Unknown task {config.task!r} in the config; known tasks: "
                     f"{', '.join(sorted(TASKS))}.")
  module, function = TASKS[config.task].split(":")
  try:
    preflight(config, workdir)
    return getattr(importlib.import_module(module), function)(config, workdir)
  except UserError as e:
    status = getattr(e, "exit_status", None)  # Preempted: 143, as a SIGTERM'd process
    if status is None:
      raise SystemExit(f"{type(e).__name__}: {e}") from None
    print(f"{type(e).__name__}: {e}", file=sys.stderr, flush=True)
    raise SystemExit(status) from None


def preflight(config, workdir):
  """Checks that hold for every task, before a trainer loads data or compiles anything.

  Raises:
    ConfigError: `config.batch_size` does not split evenly over the devices.
    WorkdirError: `workdir` cannot be created or written to.
  """
  # The config check comes first so that a bad value does not leave a new, empty workdir.
  batch_size = config.get("batch_size")
  if batch_size is not None:
    import jax  # after main.py's XLA_FLAGS: this starts the backend

    devices = jax.device_count()
    if batch_size % devices:
      raise ConfigError(f"--config.batch_size={batch_size} is not divisible by the {devices} "
                        f"devices (jax.device_count()): use a multiple of {devices}.")
  check_workdir(workdir)


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
