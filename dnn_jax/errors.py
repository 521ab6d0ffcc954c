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


class DiskFullError(UserError):
  """A write failed for want of space (or quota); nothing half-written was left in its place."""

  def __init__(self, activity: str, detail: str = '', still_safe: str = ''):
    self.activity = activity  # e.g. 'saving checkpoint 94 in runs/x/checkpoints'
    self.detail = detail  # e.g. 'it needs 612 KB, 402 KB are free'
    line = f'no space left on device while {activity}'
    line += f' ({detail}); ' if detail else '; '
    line += 'free space or pass another --workdir'
    super().__init__(f'{line}; {still_safe}' if still_safe else line)
