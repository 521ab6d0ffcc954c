"""Plain convolutional networks, written as a line of Keras-like layer tokens.

`layers='conv32 conv64 maxpool dropout0.25 flatten dense128 dropout0.5'` is the Keras
MNIST CNN; a Dense(num_classes) head is always appended. Tokens:
  conv<F>[same]  Conv2D with F filters, kernel_size x kernel_size, relu ('valid' unless same)
  maxpool        MaxPooling2D(2)
  dropout<rate>  Dropout
  flatten        Flatten
  dense<units>   Dense with relu
"""

import re

from flax import nnx

from dnn_jax.errors import ConfigError
from dnn_jax.models import layers as L

TOKEN = re.compile(r'^(conv(\d+)(same)?|maxpool|dropout(0?\.\d+)|flatten|dense(\d+))$')
GRAMMAR = 'conv<filters>[same], maxpool, dropout<rate>, flatten, dense<units>'


def parse(spec: str) -> list[re.Match]:
  """The tokens of a layer line, or ConfigError naming the first bad one."""
  tokens = spec.split()
  matches = [TOKEN.match(t) for t in tokens]
  for token, match in zip(tokens, matches, strict=True):
    if match is None:
      raise ConfigError(f'config.model.layers: bad layer {token!r}; use {GRAMMAR}')
  return matches


class CNN(L.Sequential):
  """The layers of `layers` in order, then Dense(num_classes) (logits)."""

  def __init__(
    self, *, input_shape, num_classes: int, layers: str, kernel_size: int = 3,
    activation: str = 'relu', conv_implementation: str = 'auto', rngs: nnx.Rngs,
  ):  # fmt: skip
    shape = tuple(input_shape)  # (H, W, C) as it flows through the stack
    stack = []
    for match in parse(layers):
      token = match.group(1)
      if match.group(2):
        padding = 'same' if match.group(3) else 'valid'
        filters = int(match.group(2))
        stack.append(
          L.Conv2D(shape[-1], filters, kernel_size, padding=padding, activation=activation,
                   implementation=conv_implementation, rngs=rngs)
        )  # fmt: skip
        shrink = 0 if padding == 'same' else kernel_size - 1
        shape = (shape[0] - shrink, shape[1] - shrink, filters)
      elif token == 'maxpool':
        stack.append(L.MaxPooling2D(2))
        shape = (shape[0] // 2, shape[1] // 2, shape[2])
      elif match.group(4):
        stack.append(L.Dropout(float(match.group(4))))
      elif token == 'flatten':
        stack.append(L.Flatten())
        shape = (shape[0] * shape[1] * shape[2],)
      else:
        units = int(match.group(5))
        stack.append(L.Dense(shape[-1], units, activation, rngs=rngs))
        shape = (units,)
      if min(shape) <= 0:
        raise ConfigError(f'config.model.layers: {token!r} shrinks {input_shape} to nothing')
    if len(shape) != 1:
      raise ConfigError("config.model.layers must end in a 'flatten' (then optional dense)")
    stack.append(L.Dense(shape[0], num_classes, rngs=rngs))
    super().__init__(stack)


Model = CNN  # config.model.name = 'cnn'
