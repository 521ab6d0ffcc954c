"""Optax optimizers with Keras semantics (defaults and where epsilon goes), from config."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from dnn_jax.errors import ConfigError


class KerasAdamState(NamedTuple):
  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates


def scale_by_keras_adam(beta_1: float, beta_2: float, epsilon: float):
  """Keras Adam: m / (sqrt(v) + eps) scaled by sqrt(1 - b2^t) / (1 - b1^t).

  Keras adds epsilon to sqrt(v) *before* bias correction ("epsilon hat" of the Adam paper),
  unlike optax.adam, which adds it to sqrt(v_hat); the two differ early in training.
  """

  def init(params):
    zeros = lambda: jax.tree.map(jnp.zeros_like, params)  # two buffers: both are donated
    return KerasAdamState(jnp.zeros([], jnp.int32), zeros(), zeros())

  def update(grads, state, params=None):
    del params
    count = state.count + 1
    mu = jax.tree.map(lambda m, g: m + (g - m) * (1 - beta_1), state.mu, grads)
    nu = jax.tree.map(lambda v, g: v + (jnp.square(g) - v) * (1 - beta_2), state.nu, grads)
    t = count.astype(jnp.float32)
    alpha = jnp.sqrt(1 - beta_2**t) / (1 - beta_1**t)
    updates = jax.tree.map(lambda m, v: alpha * m / (jnp.sqrt(v) + epsilon), mu, nu)
    return updates, KerasAdamState(count, mu, nu)

  return optax.GradientTransformation(init, update)


def _adam(c):
  return scale_by_keras_adam(c.beta_1, c.beta_2, c.epsilon)


def _rmsprop(c):
  # Keras: v = rho v + (1 - rho) g^2; w -= lr g / sqrt(v + eps), v starting at zero.
  return optax.scale_by_rms(decay=c.rho, eps=c.epsilon, initial_scale=0.0, eps_in_sqrt=True)


def _sgd(c):
  # Keras: velocity = momentum * velocity - lr * g; the same as optax's trace for a fixed lr.
  if c.momentum == 0:
    return optax.identity()
  return optax.trace(decay=c.momentum, nesterov=c.nesterov)


def _adadelta(c):
  # Keras: E[g2] = rho E[g2] + (1 - rho) g^2; u = g sqrt(E[u2] + eps) / sqrt(E[g2] + eps);
  # E[u2] = rho E[u2] + (1 - rho) u^2; w -= lr u. Keras 2's MNIST CNN used lr 1.0, rho 0.95.
  return optax.scale_by_adadelta(rho=c.rho, eps=c.epsilon)


OPTIMIZERS = {'adam': _adam, 'rmsprop': _rmsprop, 'sgd': _sgd, 'adadelta': _adadelta}


def _piecewise(c, steps_per_epoch, num_epochs):
  # lr times decay_factor after each epoch in boundaries_epochs (Keras LearningRateScheduler).
  boundaries = {int(e * steps_per_epoch): c.decay_factor for e in c.boundaries_epochs}
  return optax.piecewise_constant_schedule(c.learning_rate, boundaries)


def _inverse_time(c, steps_per_epoch, num_epochs):
  # Keras 2's `decay` argument: lr / (1 + decay * iterations), iterations counted in steps.
  return lambda step: c.learning_rate / (1.0 + c.decay * step)


def _cosine(c, steps_per_epoch, num_epochs):
  return optax.cosine_decay_schedule(c.learning_rate, max(num_epochs * steps_per_epoch, 1))


SCHEDULES = {
  'constant': lambda c, steps_per_epoch, num_epochs: optax.constant_schedule(c.learning_rate),
  'piecewise': _piecewise,
  'inverse_time': _inverse_time,
  'cosine': _cosine,
}


def learning_rate_schedule(
  optimizer_config, steps_per_epoch: int = 1, num_epochs: int = 1
) -> optax.Schedule:
  """Step -> learning rate."""
  name = optimizer_config.schedule
  if name not in SCHEDULES:
    raise ConfigError(f'unknown schedule {name!r}; choose one of {", ".join(SCHEDULES)}')
  return SCHEDULES[name](optimizer_config, steps_per_epoch, num_epochs)


def create(
  optimizer_config, steps_per_epoch: int = 1, num_epochs: int = 1
) -> optax.GradientTransformation:
  """The optax transformation named by optimizer_config.name, scaled by the schedule."""
  name = optimizer_config.name
  if name not in OPTIMIZERS:
    raise ConfigError(f'unknown optimizer {name!r}; choose one of {", ".join(OPTIMIZERS)}')
  schedule = learning_rate_schedule(optimizer_config, steps_per_epoch, num_epochs)
  return optax.chain(OPTIMIZERS[name](optimizer_config), optax.scale_by_learning_rate(schedule))
