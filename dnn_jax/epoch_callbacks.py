"""The trainer's Keras callbacks (callbacks.py) at its epoch ends: their decisions applied.

Their states live in the trainer's Progress (`states` here: Progress.callbacks, changed in
place), so they are saved in every checkpoint; what stays in memory is only the best epoch's
weights for early_stopping.restore_best_weights, read back from its checkpoint on a resume.
"""

import jax
import jax.numpy as jnp

from dnn_jax import callbacks, checkpoint, steps
from dnn_jax.errors import CheckpointError


class EpochCallbacks:
  """ReduceLROnPlateau and EarlyStopping as config asks, applied to the trainer's state."""

  def __init__(self, config, steps_per_epoch: int):
    self.config, self.steps_per_epoch = config, steps_per_epoch
    # early_stopping.restore_best_weights: (params, model_state, ema) of the best epoch so far.
    self.best_weights = None

  @staticmethod
  def stopped(states: dict) -> bool:
    """Whether EarlyStopping has ended training."""
    return states.get('early_stopping', {}).get('stop', False)

  def learning_rate(self, scheduled: float, state: steps.TrainState) -> float:
    """The schedule's rate times ReduceLROnPlateau's cuts so far."""
    if not self.config.reduce_lr_on_plateau.enabled:
      return scheduled
    return scheduled * callbacks.lr_scale(state.opt_state)

  def resume(self, states: dict, state: steps.TrainState, checkpoints, step: int) -> None:
    """Resuming with restore_best_weights: the best epoch's weights, read back and kept aside."""
    best_epoch = states.get('early_stopping', {}).get('best_epoch')
    if not (self.config.early_stopping.restore_best_weights and best_epoch):
      return
    best_step = best_epoch * self.steps_per_epoch
    if best_step == step:
      self.best_weights = _weights(state)
      return
    if best_step not in checkpoints.all_steps():
      raise CheckpointError(
        f'early_stopping.restore_best_weights needs the checkpoint of epoch {best_epoch} '
        f'(step {best_step}), which {checkpoints.directory} no longer holds; resume with '
        f'--config.early_stopping.restore_best_weights=False, or use another --workdir'
      )
    best, _ = checkpoints.restore(best_step, state, items=checkpoint.WEIGHTS)
    self.best_weights = _weights(best)

  def end_epoch(self, states: dict, state: steps.TrainState, record: dict) -> tuple:
    """Runs both callbacks on the epoch's record, as Keras would.

    Returns (the state, what ranks the epoch's checkpoint, lines to print). A cut of the
    learning rate changes the optimizer state's factor before the checkpoint is saved, as does
    everything they decide: a resumed run continues from exactly here.
    """
    config = self.config
    ranking, notes = {}, []
    plateau = config.reduce_lr_on_plateau
    if plateau.enabled:
      rate = record['learning_rate']
      states['reduce_lr_on_plateau'], new_rate = callbacks.reduce_lr_on_plateau(
        plateau, states.get('reduce_lr_on_plateau', {}), record, rate
      )
      if new_rate is not None:
        scale = callbacks.lr_scale(state.opt_state) * new_rate / rate
        state = state.replace(opt_state=callbacks.with_lr_scale(state.opt_state, scale))
        notes.append(
          f'Epoch {record["epoch"]}: ReduceLROnPlateau reducing learning rate to {new_rate:.4g}.'
        )
    stopping = config.early_stopping
    if stopping.enabled:
      decided = callbacks.early_stopping(stopping, states.get('early_stopping', {}), record)
      states['early_stopping'] = decided
      ranking['improvements'] = decided.get('improvements', 0)
      if stopping.restore_best_weights and decided['best_epoch'] == record['epoch']:
        self.best_weights = _weights(state)
    return state, ranking, notes

  def end_training(self, states: dict, state: steps.TrainState, last_epoch: int, result: dict):
    """Says where EarlyStopping stopped; returns the state, with the best epoch's weights put
    back if restore_best_weights asks for them (as Keras 3: at the end of training)."""
    decided = states.get('early_stopping', {})
    if decided.get('stop'):
      result['early_stopped'] = {'epoch': last_epoch, 'best_epoch': decided['best_epoch']}
      print(f'Epoch {last_epoch}: early stopping', flush=True)
    if self.best_weights is None:
      return state
    params, model_state, ema = self.best_weights
    result['restored_best_weights'] = {'epoch': decided['best_epoch']}
    print(
      f'Restoring model weights from the end of the best epoch: {decided["best_epoch"]}.',
      flush=True,
    )
    return state.replace(params=params, model_state=model_state, ema=ema)


def _weights(state: steps.TrainState) -> tuple:
  """Copies of (params, model_state, ema): the next compiled call donates the state's buffers."""
  return jax.tree.map(jnp.copy, (state.params, state.model_state, state.ema))
