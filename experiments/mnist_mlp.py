"""The default experiment: the minimal MLP trained with Keras's Adam (tutorial: 0.9802)."""

from dnn_jax import optim
from experiments import mnist_mlp_minimal


def get_config():
  config = mnist_mlp_minimal.get_config()
  config.optimizer = optim.optimizer_config('adam', learning_rate=1e-3)  # Keras's defaults
  return config
