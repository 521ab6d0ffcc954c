"""The tutorial's hyperopt notebook, with optuna: hidden units x dropout of the MNIST MLP.

50 trials of TPE (seed 0, the first 10 random) over units 32..1024 (step 32, shared by the three
hidden layers, as in the notebook) and dropout 0..0.5 (step 0.05), maximizing validation
accuracy, 5 trials asked at a time (those with equal units train as one vmapped program).
optuna rather than hyperopt: ask-and-tell (batches to vmap), stepped ranges, a seeded TPE and
a file storage a re-run continues.

One epoch per trial, as the notebook trained briefly too: a second epoch would double the
training time, past the sweep's 10-minute budget on a 2-core CPU.
"""

from experiments import mnist_mlp
from experiments.sweeps import base


def get_config():
  config = mnist_mlp.get_config()
  config.sweep = base.sweep_config()
  config.sweep.params.units = dict(low=32, high=1024, step=32)
  config.sweep.params.dropout = dict(low=0.0, high=0.5, step=0.05)
  config.sweep.num_trials = 50
  config.sweep.trials_per_batch = 5
  config.sweep.epochs_per_trial = 1
  return config
