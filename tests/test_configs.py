"""dnn_jax.configs and experiments/: every experiment validates and says what the tutorial did."""

import inspect

import pytest

from dnn_jax import configs
from dnn_jax.errors import ConfigError
from experiments import mnist_mlp, mnist_mlp_2layer, mnist_mlp_minimal


def test_minimal_mlp_is_the_tutorials():
  config = configs.validated(mnist_mlp_minimal.get_config())
  assert config.model.hidden_sizes == (512, 512, 512)
  assert (config.model.activation, config.model.dropout) == ('relu', 0.2)
  assert config.optimizer.name == 'rmsprop'
  assert (config.optimizer.learning_rate, config.optimizer.rho) == (1e-3, 0.9)
  assert config.optimizer.epsilon == 1e-7
  assert (config.batch_size, config.num_epochs) == (128, 10)
  assert config.data.validation_split == config.data.test_split == 'test'


def test_every_experiment_names_only_its_own_model_and_optimizer_arguments():
  from dnn_jax import models, optim
  from experiments import cifar10_resnet110_aug, mnist_cnn

  for experiment in (mnist_mlp, mnist_cnn, cifar10_resnet110_aug):
    config = configs.validated(experiment.get_config())
    arguments = inspect.signature(models.model_class(config.model.name).__init__).parameters
    assert set(config.model) - {'name'} == set(arguments) - set(models.BUILT_BY_CREATE)
    assert set(config.optimizer) - set(optim.SHARED_KEYS) == set(
      optim.arguments(config.optimizer.name)
    )
  assert 'dropout' not in mnist_cnn.get_config().model  # no MLP keys carried by a CNN


def test_default_mlp_uses_keras_adam():
  config = configs.validated(mnist_mlp.get_config())
  assert config.optimizer.name == 'adam'
  assert (config.optimizer.beta_1, config.optimizer.beta_2) == (0.9, 0.999)
  assert config.optimizer.epsilon == 1e-7


def test_two_layer_mlp_is_the_keras_example():
  config = configs.validated(mnist_mlp_2layer.get_config())
  assert config.model.hidden_sizes == (512, 512)
  assert (config.optimizer.name, config.num_epochs) == ('rmsprop', 20)


@pytest.mark.parametrize(
  'key, value, message',
  [
    ('optimizer.schedule', 'linear', "unknown schedule 'linear'; choose one of constant, cosine"),
    ('optimizer.rho', 0.9, "config.optimizer.rho is not an argument of optimizer 'adam'; it ta"),
    ('optimizer.name', 'adamz', "unknown optimizer 'adamz'; choose one of adadelta, adam, rmsp"),
    ('model.depth', 20, "config.model.depth is not an argument of 'mlp'; it takes activation"),
    ('model.name', 'vit', "unknown model 'vit'; choose one of cnn, mlp, resnet_v2, or give"),
    ('model.name', 'a/b', "config.model.name='a/b' is not a model name; choose one of cnn,"),
    ('progress', 'fancy', "unknown progress 'fancy'; choose one of auto, bar, lines"),
    ('eval_batch_size', 0, 'config.eval_batch_size=0 must be a positive integer'),
    ('steps_per_call', -1, 'config.steps_per_call=-1 must be a non-negative integer'),
    ('model.dropout', -0.1, 'config.model.dropout=-0.1 must be in [0, 1)'),
    ('model.hidden_sizes', (512, 0), 'config.model.hidden_sizes=(512, 0) must be > 0'),
    ('optimizer.learning_rate', 0.0, 'config.optimizer.learning_rate=0.0 must be a positive'),
    ('optimizer.learning_rate', float('inf'), 'learning_rate=inf must be a positive finite num'),
    ('dtype', 'float16', "unknown dtype 'float16'; choose one of float32, bfloat16"),
    ('parallel', 'pjit', "unknown parallel 'pjit'; choose one of sharded, pmap"),
    ('on_nonfinite', 'ignore', "unknown on_nonfinite 'ignore'; choose one of stop, skip_step"),
    ('checkpoint.every_steps', -5, 'config.checkpoint.every_steps=-5 must be a non-negative'),
    ('checkpoint.max_to_keep', 0, 'config.checkpoint.max_to_keep=0 must be a positive integer'),
    ('init_from', '/no/such/run', "config.init_from='/no/such/run' does not exist; give a"),
    ('augment', {'blur': {}}, "unknown augmentation 'blur'; choose one of clahe, flip_left_"),
    ('stop_at_accuracy', 1.5, 'config.stop_at_accuracy=1.5 must be in [0, 1] (a validation acc'),
    ('stop_at_accuracy', -0.1, 'config.stop_at_accuracy=-0.1 must be in [0, 1]'),
    ('stop_at_accuracy', float('nan'), 'config.stop_at_accuracy=nan must be in [0, 1]'),
  ],
)
def test_bad_values_raise_one_line(key, value, message):
  config = mnist_mlp.get_config()
  parent, _, leaf = key.rpartition('.')
  (config[parent] if parent else config)[leaf] = value
  with pytest.raises(ConfigError) as e:
    configs.validated(config)
  assert message in str(e.value)
  assert '\n' not in str(e.value)


def test_stop_at_accuracy_is_off_by_default_and_optional_in_saved_configs():
  config = mnist_mlp.get_config()
  assert config.stop_at_accuracy == 0.0
  config.stop_at_accuracy = 1  # an int is a valid accuracy too
  configs.validated(config)
  del config['stop_at_accuracy']  # a config saved in a checkpoint before the field existed
  configs.validated(config)


def test_a_config_saved_by_an_older_version_still_loads():
  import json

  saved = json.loads(mnist_mlp.get_config().to_json())
  saved['loss'] = 'softmax_cross_entropy'  # written, never read, before 2026-12-01
  saved['optimizer'].update(rho=0.9, momentum=0.0, nesterov=False)  # the other optimizers'
  config = configs.from_saved(saved)
  assert 'loss' not in config and 'rho' not in config.optimizer
  assert config.optimizer.beta_1 == 0.9 and config.optimizer.name == 'adam'
  saved['optimizer']['name'] = 'adamz'
  with pytest.raises(ConfigError, match="unknown optimizer 'adamz'"):
    configs.from_saved(saved)
