"""A WRN-10-1 on 4,096 MNIST images for one epoch, with optax's AdamW (a name Keras lacks)."""

from dnn_jax import models, optim
from experiments import base


def get_config():
  config = base.get_config()
  config.model = models.model_config('zoo.wide_resnet', depth=10, width=1, dropout=0.1)
  config.optimizer = optim.optimizer_config('adamw', learning_rate=3e-3, weight_decay=1e-4)
  config.data.train_split = 'train[:4096]'
  config.data.validation_split = 'test[:1000]'
  config.data.test_split = 'test[:1000]'
  config.num_epochs = 1
  return config
