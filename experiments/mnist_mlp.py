"""The default experiment: the minimal MLP trained with Keras's Adam (tutorial: 0.9802)."""

from experiments import base


def get_config():
  config = base.get_config()
  config.optimizer.name = 'adam'
  return config
