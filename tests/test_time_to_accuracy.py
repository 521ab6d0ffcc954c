"""benchmarks.time_to_accuracy: dnn_jax and Keras train to a target on real MNIST, timed."""

import json

import pytest
from conftest import run_python

from benchmarks import records

pytestmark = pytest.mark.e2e

PHASES = ('startup', 'data', 'compile', 'train', 'evaluate')


def test_both_frameworks_reach_the_target_and_report_their_phases(tmp_path):
  path = tmp_path / 'records.jsonl'
  result = run_python(
    '-m', 'benchmarks.time_to_accuracy', '--config', 'experiments/mnist_mlp.py',
    '--target=0.85', '--max_epochs=3', f'--record={path}',
    '--config.data.train_split=train[:6000]', '--config.num_devices=1', '--config.seed=3',
  )  # fmt: skip
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  printed = [json.loads(line) for line in lines if line.startswith('{')]
  written = records.read(path)
  assert (
    [r['peer'] for r in written]
    == [p['peer'] for p in printed]
    == [
      'dnn_jax',
      'keras-tensorflow',
    ]
  )
  for run, record in zip(printed, written, strict=True):
    assert record['kind'] == 'time_to_accuracy' and record['machine']['cpu_cores'] > 0
    assert {k: run[k] for k in record if k in run} == {k: record[k] for k in run if k in record}
    assert (record['config'], record['dtype'], record['target']) == (
      'experiments/mnist_mlp.py',
      'float32',
      0.85,
    )
    assert record['reached'] and record['accuracy'] >= 0.85
    assert 1 <= record['epochs'] <= 3 and record['batch_size'] == 128 and record['seed'] == 3
    phases = [record[f'seconds_{p}'] for p in PHASES]
    assert all(s > 0 for s in phases), record
    assert sum(phases) <= record['seconds_total']
  assert printed[1]['jit_compile'] is False  # Keras's default on a CPU: TensorFlow's kernels
  assert result.stderr.count('Epoch 1/3') == 2  # both runs' epoch lines pass through
  table = [line.split() for line in lines[lines.index('') + 3 :]]
  assert [row[:2] for row in table] == [['float32', 'dnn_jax'], ['float32', 'keras-tensorflow']]
  total = [r['seconds_total'] for r in written]
  accuracy = f'{written[0]["accuracy"]:.4f}'
  assert table[0][8:] == [f'{total[0]:.1f}', str(written[0]['epochs']), accuracy, 'yes']
  assert table[1][-1] == f'{total[1] / total[0]:.2f}x'


def test_a_target_out_of_reach_is_reported_not_an_error(tmp_path):
  result = run_python(
    '-m', 'benchmarks.time_to_accuracy', '--config', 'experiments/mnist_mlp.py',
    '--target=1.0', '--max_epochs=1', "--peers=", '--record=',
    '--config.data.train_split=train[:1024]', '--config.num_devices=1',
  )  # fmt: skip
  assert result.returncode == 0, result.stderr
  (run,) = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]
  assert (run['peer'], run['reached'], run['epochs']) == ('dnn_jax', False, 1)
  assert result.stdout.splitlines()[-1].split()[-1] == 'no'


def test_bad_flags_are_one_line(tmp_path):
  result = run_python(
    '-m', 'benchmarks.time_to_accuracy', '--config', 'experiments/mnist_mlp.py',
    '--target=0.9', '--dtypes=float16', f'--record={tmp_path / "r.jsonl"}',
  )  # fmt: skip
  assert result.returncode == 2
  assert result.stderr.splitlines() == [
    "error: unknown peer or dtype 'float16'; peers: keras-tensorflow, dtypes: float32, bfloat16"
  ]
  assert not (tmp_path / 'r.jsonl').exists()


def test_keras_alone_is_the_side_by_side_of_a_recorded_run(tmp_path):
  result = run_python(
    '-m', 'benchmarks.time_to_accuracy', '--config', 'experiments/mnist_mlp.py',
    '--target=1.0', '--max_epochs=1', '--nowith_dnn_jax', f'--record={tmp_path / "r.jsonl"}',
    '--config.data.train_split=train[:1024]', '--config.num_devices=1',
  )  # fmt: skip
  assert result.returncode == 0, result.stderr
  (run,) = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]
  assert (run['peer'], run['reached'], run['epochs']) == ('keras-tensorflow', False, 1)
  (record,) = records.read(tmp_path / 'r.jsonl')
  assert record['peer'] == 'keras-tensorflow' and record['accuracy'] == run['accuracy']
  assert 'speed-up' in result.stdout and result.stdout.splitlines()[-1].split()[-1] == 'no'


def test_nothing_to_run_is_one_line(tmp_path):
  result = run_python(
    '-m', 'benchmarks.time_to_accuracy', '--config', 'experiments/mnist_mlp.py',
    '--target=0.9', '--nowith_dnn_jax', '--peers=', f'--record={tmp_path / "r.jsonl"}',
  )  # fmt: skip
  assert result.returncode == 2
  assert result.stderr.splitlines() == [
    "error: nothing to run: --nowith_dnn_jax and --peers=''; name a peer or drop one"
  ]
