"""The tutorial's models written in PyTorch: benchmark peers and parity references.

Inputs are NHWC float images, as dnn_jax's; logits come out (softmax lives in the loss).
Initializers are dnn_jax's (Keras's): glorot_uniform kernels, zero biases, he_normal on the
ResNet. BatchNorm has Keras's momentum 0.99 (torch's 0.01) and epsilon 1e-3; torch's moving
variance takes the unbiased batch variance where Keras's takes the biased one (n / (n - 1),
n = batch x height x width, so under 0.1% apart).
"""

import math

import torch
from torch import nn

from dnn_jax.models import cnn

# The layout convolutions run in. Measured on a 2-core Zen 3 EPYC (AVX2, torch 2.13 CPU), float32
# eager training steps alternated between the two layouts in one process (the cores shared
# with another job, so medians of 15-100 steps): ResNet-20 (batch 128) 1.12 s channels_last
# against 1.52 s NCHW-contiguous; mnist_cnn (128) 237 against 236 ms; cifar10_cnn (32) 94
# against 103 ms. oneDNN's NHWC kernels win where it matters, and nothing loses: the default.
MEMORY_FORMATS = {'channels_last': torch.channels_last, 'contiguous': torch.contiguous_format}
DEFAULT_MEMORY_FORMAT = 'channels_last'


def _he_normal_(weight):
  """Keras/Flax he_normal: normal truncated at 2 std, scaled to variance 2 / fan_in."""
  fan_in = weight[0].numel()
  std = math.sqrt(2.0 / fan_in) / 0.87962566103423978  # the truncated normal's std of 1
  nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


def _init(layer, kernel_init: str = 'glorot_uniform'):
  if kernel_init == 'he_normal':
    _he_normal_(layer.weight)
  else:  # torch's xavier fans are Keras's: in/out features times the kernel's area
    nn.init.xavier_uniform_(layer.weight)
  nn.init.zeros_(layer.bias)
  return layer


def dense(in_features, features, kernel_init='glorot_uniform'):
  """Keras Dense without its activation."""
  return _init(nn.Linear(in_features, features), kernel_init)


def conv2d(
  in_features, features, kernel_size, strides=1, padding='valid', kernel_init='glorot_uniform'
):
  """Keras Conv2D without its activation; 'same' pads (k - 1) // 2, Keras's for odd k."""
  pad = (kernel_size - 1) // 2 if padding == 'same' else 0
  layer = nn.Conv2d(in_features, features, kernel_size, strides, pad)
  return _init(layer, kernel_init)


def batch_norm(features):
  """Keras BatchNormalization's defaults in torch's terms."""
  return nn.BatchNorm2d(features, eps=1e-3, momentum=0.01)


class Flatten(nn.Module):
  """Keras Flatten of NHWC: an NCHW tensor is flattened in (H, W, C) order, as dnn_jax does,
  so that Dense kernels carry over unchanged (for channels_last this permute is free)."""

  def forward(self, x):
    return (x.permute(0, 2, 3, 1) if x.dim() == 4 else x).flatten(1)


class Net(nn.Module):
  """NHWC images -> NCHW in `memory_format` -> the layers in order."""

  def __init__(self, layers, memory_format: str = DEFAULT_MEMORY_FORMAT):
    super().__init__()
    self.layers = nn.Sequential(*layers)
    self.memory_format = memory_format
    self.to(memory_format=MEMORY_FORMATS[memory_format])

  def forward(self, x_BxHxWxC):
    # NHWC permuted to NCHW is already channels_last in memory: a copy only for 'contiguous'.
    x = x_BxHxWxC.permute(0, 3, 1, 2).contiguous(memory_format=MEMORY_FORMATS[self.memory_format])
    return self.layers(x)


def mlp(hidden_sizes, input_shape=(28, 28, 1), num_classes=10, dropout=0.2):
  """Flatten, Dense-relu-Dropout per hidden size, Dense logits."""
  stack, features = [nn.Flatten()], math.prod(input_shape)
  for hidden in hidden_sizes:
    stack += [dense(features, hidden), nn.ReLU()]
    stack += [nn.Dropout(dropout)] if dropout > 0 else []
    features = hidden
  return nn.Sequential(*stack, dense(features, num_classes))


def cnn_from_tokens(
  layer_line, input_shape, num_classes=10, kernel_size=3, memory_format=DEFAULT_MEMORY_FORMAT
):
  """The torch model a dnn_jax `cnn` layer line describes, with a Dense logits head."""
  height, width, channels = input_shape
  stack = []
  for match in cnn.parse(layer_line):
    token = match.group(1)
    if match.group(2):
      padding = 'same' if match.group(3) else 'valid'
      filters = int(match.group(2))
      stack += [conv2d(channels, filters, kernel_size, padding=padding), nn.ReLU()]
      shrink = 0 if padding == 'same' else kernel_size - 1
      height, width, channels = height - shrink, width - shrink, filters
    elif token == 'maxpool':
      stack.append(nn.MaxPool2d(2))
      height, width = height // 2, width // 2
    elif match.group(4):
      stack.append(nn.Dropout(float(match.group(4))))
    elif token == 'flatten':
      stack.append(Flatten())
      channels = height * width * channels
    else:
      units = int(match.group(5))
      stack += [dense(channels, units), nn.ReLU()]
      channels = units
  return Net([*stack, dense(channels, num_classes)], memory_format)


class PreactBottleneck(nn.Module):
  """dnn_jax's block: BN-ReLU-conv1x1(stride) -> BN-ReLU-conv3x3 -> BN-ReLU-conv1x1, + shortcut."""

  def __init__(self, in_features, bottleneck, out_features, *, strides, preactivate, project):
    super().__init__()
    conv = dict(padding='same', kernel_init='he_normal')
    # In the order of dnn_jax's main_path, then its shortcut: load_from_dnn_jax pairs them so.
    self.bn1 = batch_norm(in_features) if preactivate else None
    self.conv1 = conv2d(in_features, bottleneck, 1, strides, **conv)
    self.bn2 = batch_norm(bottleneck)
    self.conv2 = conv2d(bottleneck, bottleneck, 3, **conv)
    self.bn3 = batch_norm(bottleneck)
    self.conv3 = conv2d(bottleneck, out_features, 1, **conv)
    self.shortcut = conv2d(in_features, out_features, 1, strides, **conv) if project else None

  def forward(self, x):
    y = torch.relu(self.bn1(x)) if self.bn1 is not None else x
    y = self.conv1(y)
    y = self.conv2(torch.relu(self.bn2(y)))
    y = self.conv3(torch.relu(self.bn3(y)))
    return (self.shortcut(x) if self.shortcut is not None else x) + y


def resnet_v2(depth, input_shape=(32, 32, 3), num_classes=10, memory_format=DEFAULT_MEMORY_FORMAT):
  """keras-team's cifar10_resnet.py `resnet_v2` as dnn_jax builds it, ending in logits.

  Its l2(1e-4) kernel regularizer is not in the model: `l2_param_groups` gives the optimizer
  weight decay 2e-4 on the conv kernels, the same gradient as the loss term 1e-4 * sum(w^2).
  """
  blocks = (depth - 2) // 9
  conv = dict(padding='same', kernel_init='he_normal')
  stack = [conv2d(input_shape[-1], 16, 3, **conv), batch_norm(16), nn.ReLU()]
  in_features = 16
  for stage in range(3):
    out_features = in_features * (4 if stage == 0 else 2)
    for block in range(blocks):
      first = block == 0
      stack.append(
        PreactBottleneck(
          in_features if first else out_features, in_features, out_features,
          strides=2 if first and stage > 0 else 1, preactivate=not (first and stage == 0),
          project=first,
        )
      )  # fmt: skip
    in_features = out_features
  stack += [
    batch_norm(in_features),
    nn.ReLU(),
    nn.AvgPool2d(input_shape[0] // 4),  # two stride-2 stages
    Flatten(),
    dense(in_features, num_classes, kernel_init='he_normal'),
  ]
  return Net(stack, memory_format)


def l2_param_groups(model, l2: float) -> list:
  """Optimizer param groups: conv kernels with weight_decay 2 * l2 (Keras's l2(l2) on the
  kernel, as coupled decay adds decay * w to the gradient), everything else without."""
  kernels = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
  ids = {id(w) for w in kernels}
  rest = [p for p in model.parameters() if id(p) not in ids]
  return [{'params': kernels, 'weight_decay': 2 * l2}, {'params': rest, 'weight_decay': 0.0}]


def from_config(model_config, input_shape, num_classes, memory_format=DEFAULT_MEMORY_FORMAT):
  """The torch twin of a dnn_jax model config (mlp, cnn or resnet_v2); outputs are logits."""
  if model_config.name == 'mlp':
    return mlp(model_config.hidden_sizes, input_shape, num_classes, model_config.dropout)
  if model_config.name == 'cnn':
    kernel_size = model_config.get('kernel_size', 3)
    return cnn_from_tokens(
      model_config.layers, input_shape, num_classes, kernel_size, memory_format
    )
  if model_config.name == 'resnet_v2':
    return resnet_v2(model_config.depth, input_shape, num_classes, memory_format)
  raise ValueError(f'no torch twin of model {model_config.name!r}; twins.check says so first')


def _dnn_jax_leaves(module):
  """dnn_jax's Dense, Conv2D and BatchNormalization layers in the order of the forward pass."""
  from dnn_jax.models import layers as L

  if isinstance(module, (L.Dense, L.Conv2D, L.BatchNormalization)):
    yield module
  elif isinstance(module, L.Sequential):
    for layer in module.layers:
      yield from _dnn_jax_leaves(layer)
  elif isinstance(module, L.Residual):
    # By the block's own lists: an NNX module's attribute order is not kept (nnx.merge sorts).
    main, shortcut = module.branches()
    for _, layer in main + shortcut:
      yield from _dnn_jax_leaves(layer)


@torch.no_grad()
def load_from_dnn_jax(torch_model, nnx_model):
  """Copies a dnn_jax model's params and BatchNorm statistics into its torch twin, in place."""
  import numpy as np

  from dnn_jax.models import layers as L

  def tensor(value, *permutation):
    array = torch.from_numpy(np.array(value[...], np.float32))
    return array.permute(*permutation) if permutation else array

  kinds = (nn.Linear, nn.Conv2d, nn.BatchNorm2d)
  theirs = [m for m in torch_model.modules() if isinstance(m, kinds)]
  ours = list(_dnn_jax_leaves(nnx_model))
  if len(ours) != len(theirs):
    raise ValueError(f'dnn_jax has {len(ours)} weighted layers, the torch model {len(theirs)}')
  for layer, twin in zip(ours, theirs, strict=True):
    if isinstance(layer, L.Dense) and isinstance(twin, nn.Linear):
      twin.weight.copy_(tensor(layer.linear.kernel, 1, 0))  # (in, out) -> (out, in)
      twin.bias.copy_(tensor(layer.linear.bias))
    elif isinstance(layer, L.Conv2D) and isinstance(twin, nn.Conv2d):
      twin.weight.copy_(tensor(layer.conv.kernel, 3, 2, 0, 1))  # HWIO -> OIHW
      twin.bias.copy_(tensor(layer.conv.bias))
    elif isinstance(layer, L.BatchNormalization) and isinstance(twin, nn.BatchNorm2d):
      twin.weight.copy_(tensor(layer.gamma))
      twin.bias.copy_(tensor(layer.beta))
      twin.running_mean.copy_(tensor(layer.moving_mean))
      twin.running_var.copy_(tensor(layer.moving_variance))
    else:
      raise ValueError(f'layer order differs: dnn_jax {type(layer).__name__}, torch {twin}')
  return torch_model
