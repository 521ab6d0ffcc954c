"""Two processes on localhost (gloo collectives), 2 CPU devices each == 1 process, 4 devices."""

import json
import os
import socket
import subprocess
import sys

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


def start(workdir, devices, *flags):
  env = {**os.environ, 'JAX_NUM_CPU_DEVICES': str(devices)}
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


def test_two_processes_train_like_one_with_four_devices(tmp_path):
  outs = start_two(tmp_path / 'two')
  assert '4 cpu device(s)' in outs[0][0] and 'Test accuracy' in outs[0][0]
  # Process 1 trains in step but leaves the talking to process 0 (gloo prints its own lines).
  assert not any(line.startswith(('Epoch', 'Test')) for line in outs[1][0].splitlines())
  # Each process decoded only its half of every split.
  for i, (out, _) in enumerate(outs):
    assert f'Process {i} of 2 read 640 of the 1,280 examples of train[:1280]' in out
    assert f'Process {i} of 2 read 250 of the 500 examples of test[:500]' in out

  one = start(tmp_path / 'one', 4, '--config.num_devices=4')
  _, err = one.communicate(timeout=300)
  assert one.returncode == 0, err

  two_metrics, one_metrics = (
    json.loads((tmp_path / name / 'metrics.json').read_text()) for name in ('two', 'one')
  )
  assert two_metrics['devices']['count'] == 4
  for a, b in zip(two_metrics['history'], one_metrics['history'], strict=True):
    for key in ('loss', 'accuracy', 'val_loss', 'val_accuracy'):
      assert a[key] == pytest.approx(b[key], rel=1e-5)  # gloo may sum in another order
  step_two, params_two = final_params(tmp_path / 'two')
  step_one, params_one = final_params(tmp_path / 'one')
  assert step_two == step_one == 20
  for a, b in zip(params_two, params_one, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)

  # A truncated latest checkpoint: both processes agree to fall back to the one before (process
  # 0 moves it aside, process 1 waits), retrain the last epoch and end as before.
  latest = tmp_path / 'two' / 'checkpoints' / '20'
  biggest = max((p for p in latest.rglob('*') if p.is_file()), key=lambda p: p.stat().st_size)
  os.truncate(biggest, biggest.stat().st_size // 3)
  outs = start_two(tmp_path / 'two')
  for _, err in outs:
    assert f'warning: checkpoint {latest} is unreadable' in err and 'using step 10' in err
  assert (tmp_path / 'two' / 'checkpoints_unreadable' / '20').is_dir()
  step_again, params_again = final_params(tmp_path / 'two')
  assert step_again == 20
  for a, b in zip(params_again, params_one, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
