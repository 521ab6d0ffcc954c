"""Defaults of a sweep's `sweep` section; each sweep file sets its parameters and budget."""

import ml_collections


def sweep_config() -> ml_collections.ConfigDict:
  sweep = ml_collections.ConfigDict()
  # Swept name -> a range {low, high, step (optional), log (optional)} or {values: (...)}.
  # Names: units (every hidden layer), dropout, learning_rate, seed.
  sweep.params = ml_collections.ConfigDict()
  sweep.sampler = 'tpe'  # tpe, random or grid
  sweep.seed = 0  # the sampler's: the same seed proposes the same trials
  sweep.startup_trials = 10  # tpe: random trials before it models the results
  sweep.num_trials = 50
  # Trials asked at once; those of equal shape (e.g. equal units) train as one vmapped program.
  sweep.trials_per_batch = 5
  sweep.epochs_per_trial = 1
  sweep.objective = 'val_accuracy'  # or val_loss
  sweep.direction = 'maximize'
  return sweep
