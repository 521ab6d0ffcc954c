"""The Keras cifar10_cnn example: 4 convs, dense 512; RMSprop 1e-4 with decay; shifts and flips."""

import ml_collections

from dnn_jax.data import augment
from experiments import base


def get_config():
  config = base.get_config()
  config.data.name = 'cifar10'
  config.model = ml_collections.ConfigDict()
  config.model.name = 'cnn'
  config.model.layers = (
    'conv32same conv32 maxpool dropout0.25 conv64same conv64 maxpool dropout0.25 '
    'flatten dense512 dropout0.5'
  )
  config.model.kernel_size = 3
  config.model.activation = 'relu'
  config.model.conv_implementation = (
    'auto'  # oneDNN on AVX-512/AMX CPUs, else forward_convs (README)
  )
  config.optimizer.name = 'rmsprop'
  config.optimizer.learning_rate = 1e-4
  config.optimizer.schedule = 'inverse_time'  # Keras 2: RMSprop(lr=1e-4, decay=1e-6)
  config.optimizer.decay = 1e-6
  config.augment = augment.keras_cifar_shift_flip()  # ImageDataGenerator(0.1, 0.1, flip)
  config.batch_size = 32
  config.num_epochs = 50
  return config
