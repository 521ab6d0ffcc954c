"""Writing files safely: whole or not at all, and a full disk as one line, not a traceback."""

import contextlib
import errno
import json
import os
import pathlib

from dnn_jax.errors import DiskFullError

# What a full disk or an exhausted quota looks like in an OSError, or in the text of an error
# that wraps one (tensorstore, under orbax, raises ValueError: "... [os_error_code='28']").
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_TEXTS = ('No space left on device', 'Disk quota exceeded', "os_error_code='28'")


def is_disk_full(error: BaseException | None) -> bool:
  """Whether error, or an error it was raised from, is a failed write for want of space."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
      return True
    if says_disk_full(str(error)):
      return True
    error = error.__cause__ or error.__context__
  return False


def says_disk_full(text: str) -> bool:
  """Whether an error's text (or a log line) reports a full disk or exhausted quota."""
  return any(phrase in text for phrase in DISK_FULL_TEXTS)


@contextlib.contextmanager
def writing(activity: str):
  """Turns a full disk inside the block into DiskFullError(activity); other errors pass."""
  try:
    yield
  except DiskFullError:
    raise
  except Exception as e:
    if is_disk_full(e):
      raise DiskFullError(activity) from e
    raise


@contextlib.contextmanager
def atomic_path(path):
  """Yields a temporary path beside `path` to write; it replaces `path` only when complete.

  The temporary keeps path's suffix (so matplotlib and numpy infer the format) and is
  removed if the write fails, so neither a half-written file nor a stray one is left.
  """
  path = pathlib.Path(path)
  tmp = path.with_name(f'.{path.stem}.tmp{os.getpid()}{path.suffix}')
  try:
    with writing(f'writing {path}'):
      yield tmp
      _fsync(tmp)  # on disk before the rename, so a crash cannot leave an empty file
      os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)


def write_text(path, text: str) -> None:
  """Writes text to path atomically."""
  with atomic_path(path) as tmp:
    tmp.write_text(text)


def write_json(path, obj) -> None:
  """Writes obj as indented JSON to path atomically."""
  write_text(path, json.dumps(obj, indent=2) + '\n')


def save_figure(fig, path, **savefig_kwargs) -> None:
  """fig.savefig(path) atomically: a full disk never leaves a cut-off PNG or SVG."""
  with atomic_path(path) as tmp:
    fig.savefig(tmp, **savefig_kwargs)


def _fsync(path: pathlib.Path) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)
