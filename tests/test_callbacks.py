"""ReduceLROnPlateau and EarlyStopping: Keras's own decisions, and exact resumes on real MNIST."""

import re

import numpy as np
import pytest

from dnn_jax import callbacks, configs, train
from dnn_jax.errors import ConfigError


def _metric_sequences():
  """Validation curves that improve, stall, wobble within min_delta and improve again."""
  rng = np.random.default_rng(0)
  steady = list(np.linspace(1.0, 0.5, 6))
  stalls = [0.5, 0.50005, 0.52, 0.49995, 0.51, 0.5, 0.45, 0.46, 0.47, 0.47, 0.4]
  noisy = list(0.8 - 0.02 * np.arange(15) + rng.normal(0, 0.03, 15))
  return [steady + stalls, noisy, stalls + stalls[::-1]]


class _FakeOptimizer:
  def __init__(self, rate):
    self.learning_rate = rate


class _FakeModel:
  def __init__(self, rate):
    self.optimizer = _FakeOptimizer(rate)
    self.stop_training = False
    self.weights = 0

  def get_weights(self):
    return self.weights

  def set_weights(self, weights):
    self.weights = weights


def _keras_arguments(config):
  """config's arguments for Keras; 'auto' on an accuracy is 'max' there once a model compiled it."""
  arguments = {k: v for k, v in config.items() if k != 'enabled'}
  if arguments['mode'] == 'auto' and arguments['monitor'].endswith('accuracy'):
    arguments['mode'] = 'max'
  return arguments


def _plateau_config(**overrides):
  config = configs.ADDED['reduce_lr_on_plateau'] | {'enabled': True} | overrides
  return configs.ml_collections.ConfigDict(config)


def _stopping_config(**overrides):
  config = configs.ADDED['early_stopping'] | {'enabled': True} | overrides
  return configs.ml_collections.ConfigDict(config)


PLATEAU_CASES = [
  {'patience': 1},
  {'patience': 2, 'cooldown': 1, 'min_delta': 1e-3},
  {'patience': 0, 'factor': 0.5, 'min_lr': 0.02},
  {'patience': 1, 'monitor': 'val_accuracy'},
]


@pytest.mark.parametrize('arguments', PLATEAU_CASES)
def test_reduce_lr_on_plateau_cuts_the_rate_at_the_epochs_keras_does(arguments):
  import keras

  for values in _metric_sequences():
    config = _plateau_config(**arguments)
    reference = keras.callbacks.ReduceLROnPlateau(**_keras_arguments(config))
    model = _FakeModel(0.1)
    reference.set_model(model)
    reference.on_train_begin()
    state, rate = {}, 0.1
    for epoch, value in enumerate(values):
      record = {'epoch': epoch + 1, config.monitor: float(value)}
      reference.on_epoch_end(epoch, dict(record))
      state, new_rate = callbacks.reduce_lr_on_plateau(config, state, record, rate)
      rate = new_rate if new_rate is not None else rate
      assert rate == pytest.approx(float(model.optimizer.learning_rate), rel=1e-6), epoch


STOPPING_CASES = [
  {'patience': 0},
  {'patience': 2},
  {'patience': 3, 'min_delta': 1e-3},
  {'patience': 2, 'monitor': 'val_accuracy'},
]


@pytest.mark.parametrize('arguments', STOPPING_CASES)
def test_early_stopping_stops_and_picks_the_best_epoch_where_keras_does(arguments):
  import keras

  for values in _metric_sequences():
    config = _stopping_config(restore_best_weights=True, **arguments)
    reference = keras.callbacks.EarlyStopping(**_keras_arguments(config))
    model = _FakeModel(0.1)
    reference.set_model(model)
    reference.on_train_begin()
    state, stopped = {}, None
    for epoch, value in enumerate(values):
      model.weights = epoch + 1  # the weights "are" the epoch that produced them
      record = {'epoch': epoch + 1, config.monitor: float(value)}
      reference.on_epoch_end(epoch, dict(record))
      state = callbacks.early_stopping(config, state, record)
      assert state['stop'] == model.stop_training, epoch
      if state['stop']:
        stopped = epoch + 1
        break
    reference.on_train_end()
    assert state['best_epoch'] == model.weights  # what Keras restored
    assert stopped == (reference.stopped_epoch + 1 if reference.stopped_epoch else None)


def test_bad_callback_values_are_one_line_errors(base_config):
  for key, value, says in [
    ('reduce_lr_on_plateau.factor', 1.5, 'must be in (0, 1)'),
    ('reduce_lr_on_plateau.monitor', 'val_acc', 'choose one of'),
    ('early_stopping.patience', -1, 'non-negative integer'),
    ('early_stopping.mode', 'up', 'choose one of'),
    ('reduce_lr_on_plateau.min_lr', -1.0, 'non-negative finite number'),
    ('ema.decay', 1.0, 'must be in [0, 1)'),
  ]:
    config = base_config()
    section, name = key.split('.')
    config[section][name] = value
    with pytest.raises(ConfigError, match=re.escape(says)):
      configs.validated(config)


def _callback_config(base_config, num_epochs):
  config = base_config()
  config.model.hidden_sizes = (32,)
  config.data.train_split = 'train[:1024]'
  config.data.validation_split = config.data.test_split = 'test[:500]'
  config.num_epochs = num_epochs
  config.num_devices = 1
  config.progress = 'lines'
  config.checkpoint.max_to_keep = 1  # the best epoch's checkpoint is kept besides, for its weights
  config.optimizer.learning_rate = 0.01
  # A plateau after every epoch that does not beat the best by 0.02, and a stop after 2.
  config.reduce_lr_on_plateau.update(enabled=True, patience=1, min_delta=0.02, factor=0.5)
  config.reduce_lr_on_plateau.monitor = 'val_accuracy'
  config.early_stopping.update(enabled=True, patience=2, min_delta=0.02)
  config.early_stopping.update(monitor='val_accuracy', restore_best_weights=True)
  return config


def _without_times(history):
  return [{k: v for k, v in r.items() if 'seconds' not in k} for r in history]


@pytest.mark.slow
def test_callbacks_act_on_a_real_run_and_a_resumed_run_decides_the_same(base_config, tmp_path):
  whole = train.train_and_evaluate(_callback_config(base_config, 12), tmp_path / 'whole')
  rates = [r['learning_rate'] for r in whole['history']]
  assert rates[0] == pytest.approx(0.01) and min(rates) < 0.01  # the plateau cut the rate
  stopped = whole['early_stopped']
  assert stopped['epoch'] == len(whole['history']) < 12  # early stopping ended it
  assert whole['restored_best_weights'] == {'epoch': stopped['best_epoch']}
  best = whole['history'][stopped['best_epoch'] - 1]
  # The best epoch's weights, not the last's, were tested (the test split is the validation's).
  assert whole['test']['accuracy'] == pytest.approx(best['val_accuracy'], abs=1e-6)

  # The same run stopped after 4 epochs (as if preempted), then resumed to the end: the best
  # epoch's checkpoint (3, below the best val_accuracy, 4, and not the latest) must be kept.
  parts = tmp_path / 'parts'
  train.train_and_evaluate(_callback_config(base_config, 4), parts)
  assert stopped['best_epoch'] == 3
  resumed = train.train_and_evaluate(_callback_config(base_config, 12), parts)
  assert _without_times(resumed['history']) == _without_times(whole['history'])
  assert resumed['early_stopped'] == stopped
  assert resumed['test'] == whole['test']
