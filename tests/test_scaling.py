"""benchmarks.scaling: strong and weak scaling records over device counts."""

import json

import pytest
from conftest import run_python

pytestmark = pytest.mark.e2e


def test_scaling_reports_strong_and_weak_records_with_efficiency():
  result = run_python(
    '-m', 'benchmarks.scaling', '--config', 'experiments/mnist_mlp.py', '--devices=1,2',
    '--repeats=1', '--config.data.train_split=train[:1024]', '--config.steps_per_call=4',
  )  # fmt: skip
  assert result.returncode == 0, result.stderr
  records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]
  assert [(r['mode'], r['devices'], r['batch_size']) for r in records] == [
    ('strong', 1, 128), ('strong', 2, 128), ('weak', 1, 128), ('weak', 2, 256)
  ]  # fmt: skip
  assert all(r['train_samples_per_sec'] > 0 for r in records)
  assert records[0]['efficiency'] == records[2]['efficiency'] == 1.0
  assert records[1]['device'] == '2 x cpu'
  table = [line.split() for line in result.stdout.splitlines()[-4:]]
  assert table[3][:3] == ['weak', '2', '256']


def test_asking_for_more_devices_than_exist_is_one_line():
  result = run_python(
    '-m', 'benchmarks.scaling', '--config', 'experiments/mnist_mlp.py', '--devices=1,8',
    env={'JAX_NUM_CPU_DEVICES': '4'},
  )  # fmt: skip
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
    'error: --devices asks for 8 but 4 cpu device(s) exist; on CPU set JAX_NUM_CPU_DEVICES=8'
  )
