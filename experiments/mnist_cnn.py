"""The Keras mnist_cnn example: 2 convs, max-pool, dense 128; Adadelta, 12 epochs (99.25%)."""

from dnn_jax import models, optim
from experiments import base


def get_config():
  config = base.get_config()
  config.model = models.model_config(
    'cnn',
    layers='conv32 conv64 maxpool dropout0.25 flatten dense128 dropout0.5',
    kernel_size=3,
    activation='relu',
    conv_implementation='auto',  # oneDNN on AVX-512/AMX CPUs, else forward_convs (README)
  )
  # Keras 2's Adadelta defaults, as the example used them.
  config.optimizer = optim.optimizer_config('adadelta', learning_rate=1.0, rho=0.95)
  config.num_epochs = 12
  return config
