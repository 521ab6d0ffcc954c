"""The Keras mnist_cnn example: 2 convs, max-pool, dense 128; Adadelta, 12 epochs (99.25%)."""

import ml_collections

from experiments import base


def get_config():
  config = base.get_config()
  config.model = ml_collections.ConfigDict()
  config.model.name = 'cnn'
  config.model.layers = 'conv32 conv64 maxpool dropout0.25 flatten dense128 dropout0.5'
  config.model.kernel_size = 3
  config.model.activation = 'relu'
  config.model.conv_implementation = (
    'auto'  # oneDNN on AVX-512/AMX CPUs, else forward_convs (README)
  )
  # Keras 2's Adadelta defaults, as the example used them.
  config.optimizer.name = 'adadelta'
  config.optimizer.learning_rate = 1.0
  config.optimizer.rho = 0.95
  config.num_epochs = 12
  return config
