"""cifar10_resnet110_aug at depth 20: the notebook's recipe on a network a 2-core CPU trains.

Everything else as the notebook: the albumentations chain (CLAHE on evaluation images too),
Adam 1e-3 cut x0.1 after epochs 20 and 40, 50 epochs, batch 128, L2 1e-4 on the conv kernels,
validation on test[5000:] and test on test[:5000]. ResNet-110 is five and a half times the
compute per image; train it where a GPU is (benchmarks/gpu.sh).
"""

from experiments import cifar10_resnet110_aug


def get_config():
  config = cifar10_resnet110_aug.get_config()
  config.model.depth = 20  # 9n + 2 with n = 2: two blocks per stage
  return config
