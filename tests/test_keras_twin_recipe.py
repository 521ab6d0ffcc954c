"""The Keras twin's training recipe: dnn_jax's learning-rate schedules and shift/flip chain."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import natural_image, run_python

from benchmarks import twins
from dnn_jax import optim
from dnn_jax.data import augment, catalog, locate
from dnn_jax.errors import UserError
from experiments import cifar10_cnn, cifar10_resnet110_aug

keras = pytest.importorskip('keras')
from benchmarks import keras_models  # noqa: E402  (after keras: it imports keras)

STEPS_PER_EPOCH, NUM_EPOCHS = 10, 5


@pytest.mark.parametrize(
  'settings',
  [
    dict(schedule='constant'),
    dict(schedule='inverse_time', decay=0.05),
    dict(schedule='piecewise', boundaries_epochs=(2, 4), decay_factor=0.1),
    dict(schedule='cosine'),
  ],
  ids=lambda s: s['schedule'],
)
def test_keras_schedules_give_dnn_jax_rates_step_by_step(settings):
  opt = optim.optimizer_config('rmsprop', learning_rate=1e-3, **settings)
  ours = optim.learning_rate_schedule(opt, STEPS_PER_EPOCH, NUM_EPOCHS)
  theirs = keras_models.keras_learning_rate(keras, opt, STEPS_PER_EPOCH, NUM_EPOCHS)
  for step in (0, 1, 9, 19, 20, 21, 39, 40, 41, 49, 50):
    expected = float(ours(jnp.asarray(step)))
    got = float(np.asarray(theirs(step))) if callable(theirs) else theirs
    assert got == pytest.approx(expected, rel=1e-5), (step, got, expected)


def augmented_pair(chain, keras_chain=None, n=2048):
  """n augmentations of one natural image by dnn_jax's chain and by Keras's layers for it."""
  image = natural_image((32, 32, 3)).astype(np.float32)
  batch = np.broadcast_to(image, (n, *image.shape))
  keys = jax.random.split(jax.random.key(0), n)
  ours = np.asarray(augment.augment_batch(augment.make_chain(chain), keys, jnp.asarray(batch)))
  keras.utils.set_random_seed(0)
  layers = keras_models.augmentation(keras_chain or chain)
  return ours, np.asarray(layers(batch.copy(), training=True))


def test_keras_layers_augment_like_the_cifar_chain_in_distribution():
  chain = augment.keras_cifar_shift_flip()
  ours, theirs = augmented_pair(chain)
  # Per-pixel mean and spread over 2048 draws: equal within sampling noise (a standard
  # error of ~1 on a spread of ~30), where reflecting borders or 15% shifts differ by 8 or more.
  assert np.abs(ours.mean(0) - theirs.mean(0)).max() < 5.0
  assert np.abs(ours.std(0) - theirs.std(0)).max() < 4.0
  wider = augment.keras_cifar_shift_flip()
  wider.random_shift.update(width=0.15, height=0.15)
  _, theirs_wider = augmented_pair(chain, wider)
  assert np.abs(ours.std(0) - theirs_wider.std(0)).max() > 6.0  # the test can tell them apart


def test_the_keras_twin_names_what_it_cannot_match():
  twins.check_fit_recipe(cifar10_cnn.get_config())  # shifts, flips, inverse-time decay: matched
  resnet = cifar10_resnet110_aug.get_config()
  with pytest.raises(UserError, match=r'augments no evaluation images \(config.eval_augment\)'):
    twins.check_fit_recipe(resnet)  # the notebook's CLAHE on test images
  resnet.eval_augment = None
  with pytest.raises(UserError, match=r'cannot augment with random_contrast \(p=0.5\)'):
    twins.check_fit_recipe(resnet)
  config = cifar10_cnn.get_config()
  config.augment.flip_left_right.p = 0.3
  with pytest.raises(UserError, match=r'flip_left_right \(p=0.3\); it has random_shift \(p=1.0\)'):
    twins.check_fit_recipe(config)


@pytest.mark.e2e
def test_keras_trains_the_augmented_cifar_recipe_alone(tmp_path):
  found = locate.find_prepared('cifar10', catalog.version('cifar10'), locate.extra_data_dirs())
  if not found:
    pytest.skip('no prepared cifar10 in $DNN_JAX_DATA_DIRS (CI points it at ../shared/data/tfds)')
  result = run_python(
    '-m', 'benchmarks.time_to_accuracy', '--config', 'experiments/cifar10_cnn.py',
    '--target=1.0', '--max_epochs=2', '--nowith_dnn_jax', '--record=',
    '--config.data.train_split=train[:512]', '--config.data.validation_split=test[:256]',
  )  # fmt: skip
  assert result.returncode == 0, result.stderr
  lines = [line for line in result.stdout.splitlines() if line.startswith('{')]
  (run,) = [json.loads(line) for line in lines]
  assert run['peer'] == 'keras-tensorflow' and run['epochs'] == 2
  assert 0.05 <= run['accuracy'] <= 1.0
  assert 'shuffle=True` was passed, but will be ignored' not in result.stderr  # no false alarm
