"""dnn_jax.optim: one step and several steps equal Keras's formulas and Keras itself."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from dnn_jax import optim
from dnn_jax.errors import ConfigError

W0 = np.array([[0.5, -1.0, 2.0], [0.0, 0.25, -0.75]], np.float32)
GRADS = [
  np.array([[0.1, -0.2, 0.3], [1e-4, -2.0, 0.0]], np.float32),
  np.array([[-0.05, 0.4, 0.3], [0.0, 1.5, -1e-3]], np.float32),
  np.array([[0.2, 0.2, -0.1], [3e-3, 0.5, 0.7]], np.float32),
]


def optimizer_config(name, learning_rate=1e-3, **overrides):
  return optim.optimizer_config(name, learning_rate, **overrides)


def run_optax(config, grads=GRADS):
  tx = optim.create(config)
  w = jnp.asarray(W0)
  state = tx.init(w)
  for g in grads:
    updates, state = tx.update(jnp.asarray(g), state, w)
    w = optax.apply_updates(w, updates)
  return np.asarray(w)


def keras_adam_numpy(lr=1e-3, b1=0.9, b2=0.999, eps=1e-7):
  w, m, v = W0.astype(np.float64), 0.0, 0.0
  for t, g in enumerate(GRADS, start=1):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g**2
    w = w - lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
  return w


def keras_rmsprop_numpy(lr=1e-3, rho=0.9, eps=1e-7):
  w, v = W0.astype(np.float64), 0.0
  for g in GRADS:
    v = rho * v + (1 - rho) * g**2
    w = w - lr * g / np.sqrt(v + eps)  # epsilon inside the square root
  return w


def test_adam_equals_keras_formula():
  np.testing.assert_allclose(
    run_optax(optimizer_config('adam')), keras_adam_numpy(), rtol=1e-5, atol=1e-7
  )


def test_adam_epsilon_placement_matters():
  # With a large epsilon the Keras and optax placements differ visibly; ours must be Keras's.
  ours = run_optax(optimizer_config('adam', epsilon=0.1))
  np.testing.assert_allclose(ours, keras_adam_numpy(eps=0.1), rtol=1e-5, atol=1e-7)
  optax_adam = optax.adam(1e-3, eps=0.1)
  w, state = jnp.asarray(W0), optax_adam.init(jnp.asarray(W0))
  for g in GRADS:
    updates, state = optax_adam.update(jnp.asarray(g), state)
    w = optax.apply_updates(w, updates)
  assert not np.allclose(np.asarray(w), ours, rtol=1e-6)


def test_rmsprop_equals_keras_formula():
  ours = run_optax(optimizer_config('rmsprop', epsilon=1e-2))
  np.testing.assert_allclose(ours, keras_rmsprop_numpy(eps=1e-2), rtol=1e-5, atol=1e-7)


def test_sgd_momentum_equals_keras_formula():
  ours = run_optax(optimizer_config('sgd', learning_rate=0.1, momentum=0.9))
  w, velocity = W0.astype(np.float64), 0.0
  for g in GRADS:
    velocity = 0.9 * velocity - 0.1 * g
    w = w + velocity
  np.testing.assert_allclose(ours, w, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
  'name, keras_name, overrides',
  [
    ('adam', 'Adam', {}),
    ('rmsprop', 'RMSprop', {}),
    ('sgd', 'SGD', {'momentum': 0.9}),
    ('sgd', 'SGD', {'momentum': 0.9, 'nesterov': True}),
    ('adadelta', 'Adadelta', {'rho': 0.95}),
  ],
)
def test_matches_keras_itself(name, keras_name, overrides):
  keras = pytest.importorskip('keras')
  variable = keras.Variable(W0)
  optimizer = getattr(keras.optimizers, keras_name)(learning_rate=1e-2, **overrides)
  for g in GRADS:
    optimizer.apply_gradients([(keras.ops.convert_to_tensor(g), variable)])
  ours = run_optax(optimizer_config(name, learning_rate=1e-2, **overrides))
  np.testing.assert_allclose(ours, np.asarray(variable), rtol=1e-5, atol=1e-7)


def test_unknown_optimizer_lists_choices():
  with pytest.raises(ConfigError, match="unknown optimizer 'adamz'; choose one of adadelta, adam,"):
    config = optimizer_config('adam')
    config.name = 'adamz'
    optim.create(config)
  with pytest.raises(ConfigError, match="unknown optimizer 'chain'"):  # optax, not an optimizer
    optimizer_config('chain')


def test_an_argument_of_another_optimizer_is_refused_by_name():
  config = optimizer_config('rmsprop')
  config.beta_1 = 0.8
  with pytest.raises(
    ConfigError, match="config.optimizer.beta_1 is not an argument of optimizer 'rm"
  ):
    optim.create(config)
  with pytest.raises(ConfigError, match="'momentum' is not an argument of optimizer 'adam'"):
    optimizer_config('adam', momentum=0.9)


@pytest.mark.parametrize(
  'name, settings',
  [('adamw', {'weight_decay': 0.05, 'b1': 0.8}), ('lion', {'weight_decay': 0.1}), ('nadam', {})],
)
def test_other_names_are_optax_optimizers_with_their_own_arguments(name, settings):
  config = optimizer_config(name, learning_rate=1e-2, **settings)
  assert 'weight_decay' in config or name == 'nadam'  # every argument written out, to override
  expected = getattr(optax, name)(learning_rate=1e-2, **settings)
  w, state = jnp.asarray(W0), expected.init(jnp.asarray(W0))
  for g in GRADS:
    updates, state = expected.update(jnp.asarray(g), state, w)
    w = optax.apply_updates(w, updates)
  np.testing.assert_allclose(run_optax(config), np.asarray(w), rtol=1e-6, atol=1e-8)


def test_constant_schedule():
  schedule = optim.learning_rate_schedule(
    ml_collections.ConfigDict({'schedule': 'constant', 'learning_rate': 3e-4})
  )
  assert float(schedule(0)) == float(schedule(1000)) == pytest.approx(3e-4)


def test_adadelta_equals_keras_2_formula():
  ours = run_optax(optimizer_config('adadelta', learning_rate=1.0, rho=0.95))
  w, accum_grad, accum_update = W0.astype(np.float64), 0.0, 0.0
  for g in GRADS:
    accum_grad = 0.95 * accum_grad + 0.05 * g**2
    update = g * np.sqrt(accum_update + 1e-7) / np.sqrt(accum_grad + 1e-7)
    accum_update = 0.95 * accum_update + 0.05 * update**2
    w = w - 1.0 * update
  np.testing.assert_allclose(ours, w, rtol=1e-5, atol=1e-7)


def schedule(name, steps_per_epoch=10, num_epochs=50, **overrides):
  return optim.learning_rate_schedule(
    optimizer_config('adam', schedule=name, **overrides), steps_per_epoch, num_epochs
  )


def test_piecewise_multiplies_after_each_boundary_epoch():
  lr = schedule('piecewise', boundaries_epochs=(20, 40), decay_factor=0.1)
  values = [float(lr(step)) for step in (0, 199, 200, 399, 400, 499)]
  np.testing.assert_allclose(values, [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5], rtol=1e-6)


def test_inverse_time_is_keras_2_decay():
  lr = schedule('inverse_time', learning_rate=1e-4, decay=1e-6)
  for step in (0, 1, 1563, 78150):
    assert float(lr(step)) == pytest.approx(1e-4 / (1 + 1e-6 * step), rel=1e-6)


def test_cosine_runs_from_the_rate_to_zero_over_the_run():
  lr = schedule('cosine', steps_per_epoch=10, num_epochs=5)
  assert float(lr(0)) == pytest.approx(1e-3)
  assert float(lr(25)) == pytest.approx(0.5e-3, rel=1e-5)
  assert float(lr(50)) == pytest.approx(0.0, abs=1e-9)
