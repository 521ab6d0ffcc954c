"""The tutorial's hyperopt notebook, with optuna: hidden units x dropout of the MNIST MLP.

50 trials of TPE (seed 0, the first 10 random) over units 32..1024 (step 32, shared by the three
hidden layers, as in the notebook) and dropout 0..0.5 (step 0.05), maximizing validation
accuracy. One epoch per trial: 50 trials then take about 5 minutes on the 2-core development
CPU (4 s for an epoch at 512 units, 10 s at 1024, plus ~1.5 s of compilation per new shape);
a second epoch would double the time without changing which region wins.
"""

from experiments import mnist_mlp
from experiments.sweeps import base


def get_config():
  config = mnist_mlp.get_config()
  config.sweep = base.sweep_config()
  config.sweep.params.units = dict(low=32, high=1024, step=32)
  config.sweep.params.dropout = dict(low=0.0, high=0.5, step=0.05)
  config.sweep.num_trials = 50
  config.sweep.epochs_per_trial = 1
  return config
