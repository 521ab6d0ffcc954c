"""The tutorial's minimal MLP: 784-512-512-512-10, dropout 0.2, RMSprop, 10 epochs (0.9759)."""

from dnn_jax import models, optim
from experiments import base


def get_config():
  config = base.get_config()
  config.model = models.model_config('mlp', hidden_sizes=(512, 512, 512), dropout=0.2)
  config.optimizer = optim.optimizer_config('rmsprop', learning_rate=1e-3)  # Keras's defaults
  return config
