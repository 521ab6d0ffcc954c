"""Two processes on localhost (gloo collectives), 2 CPU devices each == 1 process, 4 devices;
device-resident or streamed, started by flags or finding each other as SLURM's tasks."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO
from test_resume import final_params

pytestmark = [pytest.mark.e2e, pytest.mark.multiprocess]

RUN = [
  '-m', 'dnn_jax.main', '--config', 'experiments/mnist_mlp.py',
  '--config.data.train_split=train[:1280]',
  '--config.data.validation_split=test[:500]', '--config.data.test_split=test[:500]',
  '--config.num_epochs=2', '--config.steps_per_call=5', '--config.progress=lines',
  '--noreport',  # reports are tested elsewhere
]  # fmt: skip


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def start(workdir, devices, *flags, env=None):
  env = {**os.environ, 'JAX_NUM_CPU_DEVICES': str(devices), **(env or {})}
  command = [sys.executable, *RUN, '--workdir', str(workdir), *flags]
  pipe = subprocess.PIPE
  return subprocess.Popen(command, cwd=REPO, env=env, stdout=pipe, stderr=pipe, text=True)


def start_two(workdir):
  """Both processes of a 2-process run, 2 CPU devices each; returns their (stdout, stderr)."""
  address = f'--config.distributed.coordinator_address=127.0.0.1:{free_port()}'
  procs = [
    start(workdir, 2, address, '--config.distributed.num_processes=2',
          f'--config.distributed.process_id={i}')
    for i in range(2)
  ]  # fmt: skip
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs, strict=True):
    assert p.returncode == 0, err
  return outs


@pytest.fixture(scope='module')
def one_process(tmp_path_factory):
  """The reference: one process with 4 devices, the data on them."""
  workdir = tmp_path_factory.mktemp('one')
  one = start(workdir, 4, '--config.num_devices=4')
  _, err = one.communicate(timeout=300)
  assert one.returncode == 0, err
  return workdir


def assert_same_as(workdir, reference):
  metrics, reference_metrics = (
    json.loads((w / 'metrics.json').read_text()) for w in (workdir, reference)
  )
  assert metrics['devices']['count'] == 4
  for a, b in zip(metrics['history'], reference_metrics['history'], strict=True):
    for key in ('loss', 'accuracy', 'val_loss', 'val_accuracy'):
      assert a[key] == pytest.approx(b[key], rel=1e-5)  # gloo may sum in another order
  step, params = final_params(workdir)
  reference_step, reference_params = final_params(reference)
  assert step == reference_step == 20
  for a, b in zip(params, reference_params, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_two_processes_train_like_one_with_four_devices(tmp_path, one_process):
  outs = start_two(tmp_path / 'two')
  assert '4 cpu device(s)' in outs[0][0] and 'Test accuracy' in outs[0][0]
  # Process 1 trains in step but leaves the talking to process 0 (gloo prints its own lines).
  assert not any(line.startswith(('Epoch', 'Test')) for line in outs[1][0].splitlines())
  # Each process decoded only its half of every split.
  for i, (out, _) in enumerate(outs):
    assert f'Process {i} of 2 read 640 of the 1,280 examples of train[:1280]' in out
    assert f'Process {i} of 2 read 250 of the 500 examples of test[:500]' in out

  assert_same_as(tmp_path / 'two', one_process)

  # A truncated latest checkpoint: both processes agree to fall back to the one before (process
  # 0 moves it aside, process 1 waits), retrain the last epoch and end as before.
  latest = tmp_path / 'two' / 'checkpoints' / '20'
  biggest = max((p for p in latest.rglob('*') if p.is_file()), key=lambda p: p.stat().st_size)
  os.truncate(biggest, biggest.stat().st_size // 3)
  outs = start_two(tmp_path / 'two')
  for _, err in outs:
    assert f'warning: checkpoint {latest} is unreadable' in err and 'using step 10' in err
  assert (tmp_path / 'two' / 'checkpoints_unreadable' / '20').is_dir()
  assert_same_as(tmp_path / 'two', one_process)


def slurm_task(workdir, task: int, port: int, *flags):
  """One of 2 tasks on localhost, with the variables srun sets, and no distributed flags."""
  env = {
    'SLURM_JOB_ID': '4242', 'SLURM_STEP_NODELIST': 'localhost', 'SLURM_STEP_NUM_NODES': '1',
    'SLURM_NTASKS': '2', 'SLURM_PROCID': str(task), 'SLURM_LOCALID': str(task),
    'JAX_COORDINATOR_PORT': str(port),  # JAX's port from the job id would do; a free one is safer
  }  # fmt: skip
  return start(workdir, 2, *flags, env=env)


def test_slurm_tasks_streaming_stop_together_on_one_sigterm_and_resume_like_one_process(
  tmp_path, one_process
):
  workdir, flags = (
    tmp_path / 'slurm',
    ['--config.data.pipeline=grain', '--config.checkpoint.every_steps=5'],
  )
  port = free_port()
  procs = [slurm_task(workdir, i, port, *flags) for i in range(2)]
  deadline = time.monotonic() + 240
  while not (workdir / 'checkpoints' / '5').is_dir():
    assert all(p.poll() is None for p in procs) and time.monotonic() < deadline, procs[
      0
    ].stderr.read()
    time.sleep(0.01)
  procs[1].send_signal(signal.SIGTERM)  # only one of them: both must save the same step
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs, strict=True):
    assert p.returncode == 0, err
  assert 'SIGTERM received' in outs[1][1] and 'SIGTERM' not in outs[0][1]
  for i, (out, _) in enumerate(outs):
    assert f'Cluster: slurm found; process {i} of 2, coordinator localhost:{port}' in out
  stopped = json.loads((workdir / 'metrics.json').read_text())['preempted']['step']
  assert 5 <= stopped < 20 and stopped % 5 == 0
  assert stopped in [int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit()]
  # Each process saved its own stream state, at that step.
  data = workdir / 'checkpoints' / str(stopped) / 'data'
  assert sorted(p.name for p in data.glob('*.json')) == [
    'process_0-of-2.json',
    'process_1-of-2.json',
  ]

  port = free_port()
  procs = [slurm_task(workdir, i, port, *flags) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs, strict=True):
    assert p.returncode == 0, err
  assert f'Resuming from {workdir / "checkpoints" / str(stopped)}' in outs[0][0]
  assert_same_as(workdir, one_process)
