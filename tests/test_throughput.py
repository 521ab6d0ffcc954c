"""benchmarks.throughput: runs on a small split and reports every documented key."""

import importlib.util
import json

import pytest
from conftest import run_python

from benchmarks import records, steady, throughput
from experiments import cifar10_resnet110_aug

pytestmark = pytest.mark.e2e

# Each side times a couple of steps only: these tests check the plumbing, not the speed.
TINY_BUDGET = ('--warmup_steps=1', '--min_steps=3', '--min_seconds=0', '--max_seconds=5',
               '--eval_repeats=1')  # fmt: skip

KEYS = {
  'config', 'device', 'train_samples_per_sec', 'eval_samples_per_sec', 'step_ms',
  'compile_seconds', 'flops_per_sample', 'train_gflops', 'matmul_gflops', 'matmul_fraction',
  'peak_memory_mb',
}  # fmt: skip
PEER_KEYS = {'config', 'peer', 'dtype', 'device', 'train_samples_per_sec', 'eval_samples_per_sec',
             'compile_seconds', 'train_samples_per_sec_min', 'train_samples_per_sec_max',
             'steps_timed', 'batch_size'}  # fmt: skip


def test_throughput_reports_json_then_a_table_for_both_pipelines(tmp_path):
  record = tmp_path / 'records.jsonl'
  result = run_python(
    '-m', 'benchmarks.throughput', '--config', 'experiments/mnist_mlp.py', *TINY_BUDGET,
    '--config.data.train_split=train[:1024]', '--config.data.validation_split=test[:1000]',
    '--config.num_devices=1', '--pipelines=device,grain', f'--record={record}',
  )  # fmt: skip
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  numbers, streamed = (json.loads(line) for line in lines if line.startswith('{'))
  assert (numbers['pipeline'], numbers['input_wait_fraction']) == ('device', 0.0)
  assert streamed['pipeline'] == 'grain' and 0 < streamed['input_wait_fraction'] < 1
  ratio = streamed['train_samples_per_sec'] / numbers['train_samples_per_sec']
  assert lines[-1].startswith('dnn_jax streamed by grain in float32: ')
  assert lines[-1].endswith(f'; grain / device = {ratio:.2f}x')
  assert [r['kind'] for r in records.read(record)] == ['throughput', 'pipeline']
  assert set(numbers) >= KEYS
  assert numbers['config'] == 'experiments/mnist_mlp.py'
  assert numbers['device'] == '1 x cpu'
  # XLA's count for the MLP: about 2 FLOPs per weight forward, 4 backward, less the input grad.
  assert 4.5e6 < numbers['flops_per_sample'] < 6.0e6
  assert all(numbers[k] > 0 for k in KEYS - {'config', 'device'})
  row = next(line.split() for line in lines if line.startswith('dnn_jax '))
  assert row[1] == f'{numbers["train_samples_per_sec"]:,.0f}'


def test_peers_time_the_same_model_in_every_installed_framework(tmp_path):
  # In bfloat16, each peer's mixed precision; float32 is the same loop (the test above).
  record = tmp_path / 'records.jsonl'
  result = run_python(
    '-m', 'benchmarks.throughput', '--config', 'experiments/mnist_mlp.py', *TINY_BUDGET,
    '--config.data.train_split=train[:1024]', '--config.data.validation_split=test[:500]',
    '--config.num_devices=1', '--peers=all', '--dtypes=bfloat16', f'--record={record}',
  )  # fmt: skip
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert any(line.startswith('# ') and 'family/model' in line for line in lines)  # the CPU
  objects = [json.loads(line) for line in lines if line.startswith('{')]
  peers = ['keras-tensorflow', 'keras-tensorflow-xla', 'keras-jax']
  if importlib.util.find_spec('torch'):
    peers += ['torch', 'torch-compile']
  else:
    assert 'note: PyTorch is not installed' in result.stdout
  want = [(name, 'bfloat16') for name in ['dnn_jax', *peers]]
  assert [(o['peer'], o['dtype']) for o in objects] == want
  for row in objects:
    assert set(row) >= PEER_KEYS, row['peer']
    assert row['train_samples_per_sec_min'] <= row['train_samples_per_sec']
    assert row['train_samples_per_sec'] <= row['train_samples_per_sec_max']
    assert row['steps_timed'] >= 3 and row['batch_size'] == 128
  keras_jax = next(o for o in objects if o['peer'] == 'keras-jax' and o['dtype'] == 'bfloat16')
  ours = next(o for o in objects if o['peer'] == 'dnn_jax' and o['dtype'] == 'bfloat16')
  keras_jax_rows = [line.split() for line in lines if line.startswith('keras-jax ')]
  ratio = ours['train_samples_per_sec'] / keras_jax['train_samples_per_sec']
  assert keras_jax_rows[0][-1] == f'{ratio:.2f}x'
  assert sum(line.startswith('fastest peer in ') for line in lines) == 1
  saved = records.read(record)
  assert [(r['peer'], r['dtype']) for r in saved] == want
  assert len({r['run_id'] for r in saved}) == 1
  assert saved[0]['kind'] == 'throughput' and saved[0]['machine']['cpu_family_model']
  assert saved[0]['command'].startswith('python -m benchmarks.throughput --config')


def test_beside_peers_dnn_jax_is_timed_without_augmentation_as_they_are():
  config = cifar10_resnet110_aug.get_config()
  alone = throughput.config_to_time(config, 'bfloat16', with_peers=False)
  assert alone.dtype == 'bfloat16' and alone.augment == config.augment
  assert alone.eval_augment == config.eval_augment
  beside = throughput.config_to_time(config, 'float32', with_peers=True)
  assert not beside.augment and not beside.eval_augment and beside.dtype == 'float32'
  assert config.augment and config.dtype == 'float32'  # the experiment itself is untouched


def test_an_unknown_peer_is_one_line():
  result = run_python(
    '-m', 'benchmarks.throughput', '--config', 'experiments/mnist_mlp.py', '--peers=keras-tf',
  )  # fmt: skip
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith('error: --peers: unknown keras-tf;')


def test_steady_budget_drops_the_warmup_and_waits_for_both_minimums():
  budget = steady.Budget(warmup_steps=2, min_steps=3, min_seconds=1.0, max_seconds=5.0)
  assert not budget.enough([9.0, 9.0, 0.5, 0.5])  # two steps after the warm-up: too few
  assert not budget.enough([9.0, 9.0, 0.1, 0.1, 0.1])  # enough steps, too few seconds
  assert budget.enough([9.0, 9.0, 0.5, 0.5, 0.5])
  assert budget.enough([9.0, 9.0, 6.0])  # a slow peer stops at max_seconds
  timed = steady.summary([9.0, 9.0, 0.5, 0.25, 1.0], batch_size=100, budget=budget)
  assert timed['train_samples_per_sec'] == 200.0  # at the median step, 0.5 s
  assert (timed['train_samples_per_sec_min'], timed['train_samples_per_sec_max']) == (100, 400)
  assert timed['steps_timed'] == 3 and timed['seconds_timed'] == 1.75
