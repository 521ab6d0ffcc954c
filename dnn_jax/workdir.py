"""A run's workdir: created, checked writable, and locked so that one run writes it at a time."""

import contextlib
import errno
import fcntl
import json
import os
import pathlib
import socket
import sys

import jax

from dnn_jax import parallel
from dnn_jax.errors import UserError

LOCK_FILE = '.lock'  # holds the locking process's id and host, for the refusal's message
_held: dict[pathlib.Path, int] = {}  # lock files this process holds -> nesting depth


def prepare(workdir) -> pathlib.Path:
  """Creates workdir if needed and checks that a file can be written in it."""
  workdir = pathlib.Path(workdir)
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / f'.write-test-{os.getpid()}'
    probe.write_text('')
    probe.unlink()
  except OSError as e:
    raise UserError(
      f'workdir {workdir} is not writable ({e.strerror}); pass another --workdir'
    ) from e
  return workdir


@contextlib.contextmanager
def locked(workdir):
  """Holds an exclusive lock on workdir for the block, or refuses in one line.

  An fcntl lock, which the OS releases when the process dies: a killed run leaves no stale
  lock. Re-entrant within a process. In a multi-process run, process 0 holds it for all;
  every process refuses together when it cannot. Call after jax.distributed is initialized.
  """
  path = (pathlib.Path(workdir) / LOCK_FILE).resolve()
  if path in _held:
    _held[path] += 1
    try:
      yield
    finally:
      _held[path] -= 1
    return
  fd, holder = None, None
  if jax.process_index() == 0:
    fd, holder = _acquire(path)
  if not parallel.all_processes_agree(holder is None):
    if fd is not None:
      os.close(fd)
    by = holder or 'another run (process 0 of this one found the workdir locked)'
    raise UserError(f'workdir {workdir} is in use by {by}; wait for it or pass another --workdir')
  _held[path] = 1
  try:
    yield
  finally:
    del _held[path]
    if fd is not None:
      os.close(fd)  # releases the lock; the file stays: deleting it would race a new locker


def _acquire(path: pathlib.Path) -> tuple[int | None, str | None]:
  """(fd holding the lock, None), or (None, who holds it) when another process does."""
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    os.close(fd)
    if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
      return None, _describe_holder(path)
    # Some network filesystems have no locks: run unguarded rather than not at all.
    print(
      f'warning: cannot lock {path} ({e.strerror}); nothing stops a second run on this workdir',
      file=sys.stderr,
    )
    return None, None
  holder = {'pid': os.getpid(), 'host': socket.gethostname()}
  os.ftruncate(fd, 0)
  os.pwrite(fd, (json.dumps(holder) + '\n').encode(), 0)
  return fd, None


def _describe_holder(path: pathlib.Path) -> str:
  try:
    holder = json.loads(path.read_text())
    return f'process {holder["pid"]} on host {holder["host"]}'
  except (OSError, ValueError, KeyError, TypeError):  # caught between its truncate and write
    return 'another process'
