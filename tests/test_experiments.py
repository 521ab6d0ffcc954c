"""experiments/: every experiment trains two steps on a slice of its real data."""

import math

import pytest

from dnn_jax import train
from dnn_jax.data import catalog, locate
from experiments import (
  cifar10_cnn,
  cifar10_resnet110_aug,
  mnist_cnn,
  mnist_cnn_deep,
  mnist_mlp,
  mnist_mlp_2layer,
  mnist_mlp_minimal,
)

EXPERIMENTS = {
  mnist_mlp: '932,362',
  mnist_mlp_minimal: '932,362',
  mnist_mlp_2layer: '669,706',
  mnist_cnn: '1,199,882',
  mnist_cnn_deep: '225,162',
  cifar10_cnn: '1,250,858',
  # Trained at depth 11 (one block per stage) here: ResNet-110's compile alone takes minutes
  # of CI, and its 3,323,210 parameters are checked against Keras in test_models.
  cifar10_resnet110_aug: '299,178',
}


@pytest.mark.slow
@pytest.mark.parametrize('experiment', EXPERIMENTS, ids=lambda e: e.__name__.split('.')[-1])
def test_two_steps_on_real_data(experiment, tmp_path, capsys):
  config = experiment.get_config()
  name = config.data.name
  if locate.find_prepared(name, catalog.version(name), [locate.writable_data_dir(),
                          *locate.extra_data_dirs()]) is None:  # fmt: skip
    pytest.skip(f'no prepared {name} (CI points $DNN_JAX_DATA_DIRS at ../shared/data/tfds)')
  config.data.train_split = f'train[:{2 * config.batch_size}]'
  if config.data.validation_split == config.data.test_split:
    config.data.validation_split = config.data.test_split = 'test[:256]'
  else:
    config.data.validation_split, config.data.test_split = 'test[5000:5256]', 'test[:256]'
  config.num_epochs = 1
  config.progress = 'lines'
  if config.model.name == 'resnet_v2':
    config.model.depth = 11
  result = train.train_and_evaluate(config, tmp_path)
  out = capsys.readouterr().out
  assert f'Total params: {EXPERIMENTS[experiment]}' in out
  assert '2 steps per epoch' in out
  record = result['history'][0]
  assert all(math.isfinite(record[k]) for k in ('loss', 'val_loss', 'learning_rate'))
  assert 0.0 <= result['test']['accuracy'] <= 1.0
  assert result['best']['epoch'] == 1
  assert (tmp_path / 'metrics.json').is_file()
