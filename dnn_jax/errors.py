"""User-facing errors: one line that names the problem and the fix."""


class UserError(Exception):
  """A mistake the user can fix (config value, file, device count); printed without traceback."""


class ConfigError(UserError):
  """A config value is out of range or unknown."""


class DataError(UserError):
  """A dataset or one of its original files is missing or corrupt."""


class CheckpointError(UserError):
  """A checkpoint is missing or does not fit the model or optimizer being run."""


class NonFiniteError(UserError):
  """The loss or params became NaN or Inf; the run stopped, its last good checkpoint kept."""
