"""dnn_jax.workdir: one run per workdir at a time; the lock dies with its process."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import REPO, run_python

from dnn_jax import workdir
from dnn_jax.errors import UserError

pytestmark = pytest.mark.e2e

# A run that trains until it is killed: 2,048 images, many epochs.
LONG_RUN = (
  '-m', 'dnn_jax.main', '--config', 'experiments/mnist_mlp.py', '--config.num_devices=1',
  '--config.num_epochs=1000', '--config.data.train_split=train[:2048]',
  '--config.data.validation_split=test[:500]', '--config.model.hidden_sizes=(32,)',
  '--config.progress=lines', '--noreport',
)  # fmt: skip


def _start(path):
  """Starts (or resumes) LONG_RUN on path; returns the process once an epoch has ended."""
  process = subprocess.Popen(
    [sys.executable, *LONG_RUN, '--workdir', str(path)],
    cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
  )  # fmt: skip
  for line in process.stdout:  # training has begun: the lock is held, checkpoints exist
    if line.startswith('Epoch ') and '/1000 - ' in line:
      return process
  process.kill()
  pytest.fail(f'the first run never trained: {process.stderr.read()}')


@pytest.mark.multiprocess
def test_a_second_run_on_a_busy_workdir_is_refused_and_a_killed_run_frees_it(tmp_path):
  path = tmp_path / 'run'
  first = _start(path)
  try:
    second = run_python(*LONG_RUN, '--workdir', str(path))
    assert first.poll() is None  # still training
  finally:
    first.send_signal(signal.SIGKILL)  # no chance to release anything by itself
    first.wait()
  assert second.returncode == 2
  assert second.stderr.splitlines() == [
    f'error: workdir {path} is in use by process {first.pid} on host {socket.gethostname()}; '
    f'wait for it or pass another --workdir'
  ]
  assert 'Resuming' not in second.stdout  # refused before reading the checkpoints

  third = _start(path)  # the OS released the killed run's lock: no stale lock
  third.send_signal(signal.SIGTERM)  # preempted: it saves and stops cleanly
  assert third.wait(timeout=120) == 0


def test_the_lock_is_reentrant_in_a_process_and_exclusive_between_processes(tmp_path):
  holder = (
    'import sys, time\n'
    'from dnn_jax import workdir\n'
    'with workdir.locked(sys.argv[1]):\n'
    '  print("locked", flush=True)\n'
    '  time.sleep(60)\n'
  )
  other = subprocess.Popen(
    [sys.executable, '-c', holder, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True
  )
  try:
    assert other.stdout.readline() == 'locked\n'
    busy = pytest.raises(UserError, match=f'in use by process {other.pid} on host ')
    with busy, workdir.locked(tmp_path):
      pass
  finally:
    other.kill()
    other.wait()
  deadline = time.monotonic() + 30
  while True:  # the OS releases the lock as the killed process goes
    try:
      with workdir.locked(tmp_path), workdir.locked(tmp_path):  # nested: no self-deadlock
        break
    except UserError:
      assert time.monotonic() < deadline
      time.sleep(0.1)
  assert (tmp_path / workdir.LOCK_FILE).is_file()
  with workdir.locked(tmp_path):  # released on leaving the block: it can be taken again
    assert json.loads((tmp_path / workdir.LOCK_FILE).read_text())['pid'] == os.getpid()
