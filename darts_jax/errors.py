"""User errors: bad input that the command line answers in one line, without a traceback."""


class UserError(Exception):
  """A cause the user can fix; the message names the cause and the fix."""


class ConfigError(UserError, ValueError):
  """A config value out of its allowed set."""


class NonFiniteLossError(UserError):
  """The training loss became NaN or infinite."""


class WorkdirError(UserError):
  """A --workdir that cannot be created or written to."""
