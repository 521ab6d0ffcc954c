"""Fault injection in subprocesses: SIGKILL anywhere, SIGTERM/SIGINT, NaN, bad checkpoints.

Every run trains the same small MNIST MLP (50 steps per epoch, 3 epochs, a checkpoint every 10
steps, 5 steps per compiled call) and is compared with one uninterrupted run.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import psutil
import pytest
from conftest import REPO, run_python

from dnn_jax import checkpoint, evaluate, parallel

pytestmark = pytest.mark.e2e

RUN = [
  '-m', 'dnn_jax.main', '--config', 'experiments/mnist_mlp.py',
  '--config.data.train_split=train[:6400]',
  '--config.data.validation_split=test[:1000]', '--config.data.test_split=test[:1000]',
  '--config.num_epochs=3', '--config.steps_per_call=5', '--config.checkpoint.every_steps=10',
  '--config.progress=lines', '--noreport',  # reports are tested elsewhere
]  # fmt: skip
STEPS = 150
TIMING = ('seconds', 'train_seconds', 'eval_seconds')


def start(workdir, *overrides, env=None):
  """Starts a training run in the background (a process group of its own)."""
  return subprocess.Popen(
    [sys.executable, *RUN, '--workdir', str(workdir), *overrides],
    cwd=REPO,
    env={**os.environ, **(env or {})},
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    start_new_session=True,
  )


def train(workdir, *overrides):
  result = run_python(*RUN, '--workdir', str(workdir), *overrides)
  assert result.returncode == 0, result.stderr
  return result


def wait_for(proc, condition, timeout=120):
  """Polls every 2 ms until condition() holds; fails if the run ends first."""
  deadline = time.monotonic() + timeout
  while not condition():
    assert proc.poll() is None, f'the run ended first: {proc.communicate()}'
    assert time.monotonic() < deadline, 'timed out'
    time.sleep(0.002)


def saved_steps(workdir):
  directory = workdir / 'checkpoints'
  names = os.listdir(directory) if directory.is_dir() else []
  return sorted(int(n) for n in names if n.isdigit())


def saving(workdir):
  directory = workdir / 'checkpoints'
  return directory.is_dir() and any('tmp' in n for n in os.listdir(directory))


def final_params(workdir):
  ckpts = checkpoint.Checkpoints(workdir / 'checkpoints', read_only=True)
  step = ckpts.latest_step()
  # Onto this process's devices, whatever mesh or processes saved it.
  sharding = parallel.replicated(parallel.make_mesh(0))
  target = jax.tree.map(
    lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
    ckpts.manager.item_metadata(step)['params'],
  )
  restored = ckpts.manager.restore(
    step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target))
  )
  return step, [np.asarray(x) for x in jax.tree.leaves(restored['params'])]


def metrics(workdir):
  written = json.loads((workdir / 'metrics.json').read_text())
  history = [{k: v for k, v in h.items() if k not in TIMING} for h in written['history']]
  return history, written.get('test')


def assert_same_run(workdir, reference, metrics_rel=0.0):
  """Same params bitwise; same metrics, bitwise unless metrics_rel is given."""
  if metrics_rel:
    # Another program sums the same losses (several devices: in another order).
    (history, test), (reference_history, reference_test) = metrics(workdir), metrics(reference)
    assert test == pytest.approx(reference_test, rel=metrics_rel)
    for record, reference_record in zip(history, reference_history, strict=True):
      assert record == pytest.approx(reference_record, rel=metrics_rel)
  else:
    assert metrics(workdir) == metrics(reference)  # bitwise: floats compared exactly
  step, params = final_params(workdir)
  ref_step, ref_params = final_params(reference)
  assert step == ref_step == STEPS
  for a, b in zip(params, ref_params, strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('uninterrupted')
  train(workdir)
  return workdir


@pytest.mark.multiprocess
@pytest.mark.parametrize('seed, pipeline', [(0, 'device'), (2, 'grain')])
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(
  tmp_path, uninterrupted, seed, pipeline
):
  # The uninterrupted run keeps its data on the device: a streamed run, killed and resumed
  # (grain's iterator state restored from the checkpoint), trains on the same batches.
  rng = random.Random(seed)
  after_step = rng.choice(range(10, STEPS - 10, 10))
  flags = [f'--config.data.pipeline={pipeline}']
  proc = start(tmp_path, *flags)
  wait_for(proc, lambda: after_step in saved_steps(tmp_path))
  time.sleep(rng.uniform(0.0, 0.3))  # somewhere in the next compiled calls
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  assert saved_steps(tmp_path)[-1] < STEPS
  result = train(tmp_path, *flags)
  assert f'Resuming from {tmp_path / "checkpoints"}/' in result.stdout
  if pipeline == 'grain':
    kept = saved_steps(tmp_path)[0]
    data = json.loads(
      next((tmp_path / 'checkpoints' / str(kept) / 'data').glob('*.json')).read_text()
    )
    epoch, in_epoch = divmod(kept, STEPS // 3)
    assert data['pass'] == epoch and data['first_step'] + data['steps_read'] == in_epoch
  assert_same_run(tmp_path, uninterrupted, metrics_rel=1e-6 if pipeline == 'grain' else 0.0)


@pytest.mark.multiprocess
def test_a_job_requeued_by_submitit_after_usr2_resumes_and_equals_an_uninterrupted_run(
  tmp_path, uninterrupted
):
  from dnn_jax import launch
  from experiments import mnist_mlp

  config = mnist_mlp.get_config()  # RUN's run, as a config
  config.data.train_split = 'train[:6400]'
  config.data.validation_split = config.data.test_split = 'test[:1000]'
  config.num_epochs, config.steps_per_call, config.checkpoint.every_steps = 3, 5, 10
  config.progress = 'lines'
  job = launch.submit(config, tmp_path, executor='local', time_min=60, report=False)
  deadline = time.monotonic() + 180
  while 20 not in saved_steps(tmp_path):
    assert not job.done() and time.monotonic() < deadline, job.stdout()
    time.sleep(0.01)
  # As SLURM warns a job's tasks before its time limit (submitit asks for USR2).
  for task in psutil.Process(job._process.pid).children(recursive=True):
    task.send_signal(signal.SIGUSR2)
  assert 'test' in job.result()
  log = job.stdout()
  assert 'SIGUSR2 received: saving after the current compiled call' in log
  assert 'Requeued job' in log and 'Resuming from' in log
  assert_same_run(tmp_path, uninterrupted)


@pytest.mark.multiprocess
def test_sigkill_during_a_save_keeps_the_previous_checkpoint(tmp_path, uninterrupted):
  for _ in range(5):  # a save takes milliseconds: retry until the kill lands inside one
    shutil.rmtree(tmp_path / 'checkpoints', ignore_errors=True)
    proc = start(tmp_path)
    wait_for(proc, lambda: saved_steps(tmp_path) and saving(tmp_path))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if saving(tmp_path):
      break
  assert saving(tmp_path), 'no kill landed during a save'
  kept = saved_steps(tmp_path)
  result = train(tmp_path)
  assert f'Resuming from {tmp_path / "checkpoints" / str(kept[-1])} ' in result.stdout
  assert not saving(tmp_path)  # the half-written one was cleaned up
  assert_same_run(tmp_path, uninterrupted)


@pytest.mark.multiprocess
def test_sigterm_saves_and_exits_cleanly_then_resumes(tmp_path, uninterrupted):
  proc = start(tmp_path)
  wait_for(proc, lambda: 20 in saved_steps(tmp_path))
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err
  step = int(out.splitlines()[-1].split()[3].rstrip(';'))
  assert out.splitlines()[-1] == f'preempted at step {step}; run the same command to resume'
  assert 20 < step < STEPS and step % 5 == 0  # the end of a compiled call
  assert step in saved_steps(tmp_path)
  assert 'Traceback' not in err
  train(tmp_path)
  assert_same_run(tmp_path, uninterrupted)
  # metrics.json names both starts: where each began and where it ran.
  starts = json.loads((tmp_path / 'metrics.json').read_text())['starts']
  assert [s['step'] for s in starts] == [0, step]
  assert all(s['machine']['commit'] and s['machine']['cpu_model'] for s in starts)


@pytest.mark.multiprocess
def test_sigint_twice_exits_at_once_even_while_compiling(tmp_path):
  # Compiling for real: programs from the tests' shared cache could train past the signals.
  proc = start(tmp_path, env={'JAX_ENABLE_COMPILATION_CACHE': 'false'})
  wait_for(proc, lambda: (tmp_path / 'checkpoints').is_dir())  # data loaded; compiling next
  proc.send_signal(signal.SIGINT)
  time.sleep(0.2)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 130
  assert 'SIGINT received: saving after the current compiled call' in err
  assert 'SIGINT again: exiting now without saving' in err
  assert not saved_steps(tmp_path)


@pytest.mark.multiprocess
def test_resume_on_another_device_count_and_back(tmp_path, uninterrupted):
  for devices in (4, 1):  # 4 devices, then 1, then 4 to the end
    begun = (saved_steps(tmp_path) or [0])[-1]
    proc = start(tmp_path, f'--config.num_devices={devices}')
    wait_for(proc, lambda begun=begun: saved_steps(tmp_path)[-1:] > [begun + 10])
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and 'preempted at step' in out, err
  train(tmp_path, '--config.num_devices=4')
  history, test = metrics(tmp_path)
  ref_history, ref_test = metrics(uninterrupted)
  for got, want in zip(history, ref_history, strict=True):  # float sums in another order
    assert got == pytest.approx(want, rel=1e-2, abs=5e-3)
  assert test == pytest.approx(ref_test, rel=1e-2, abs=5e-3)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, uninterrupted):
  shutil.copytree(uninterrupted, tmp_path, dirs_exist_ok=True)
  result = run_python(
    *RUN, '--workdir', str(tmp_path), '--config.num_epochs=4',
    '--config.optimizer.learning_rate=1e38',
  )  # fmt: skip
  assert result.returncode == 2
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1, result.stderr
  step = int(errors[0].split()[5])
  assert STEPS < step <= STEPS + 10
  assert errors[0] == (
    f'error: non-finite loss at step {step} (epoch 4); lower the learning rate, or set '
    f'--config.on_nonfinite=skip_step to skip such steps; last good checkpoint: step {STEPS} '
    f'in {tmp_path / "checkpoints"}'
  )
  assert 'Traceback' not in result.stderr
  assert saved_steps(tmp_path)[-1] == STEPS
  assert metrics(tmp_path) == metrics(uninterrupted)


def test_checkpoint_of_another_model_is_one_line_and_changes_nothing(tmp_path, uninterrupted):
  shutil.copytree(uninterrupted, tmp_path, dirs_exist_ok=True)
  before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob('*'))
  result = run_python(*RUN, '--workdir', str(tmp_path), '--config.model.hidden_sizes=(256,)')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
    f'error: checkpoint {tmp_path / "checkpoints" / str(STEPS)} does not fit this model: '
    'params layers.1.linear.bias has shape (512,) there and (256,) here; use the config it was '
    'saved with, or another --workdir'
  )
  assert 'Traceback' not in result.stderr
  assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob('*')) == before


def test_truncated_latest_checkpoint_falls_back_and_the_run_still_matches(tmp_path, uninterrupted):
  shutil.copytree(uninterrupted, tmp_path, dirs_exist_ok=True)
  latest = tmp_path / 'checkpoints' / str(STEPS)
  files = [p for p in (latest / 'params').rglob('*') if p.is_file()]
  biggest = max(files, key=lambda p: p.stat().st_size)
  os.truncate(biggest, biggest.stat().st_size // 3)
  result = train(tmp_path)
  warnings = [line for line in result.stderr.splitlines() if line.startswith('warning: ')]
  assert len(warnings) == 1 and warnings[0].startswith(
    f'warning: checkpoint {latest} is unreadable'
  )
  assert f'using step {STEPS - 10}' in warnings[0]
  assert_same_run(tmp_path, uninterrupted)


def test_init_from_starts_a_new_run_from_saved_weights(tmp_path, uninterrupted):
  result = train(tmp_path, f'--config.init_from={uninterrupted}', '--config.num_epochs=1')
  assert f'Initialized weights from {uninterrupted / "checkpoints" / str(STEPS)}' in result.stdout
  history, _ = metrics(tmp_path)
  ref_history, _ = metrics(uninterrupted)
  assert history[0]['epoch'] == 1
  assert history[0]['val_accuracy'] > ref_history[0]['val_accuracy']  # it starts trained


def test_evaluate_reproduces_the_test_metrics(tmp_path, uninterrupted, capsys):
  result = run_python('-m', 'dnn_jax.evaluate', '--workdir', str(uninterrupted))
  assert result.returncode == 0, result.stderr
  _, test = metrics(uninterrupted)
  assert f'Test accuracy: {test["accuracy"]:.4f}' in result.stdout
  written = json.loads((uninterrupted / 'eval.json').read_text())
  assert written['test'] == test and written['step'] == STEPS
  best = evaluate.evaluate_checkpoint(uninterrupted, 'best')
  assert best['step'] == STEPS  # the last epoch validates best here
  assert f'Test loss: {test["loss"]:.4f}' in capsys.readouterr().out
  bad = run_python('-m', 'dnn_jax.evaluate', '--workdir', str(uninterrupted), '--checkpoint=7')
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1] == (
    f'error: --checkpoint=7 is not best, latest or a saved step; saved steps: '
    f'{", ".join(map(str, saved_steps(uninterrupted)))}'
  )
