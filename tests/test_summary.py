"""dnn_jax.summary: the Keras-style table, alone and from the command line."""

import pytest
from conftest import run_python

from dnn_jax import models, summary
from experiments import mnist_mlp

KERAS_MLP_ROWS = [
  ('flatten', 'Flatten', '(None, 784)', 0),
  ('dense', 'Dense', '(None, 512)', 401_920),
  ('dropout', 'Dropout', '(None, 512)', 0),
  ('dense_1', 'Dense', '(None, 512)', 262_656),
  ('dropout_1', 'Dropout', '(None, 512)', 0),
  ('dense_2', 'Dense', '(None, 512)', 262_656),
  ('dropout_2', 'Dropout', '(None, 512)', 0),
  ('dense_3', 'Dense', '(None, 10)', 5_130),
]


def test_rows_are_keras_names_shapes_and_counts():
  config = mnist_mlp.get_config()
  model = models.create(config.model, input_shape=(28, 28, 1), num_classes=10, seed=0)
  assert summary.rows(model, (28, 28, 1)) == KERAS_MLP_ROWS


@pytest.mark.e2e
def test_command_line_prints_totals():
  result = run_python('-m', 'dnn_jax.summary', '--config', 'experiments/mnist_mlp.py')
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert lines[0] == 'Model: "mlp"'
  assert ' dense_3 (Dense)             (None, 10)                5,130' in lines
  assert 'Total params: 932,362' in lines
  assert 'Trainable params: 932,362' in lines
  assert 'Non-trainable params: 0' in lines


@pytest.mark.e2e
def test_command_line_takes_overrides():
  result = run_python(
    '-m',
    'dnn_jax.summary',
    '--config',
    'experiments/mnist_mlp.py',
    '--config.model.hidden_sizes=(512, 512)',
  )
  assert result.returncode == 0, result.stderr
  assert 'Total params: 669,706' in result.stdout.splitlines()


@pytest.mark.slow
def test_resnet_rows_count_batch_norm_statistics_as_keras_does():
  from experiments import cifar10_resnet110_aug

  config = cifar10_resnet110_aug.get_config()
  config.model.depth = 20
  model = models.create(config.model, input_shape=(32, 32, 3), num_classes=10, seed=0)
  table = summary.rows(model, (32, 32, 3))
  assert table[:2] == [
    ('conv2d', 'Conv2D', '(None, 32, 32, 16)', 448),
    ('batch_normalization', 'BatchNormalization', '(None, 32, 32, 16)', 64),
  ]
  assert table[-1] == ('dense', 'Dense', '(None, 10)', 2_570)
  assert sum(row[3] for row in table) == 574_090  # Keras: Total params
  text = summary.format_summary(model, (32, 32, 3))
  assert 'Trainable params: 570,602' in text and 'Non-trainable params: 3,488' in text
