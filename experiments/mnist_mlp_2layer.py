"""The Keras mnist_mlp example: 784-512-512-10, dropout 0.2, RMSprop, 20 epochs (669,706 params)."""

from experiments import mnist_mlp_minimal


def get_config():
  config = mnist_mlp_minimal.get_config()
  config.model.hidden_sizes = (512, 512)
  config.num_epochs = 20
  return config
