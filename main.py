"""darts_jax command line: `python main.py --config configs/<experiment>.py [--config.x=y]`."""

import os
import re
import sys
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from darts_jax.train import tasks
from darts_jax.train import xla_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Where outputs go (default: ./runs/<config name>-<time>).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Several hosts: join them through jax.distributed.initialize() "
    "(found by itself on TPU pod slices, SLURM, Open MPI; else give the three flags below).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "With --distributed: ip:port of the first host.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "With --distributed: the number of hosts.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "With --distributed: this host's index, 0 to n - 1.")
flags.mark_flags_as_required(["config"])


def parse_flags(argv):
  """absl's parsing, with a bad `--config.x=y` answered in one line instead of a traceback."""
  try:
    return flags.FLAGS(argv)
  except (OSError, SyntaxError) as e:  # config_flags runs the config file while parsing
    raise SystemExit(_config_file_message(argv, e)) from None
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    unknown = _unknown_field(e)
    if unknown is not None:
      raise SystemExit(_unknown_field_message(argv, unknown)) from None
    if isinstance(e, AttributeError) and "get_config" in str(e):
      raise SystemExit(f"Bad config file: {_config_path(argv)} has no get_config() function: "
                       "define one that returns the config (see configs/).") from None
    message = " ".join(str(e).split()).rstrip(".")  # one line, whatever the library wrote
    raise SystemExit(f"Bad command line: {message}. Check the flag, and for --config.x=y that "
                     "the config file has field x and y has its type.") from None


def _config_path(argv):
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return "?"


def _config_file_message(argv, error):
  path = _config_path(argv)
  if isinstance(error, SyntaxError):
    return (f"Bad config file: {path}, line {error.lineno}: {error.msg}. Correct the file's "
            "Python.")
  # config_flags reports a file it cannot read as an OSError that quotes the first one.
  errno = re.search(r"\[Errno \d+\] ([^:\n]+)", str(error))
  cause = errno.group(1) if errno else (str(error).splitlines() or [""])[0]
  if "No such file" in cause:
    return (f"Bad command line: --config={path} does not exist: check the path (the "
            "experiments are in configs/).")
  return (f"Bad command line: cannot read --config={path} ({cause}): pass a config file, "
          "such as configs/quick_search.py.")


def _unknown_field(error):
  """ml_collections' KeyError for a `--config.x` the config lacks (absl wraps it in an
  AttributeError when x is a leaf), else None."""
  if isinstance(error, AttributeError) and error.args and isinstance(error.args[0], KeyError):
    error = error.args[0]
  return error if isinstance(error, KeyError) else None


def _unknown_field_message(argv, error):
  # ml_collections' message is the key's repr, then on a second line maybe
  # 'Did you mean "batch_size" instead of "batch_sise"?'.
  text = str(error.args[0]) if error.args else ""
  first, _, rest = text.partition("\n")
  key = first.strip("'\"")
  names = [a.split("=", 1)[0] for a in argv if a.startswith("--config.")]
  flag = next((n for n in names if key in n[len("--config."):].split(".")), f"--config.{key}")
  hint = ""
  suggestion = re.search(r'Did you mean "([^"]+)"', rest)
  if suggestion:
    parts = flag[len("--config."):].split(".")
    parts[parts.index(key)] = suggestion.group(1)
    hint = f" (did you mean --config.{'.'.join(parts)}?)"
  return (f"Bad command line: {flag} names no field of the config{hint}: check the name "
          "against the config file.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  try:
    config = _CONFIG.value
    config.get("task")  # a file that failed to load raises on first use
  except OSError as e:  # a config file that does not exist or cannot be read
    raise SystemExit(_config_file_message(sys.argv, e)) from None
  workdir = _WORKDIR.value
  if workdir is None:
    name = os.path.splitext(os.path.basename(flags.FLAGS["config"].config_filename))[0]
    workdir = os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
  # The libraries' INFO logs (Orbax's per-save lines, JAX's backend probing) would bury the
  # progress bars and per-epoch lines; warnings still show. --verbosity=0 brings them back.
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  if config.get("xla_cpu_fast_kernels"):
    xla_flags.configure_cpu()  # before JAX starts its backend
  if _DISTRIBUTED.value:
    from darts_jax.train import parallel

    parallel.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  tasks.run(config, workdir)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
