"""User errors: bad input that the command line answers in one line, without a traceback."""


class UserError(Exception):
  """A cause the user can fix; the message names the cause and the fix."""


class ConfigError(UserError, ValueError):
  """A config value out of its allowed set."""


class NonFiniteLossError(UserError):
  """The training loss became NaN or infinite."""


class WorkdirError(UserError):
  """A --workdir that cannot be created or written to."""


class GenotypeError(UserError, ValueError):
  """A genotype that is malformed or names an unknown op."""


class DataError(UserError):
  """Data that is missing or malformed; the message says how to fix it."""
