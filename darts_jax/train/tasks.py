"""Maps a config's `task` to the library function that runs it."""

import importlib
import os
import sys
import tempfile

from darts_jax.errors import ConfigError, UserError, WorkdirError

# task name -> "module:function"; each function is `train_and_evaluate(config, workdir)`.
TASKS = {
    "cnn_eval": "darts_jax.train.cnn_eval:train_and_evaluate",
    "cnn_search": "darts_jax.train.cnn_search:train_and_evaluate",
    "rnn_eval": "darts_jax.train.rnn_eval:train_and_evaluate",
    "rnn_search": "darts_jax.train.rnn_search:train_and_evaluate",
    "toy_search": "darts_jax.train.toy_search:train_and_evaluate",
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
    ConfigError: `config.batch_size` does not split evenly over the devices, or a search's
      `hypergradient` block or `relaxation` is not one the library has.
    WorkdirError: `workdir` cannot be created or written to.
  """
  # The config check comes first so that a bad value does not leave a new, empty workdir.
  if "hypergradient" in config:
    check_hypergradient(config.hypergradient)
  if "relaxation" in config:
    from darts_jax import relaxations

    if config.relaxation not in relaxations.RELAXATIONS:
      raise ConfigError(f"--config.relaxation={config.relaxation!r} is not one of "
                        f"{', '.join(relaxations.RELAXATIONS)}.")
  batch_size = config.get("batch_size")
  if batch_size is not None:
    import jax  # after main.py's XLA_FLAGS: this starts the backend

    devices = jax.device_count()
    if batch_size % devices:
      raise ConfigError(f"--config.batch_size={batch_size} is not divisible by the {devices} "
                        f"devices (jax.device_count()): use a multiple of {devices}.")
  check_workdir(workdir)


def check_hypergradient(block):
  """One-line ConfigErrors for a `config.hypergradient` block `darts_jax.hypergradient` would
  refuse (it raises ValueError only once the step is traced)."""
  from darts_jax.hypergradient import EXACT_MODES, METHODS

  for name, allowed in (("method", METHODS), ("exact_mode", EXACT_MODES)):
    if block[name] not in allowed:
      raise ConfigError(f"--config.hypergradient.{name}={block[name]!r} is not one of "
                        f"{', '.join(allowed)}.")
  k = block.unroll_steps
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise ConfigError(f"--config.hypergradient.unroll_steps={k!r} must be a positive integer.")
  if block.method == "finite_difference" and k != 1:
    raise ConfigError("--config.hypergradient.method=finite_difference (DARTS' approximation) "
                      "is defined for unroll_steps=1 only: use method=exact to unroll "
                      f"{k} steps.")
  if not block.fd_epsilon > 0:
    raise ConfigError(f"--config.hypergradient.fd_epsilon={block.fd_epsilon!r} must be "
                      "positive.")


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
