"""The Keras cifar10_cnn example: 4 convs, dense 512; RMSprop 1e-4 with decay; shifts and flips."""

from dnn_jax import models, optim
from dnn_jax.data import augment
from experiments import base


def get_config():
  config = base.get_config()
  config.data.name = 'cifar10'
  config.model = models.model_config(
    'cnn',
    layers=(
      'conv32same conv32 maxpool dropout0.25 conv64same conv64 maxpool dropout0.25 '
      'flatten dense512 dropout0.5'
    ),
    kernel_size=3,
    activation='relu',
    conv_implementation='auto',  # oneDNN on AVX-512/AMX CPUs, else forward_convs (README)
  )
  # Keras 2: RMSprop(lr=1e-4, decay=1e-6)
  config.optimizer = optim.optimizer_config(
    'rmsprop', learning_rate=1e-4, schedule='inverse_time', decay=1e-6
  )
  config.augment = augment.keras_cifar_shift_flip()  # ImageDataGenerator(0.1, 0.1, flip)
  config.batch_size = 32
  config.num_epochs = 50
  return config
