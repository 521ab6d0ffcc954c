"""ResNet v2 (pre-activation, bottleneck) for CIFAR, as in the Keras example `resnet_v2`.

depth = 9 n + 2 (20, 56, 110, ...): n bottleneck blocks in each of 3 stages. Convolutions
are 'same', he_normal, without L2 on the head; BatchNorm uses Keras's defaults.
"""

from flax import nnx

from dnn_jax.errors import ConfigError
from dnn_jax.models import layers as L


class PreactBottleneck(L.Residual):
  """BN-ReLU-conv1x1(stride) -> BN-ReLU-conv3x3 -> BN-ReLU-conv1x1, plus the shortcut."""

  main_path = ('bn1', 'relu1', 'conv1', 'bn2', 'relu2', 'conv2', 'bn3', 'relu3', 'conv3')
  shortcut_path = ('shortcut',)  # a projection in a stage's first block, else the identity

  def __init__(
    self, in_features: int, bottleneck: int, out_features: int, *, strides: int,
    preactivate: bool, project: bool, conv: dict,  # conv: Conv2D kwargs shared by all
  ):  # fmt: skip
    # The first block of the first stage follows the stem's BN-ReLU: no second one.
    self.bn1 = L.BatchNormalization(in_features) if preactivate else None
    self.relu1 = L.Activation('relu') if preactivate else None
    self.conv1 = L.Conv2D(in_features, bottleneck, 1, strides=strides, **conv)
    self.bn2 = L.BatchNormalization(bottleneck)
    self.relu2 = L.Activation('relu')
    self.conv2 = L.Conv2D(bottleneck, bottleneck, 3, **conv)
    self.bn3 = L.BatchNormalization(bottleneck)
    self.relu3 = L.Activation('relu')
    self.conv3 = L.Conv2D(bottleneck, out_features, 1, **conv)
    self.shortcut = (
      L.Conv2D(in_features, out_features, 1, strides=strides, **conv) if project else None
    )


class ResNetV2(L.Sequential):
  """Stem conv-BN-ReLU, 3 stages of bottleneck blocks, BN-ReLU-avgpool-Dense head."""

  def __init__(
    self, *, input_shape, num_classes: int, depth: int = 110, l2: float = 1e-4,
    conv_implementation: str = 'auto', rngs: nnx.Rngs,
  ):  # fmt: skip
    if depth < 11 or (depth - 2) % 9:
      raise ConfigError(f'config.model.depth={depth} must be 9n+2 (e.g. 20, 56, 110)')
    blocks_per_stage = (depth - 2) // 9
    conv = dict(
      padding='same', kernel_init='he_normal', l2=l2, implementation=conv_implementation,
      rngs=rngs,
    )  # fmt: skip
    stack = [
      L.Conv2D(input_shape[-1], 16, 3, **conv),
      L.BatchNormalization(16),
      L.Activation('relu'),
    ]
    in_features = 16
    for stage in range(3):
      out_features = in_features * (4 if stage == 0 else 2)
      for block in range(blocks_per_stage):
        first = block == 0
        stack.append(
          PreactBottleneck(
            in_features if first else out_features, in_features, out_features,
            strides=2 if first and stage > 0 else 1, preactivate=not (first and stage == 0),
            project=first, conv=conv,
          )
        )  # fmt: skip
      in_features = out_features
    spatial = input_shape[0] // 4  # two stride-2 stages
    stack += [
      L.BatchNormalization(in_features),
      L.Activation('relu'),
      L.AveragePooling2D(spatial),
      L.Flatten(),
      L.Dense(in_features, num_classes, kernel_init='he_normal', rngs=rngs),
    ]
    super().__init__(stack)


Model = ResNetV2  # config.model.name = 'resnet_v2'
