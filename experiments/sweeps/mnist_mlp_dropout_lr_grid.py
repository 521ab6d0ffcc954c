"""A grid of dropout x learning rate for the 512-unit MNIST MLP, all 18 trials in one program.

Units stay at 512, so every trial has the same shape: the sweep asks for the whole grid at once
and trains it as one vmapped program (each trial with its own dropout rate and learning rate).
"""

from experiments import mnist_mlp
from experiments.sweeps import base


def get_config():
  config = mnist_mlp.get_config()
  config.sweep = base.sweep_config()
  config.sweep.sampler = 'grid'
  config.sweep.params.dropout = dict(values=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5))
  config.sweep.params.learning_rate = dict(values=(3e-4, 1e-3, 3e-3))
  config.sweep.num_trials = 18
  config.sweep.trials_per_batch = 18
  config.sweep.epochs_per_trial = 1
  return config
