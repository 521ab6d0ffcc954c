"""benchmarks.profile: ranks a real step's XLA kernels, the matmuls of an MLP among the first."""

import re

import pytest
from conftest import run_python

pytestmark = pytest.mark.e2e


def test_profile_ranks_the_mlps_matmuls_with_their_hlo():
  result = run_python(
    '-m', 'benchmarks.profile', '--config', 'experiments/mnist_mlp.py', '--top=8',
    '--config.data.train_split=train[:2560]', '--config.data.validation_split=test[:500]',
    '--config.num_devices=1', '--config.steps_per_call=10',
  )  # fmt: skip
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  header, rows = lines[-9], lines[-8:]
  assert header.startswith('1280 samples in 10 steps per call;'), header
  times = [float(re.match(r'\s*([\d.]+) ms', row).group(1)) for row in rows]
  assert times == sorted(times, reverse=True) and times[0] > 0
  # A 3x512 MLP's step is its matmuls: the costliest kernels are [128, 512] dots, named in HLO.
  assert any('f32[128,512]' in row and 'dot_general' in row for row in rows[:3]), rows
