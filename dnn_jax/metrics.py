"""The metrics a run reports: the sums a compiled call returns, and an epoch's record of them."""

from dnn_jax import steps

SUMS = ('loss', 'correct', 'count', 'nonfinite')  # per compiled call, summed over examples
EPOCH = ('loss', 'accuracy', 'val_loss', 'val_accuracy')  # each epoch's line and record


def epoch_metrics(train_sums, val: dict) -> dict:
  """The EPOCH metrics from an epoch's training sums and its validation {'loss', 'accuracy'}."""
  train = steps.means(train_sums)
  return {
    'loss': train['loss'],
    'accuracy': train['accuracy'],
    'val_loss': val['loss'],
    'val_accuracy': val['accuracy'],
  }
