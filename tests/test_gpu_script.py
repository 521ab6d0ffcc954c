"""benchmarks/gpu.sh runs on the CPU too, and cached data loads without tensorflow_datasets."""

import os
import subprocess
import sys

import pytest
from conftest import REPO, run_python

pytestmark = pytest.mark.e2e

NO_TFDS_LOAD = (
  'import sys\n'
  "sys.modules['tensorflow_datasets'] = None  # as on the GPU image: importing it fails\n"
  'from dnn_jax.data import splits\n'
  'from experiments import mnist_mlp\n'
  'loaded = splits.load(mnist_mlp.get_config().data)\n'
  "print(loaded.train['image'].shape, loaded.num_classes)\n"
)


def test_cached_mnist_loads_without_tensorflow_datasets(mnist):
  del mnist  # the fixture has decoded and cached the train and test splits
  result = run_python('-c', NO_TFDS_LOAD)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == '(60000, 28, 28, 1) 10'


def test_gpu_script_runs_on_the_cpu_and_prints_one_table(tmp_path):
  env = {**os.environ, 'QUICK': '1', 'OUT': str(tmp_path), 'PYTHON': sys.executable}
  result = subprocess.run(
    ['bash', 'benchmarks/gpu.sh'], cwd=REPO, env=env, capture_output=True, text=True, check=False
  )
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  rows = [line.split() for line in lines if ' x cpu ' in line]
  assert [row[0] for row in rows] == ['mnist_mlp', 'cifar10_cnn_bf16_b512', 'resnet11']
  # CIFAR-10 is too big to carry to a GPU machine: its rows say they timed synthetic data.
  assert [row[4] for row in rows] == ['real', 'synthetic', 'synthetic']
  assert rows[1][5:7] == ['bfloat16', '512']
  assert lines[-1].startswith('mnist_mlp, 1 epochs on cpu: training ')
  assert 'Test accuracy 0.' in lines[-1]
