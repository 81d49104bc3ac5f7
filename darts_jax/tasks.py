"""Maps a config's `task` to the library function that runs it."""

import importlib

from darts_jax.errors import UserError

# task name -> "module:function"; each function is `train_and_evaluate(config, workdir)`.
TASKS = {
    "cnn_eval": "darts_jax.cnn_eval:train_and_evaluate",
    "cnn_search": "darts_jax.cnn_search:train_and_evaluate",
    "rnn_eval": "darts_jax.rnn_eval:train_and_evaluate",
    "rnn_search": "darts_jax.rnn_search:train_and_evaluate",
    "toy_search": "darts_jax.toy_search:train_and_evaluate",
}


def run(config, workdir):
  """Runs `config.task` with `workdir` for its outputs."""
  if config.task not in TASKS:
    raise SystemExit(f"Unknown task {config.task!r} in the config; known tasks: "
                     f"{', '.join(sorted(TASKS))}.")
  module, function = TASKS[config.task].split(":")
  try:
    return getattr(importlib.import_module(module), function)(config, workdir)
  except UserError as e:
    raise SystemExit(f"{type(e).__name__}: {e}") from None
