"""Optimizers by name: Keras's (its defaults, and where epsilon goes), else optax's, from config."""

import inspect
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
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


# Keras's optimizers, each with Keras's defaults; the learning rate and its schedule are applied
# after them. Any other name is taken from optax (`optax_optimizer`).
def adam(beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7):
  return scale_by_keras_adam(beta_1, beta_2, epsilon)


def rmsprop(rho: float = 0.9, epsilon: float = 1e-7):
  # Keras: v = rho v + (1 - rho) g^2; w -= lr g / sqrt(v + eps), v starting at zero.
  return optax.scale_by_rms(decay=rho, eps=epsilon, initial_scale=0.0, eps_in_sqrt=True)


def sgd(momentum: float = 0.0, nesterov: bool = False):
  # Keras: velocity = momentum * velocity - lr * g; the same as optax's trace for a fixed lr.
  if momentum == 0:
    return optax.identity()
  return optax.trace(decay=momentum, nesterov=nesterov)


def adadelta(rho: float = 0.95, epsilon: float = 1e-7):
  # Keras: E[g2] = rho E[g2] + (1 - rho) g^2; u = g sqrt(E[u2] + eps) / sqrt(E[g2] + eps);
  # E[u2] = rho E[u2] + (1 - rho) u^2; w -= lr u. Keras 2's MNIST CNN used lr 1.0, rho 0.95.
  return optax.scale_by_adadelta(rho=rho, eps=epsilon)


KERAS = {'adam': adam, 'rmsprop': rmsprop, 'sgd': sgd, 'adadelta': adadelta}
# The keys of config.optimizer that are not the optimizer's own arguments.
SHARED_KEYS = ('name', 'learning_rate', 'schedule', 'boundaries_epochs', 'decay_factor', 'decay')
# Argument values a command-line override can set (optax's callables and masks are left out).
PLAIN = (bool, int, float, str, tuple, type(None))


def optax_optimizer(name: str):
  """optax.<name> if it is an optimizer (its first argument is learning_rate), else None."""
  factory = getattr(optax, name, None) if name.isidentifier() else None
  if not callable(factory):
    return None
  try:
    first = next(iter(inspect.signature(factory).parameters), None)
  except (TypeError, ValueError):
    return None
  return factory if first == 'learning_rate' else None


def arguments(name: str) -> dict:
  """The optimizer's own arguments with their defaults; ConfigError for an unknown name."""
  factory = KERAS.get(name) or optax_optimizer(name)
  if factory is None:
    raise ConfigError(
      f'unknown optimizer {name!r}; choose one of {", ".join(sorted(KERAS))} (Keras semantics) '
      'or an optax optimizer by name (adamw, lion, nadam, ...)'
    )
  return {
    key: p.default
    for key, p in inspect.signature(factory).parameters.items()
    if key != 'learning_rate' and p.default is not p.empty and isinstance(p.default, PLAIN)
  }


def optimizer_config(name: str, learning_rate: float, **settings) -> ml_collections.ConfigDict:
  """config.optimizer for `name`: its own arguments at their defaults but for `settings`.

  Every argument is written out, so `--config.optimizer.<argument>=v` works on the command line
  and metrics.json records them all. The schedule keys are shared by every optimizer.
  """
  section = {
    'name': name,
    'learning_rate': learning_rate,
    'schedule': 'constant',  # constant, piecewise, inverse_time or cosine
    'boundaries_epochs': (20, 40),  # piecewise: after these epochs ...
    'decay_factor': 0.1,  # ... the rate is multiplied by this
    'decay': 1e-6,  # inverse_time: lr / (1 + decay * step), Keras 2's `decay`
    **arguments(name),
  }
  unknown = sorted(set(settings) - set(section))
  if unknown:
    raise ConfigError(f'{unknown[0]!r} is not an argument of optimizer {name!r}')
  section.update(settings)
  return ml_collections.ConfigDict(section)


def check(optimizer_config) -> None:
  """ConfigError naming an unknown optimizer or an argument it does not take."""
  accepted = arguments(optimizer_config.name)
  unknown = sorted(set(optimizer_config) - set(SHARED_KEYS) - set(accepted))
  if unknown:
    raise ConfigError(
      f'config.optimizer.{unknown[0]} is not an argument of optimizer '
      f'{optimizer_config.name!r}; it takes {", ".join(sorted(accepted)) or "none"} (to switch '
      f'optimizers, set config.optimizer = optim.optimizer_config(...) in an experiment file)'
    )


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
  check(optimizer_config)
  name = optimizer_config.name
  schedule = learning_rate_schedule(optimizer_config, steps_per_epoch, num_epochs)
  kwargs = {k: v for k, v in optimizer_config.items() if k not in SHARED_KEYS}
  if name in KERAS:
    return optax.chain(KERAS[name](**kwargs), optax.scale_by_learning_rate(schedule))
  return optax_optimizer(name)(learning_rate=schedule, **kwargs)
