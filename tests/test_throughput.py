"""benchmarks.throughput: runs on a small split and reports every documented key."""

import json

from conftest import run_python

KEYS = {
  'config', 'device', 'train_samples_per_sec', 'eval_samples_per_sec', 'step_ms',
  'compile_seconds', 'flops_per_sample', 'train_gflops', 'matmul_gflops', 'matmul_fraction',
  'peak_memory_mb',
}  # fmt: skip
PEER_KEYS = {'config', 'peer', 'device', 'train_samples_per_sec', 'eval_samples_per_sec',
             'compile_seconds'}  # fmt: skip


def test_throughput_reports_json_then_a_table():
  result = run_python(
    '-m', 'benchmarks.throughput', '--config', 'experiments/mnist_mlp.py', '--repeats=1',
    '--config.data.train_split=train[:1024]', '--config.data.validation_split=test[:1000]',
    '--config.num_devices=1',
  )  # fmt: skip
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  numbers = json.loads(next(line for line in lines if line.startswith('{')))
  assert set(numbers) >= KEYS
  assert numbers['config'] == 'experiments/mnist_mlp.py'
  assert numbers['device'] == '1 x cpu'
  # XLA's count for the MLP: about 2 FLOPs per weight forward, 4 backward, less the input grad.
  assert 4.5e6 < numbers['flops_per_sample'] < 6.0e6
  assert all(numbers[k] > 0 for k in KEYS - {'config', 'device'})
  table = [line.split() for line in lines if not line.startswith('{')]
  assert ['train_samples_per_sec', f'{numbers["train_samples_per_sec"]:,.2f}'] in table


def test_peers_time_the_same_model_in_keras_on_both_backends():
  result = run_python(
    '-m', 'benchmarks.throughput', '--config', 'experiments/mnist_mlp.py', '--repeats=1',
    '--config.data.train_split=train[:1024]', '--config.data.validation_split=test[:500]',
    '--config.num_devices=1', '--peers',
  )  # fmt: skip
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  objects = [json.loads(line) for line in lines if line.startswith('{')]
  assert [o.get('peer') for o in objects] == [
    None,
    'keras-tensorflow',
    'keras-tensorflow-nojit',
    'keras-jax',
  ]
  for peer in objects[1:]:
    assert set(peer) >= PEER_KEYS and peer['train_samples_per_sec'] > 0
  ratio_rows = [line.split() for line in lines if line.endswith('x')]
  assert [row[0] for row in ratio_rows] == ['dnn_jax', *[o['peer'] for o in objects[1:]]]
  want = objects[0]['train_samples_per_sec'] / objects[3]['train_samples_per_sec']
  assert ratio_rows[3][-1] == f'{want:.2f}x'
