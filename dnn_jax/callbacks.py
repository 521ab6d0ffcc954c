"""Keras's ReduceLROnPlateau and EarlyStopping, at epoch ends, with the same semantics.

Their state is a small JSON dict kept in the trainer's Progress, so it is saved in every
checkpoint's meta and a resumed run decides exactly as an uninterrupted one. The learning
rate is cut by a factor held in the optimizer state (`scale_by_plateau`, the last link of the
optimizer chain): the compiled step reads it, so a cut compiles nothing.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dnn_jax import parallel

MONITORS = ('loss', 'accuracy', 'val_loss', 'val_accuracy')  # an epoch record's metrics
MODES = ('auto', 'min', 'max')


class LrScale(NamedTuple):
  """The factor ReduceLROnPlateau has cut the learning rate by so far (1 at the start)."""

  lr_scale: jax.Array


def scale_by_plateau() -> optax.GradientTransformation:
  """Multiplies the updates by the state's lr_scale: the learning rate, for every optimizer here.

  optax applies the learning rate as the last scaling of the updates, so scaling them equals
  scaling the rate (a momentum buffer holds gradients, not rate-scaled steps).
  """

  def init(params):
    del params
    return LrScale(jnp.ones([], jnp.float32))

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u: u * state.lr_scale.astype(u.dtype), updates), state

  return optax.GradientTransformation(init, update)


def lr_scale(opt_state) -> float:
  """The plateau factor held in opt_state (1.0 where ReduceLROnPlateau is off)."""
  scale = optax.tree_utils.tree_get(opt_state, 'lr_scale')
  return 1.0 if scale is None else float(scale)


def with_lr_scale(opt_state, scale: float):
  """opt_state with its plateau factor set to scale, on the factor's own devices."""
  old = optax.tree_utils.tree_get(opt_state, 'lr_scale')
  new = parallel.put(np.float32(scale), old.sharding)
  return optax.tree_utils.tree_set(opt_state, lr_scale=new)


def is_max_mode(monitor: str, mode: str) -> bool:
  """Keras's 'auto': maximize accuracies, minimize the rest."""
  return mode == 'max' or (mode == 'auto' and monitor.endswith('accuracy'))


def improved(current: float, best: float | None, maximize: bool, min_delta: float) -> bool:
  """Keras's test: better than best by more than min_delta (anything beats no best yet)."""
  if best is None:
    return True
  return current - min_delta > best if maximize else current + min_delta < best


def reduce_lr_on_plateau(config, state: dict, record: dict, learning_rate: float) -> tuple:
  """(new state, new learning rate or None) after an epoch, as keras.callbacks.ReduceLROnPlateau.

  state: {} at the start; learning_rate: the rate in effect during the epoch.
  """
  maximize = is_max_mode(config.monitor, config.mode)
  best, wait, cooldown = state.get('best'), state.get('wait', 0), state.get('cooldown', 0)
  current = record[config.monitor]
  new_rate = None
  if cooldown > 0:  # in cooldown: count it down, and do not wait
    cooldown, wait = cooldown - 1, 0
  if improved(current, best, maximize, abs(config.min_delta)):
    best, wait = current, 0
  elif cooldown == 0:
    wait += 1
    if wait >= config.patience and learning_rate > np.float32(config.min_lr):
      new_rate = max(learning_rate * config.factor, config.min_lr)
      cooldown, wait = config.cooldown, 0
  return {'best': best, 'wait': wait, 'cooldown': cooldown}, new_rate


def early_stopping(config, state: dict, record: dict) -> dict:
  """The state after an epoch, as keras.callbacks.EarlyStopping; 'stop' True ends training.

  'best_epoch' (1-based) is the epoch whose weights restore_best_weights brings back.
  """
  maximize = is_max_mode(config.monitor, config.mode)
  current, epoch = record[config.monitor], record['epoch']
  state = {**state, 'wait': state.get('wait', 0) + 1, 'stop': False}
  if improved(current, state.get('best'), maximize, abs(config.min_delta)):
    improvements = state.get('improvements', 0) + 1  # ranks the checkpoint to keep for it
    return {**state, 'best': current, 'best_epoch': epoch, 'wait': 0, 'improvements': improvements}
  state['stop'] = state['wait'] >= config.patience and epoch > 1  # never after the first
  return state
