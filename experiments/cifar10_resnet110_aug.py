"""The tutorial's cifar_classifier_gpu_aug: ResNet v2-110 with the albumentations chain."""

from dnn_jax import models, optim
from dnn_jax.data import augment
from experiments import base


def get_config():
  config = base.get_config()
  config.data.name = 'cifar10'
  # As in the notebook: validate on the second half of the test set, test on the first.
  config.data.validation_split = 'test[5000:]'
  config.data.test_split = 'test[:5000]'
  config.model = models.model_config(
    'resnet_v2',
    depth=110,  # 9n + 2: also 20 and 56
    l2=1e-4,  # on every conv kernel
    conv_implementation='auto',  # oneDNN on AVX-512/AMX CPUs, else forward_convs (README)
  )
  config.optimizer = optim.optimizer_config(
    'adam', learning_rate=1e-3, schedule='piecewise', boundaries_epochs=(20, 40), decay_factor=0.1
  )
  config.augment = augment.albumentations_resnet_chain()
  config.eval_augment = augment.clahe_only()  # the notebook applies CLAHE to every image
  config.batch_size = 128
  config.num_epochs = 50
  return config
