"""A small pre-activation Wide ResNet, written as a newcomer would: one file, the contract kept.

tests/test_new_model.py copies this file and an experiment naming it into a directory outside
the package, and checks that summary, training, checkpoints, the report and the diagram take
it with no other edit. depth = 6 n + 4: n blocks in each of 3 stages, widths 16k, 32k, 64k.
"""

from flax import nnx

from dnn_jax.errors import ConfigError
from dnn_jax.models import layers as L


class WideBlock(L.Residual):
  """BN-ReLU-conv3x3(stride) -> BN-ReLU-Dropout-conv3x3, plus a 1x1 projection if needed."""

  main_path = ('bn1', 'relu1', 'conv1', 'bn2', 'relu2', 'dropout', 'conv2')
  shortcut_path = ('projection',)

  def __init__(self, in_features, features, *, strides, dropout, conv):
    self.bn1 = L.BatchNormalization(in_features)
    self.relu1 = L.Activation('relu')
    self.conv1 = L.Conv2D(in_features, features, 3, strides=strides, **conv)
    self.bn2 = L.BatchNormalization(features)
    self.relu2 = L.Activation('relu')
    self.dropout = L.Dropout(dropout) if dropout else None
    self.conv2 = L.Conv2D(features, features, 3, **conv)
    changes = strides != 1 or in_features != features
    self.projection = (
      L.Conv2D(in_features, features, 1, strides=strides, **conv) if changes else None
    )


class WideResNet(L.Sequential):
  """Stem conv, 3 stages of WideBlocks, BN-ReLU-global average pool-Dense."""

  def __init__(
    self, *, input_shape, num_classes, depth=16, width=4, dropout=0.0, l2=5e-4, rngs: nnx.Rngs
  ):
    if depth < 10 or (depth - 4) % 6:
      raise ConfigError(f'config.model.depth={depth} must be 6n+4 (e.g. 10, 16, 28)')
    conv = dict(padding='same', kernel_init='he_normal', l2=l2, rngs=rngs)
    stack = [L.Conv2D(input_shape[-1], 16, 3, **conv)]
    features, size = 16, input_shape[0]
    for stage, stage_features in enumerate((16 * width, 32 * width, 64 * width)):
      for block in range((depth - 4) // 6):
        strides = 2 if stage > 0 and block == 0 else 1
        stack.append(
          WideBlock(features, stage_features, strides=strides, dropout=dropout, conv=conv)
        )
        features, size = stage_features, -(-size // strides)
    stack += [
      L.BatchNormalization(features),
      L.Activation('relu'),
      L.AveragePooling2D(size),
      L.Flatten(),
      L.Dense(features, num_classes, rngs=rngs),
    ]
    super().__init__(stack)


Model = WideResNet
