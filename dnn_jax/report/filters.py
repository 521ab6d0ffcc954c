"""First-layer weights as pictures: an MLP's Dense weight vectors, a CNN's first kernels."""

import numpy as np
from matplotlib import colormaps

from dnn_jax.models import layers
from dnn_jax.report import grids

MAX_FILTERS = 64


def first_layer(model) -> layers.Dense | layers.Conv2D:
  """The model's first Dense or Conv2D layer, in the order its input flows through."""
  for layer in getattr(model, 'layers', [model]):
    if isinstance(layer, (layers.Dense, layers.Conv2D)):
      return layer
  raise ValueError(f'{type(model).__name__} has no Dense or Conv2D layer')


def dense_filters(kernel_DxU: np.ndarray, input_shape) -> np.ndarray:
  """[U, H, W, C]: unit j's weight vector (kernel column j) in the input image's shape."""
  kernel_DxU = np.asarray(kernel_DxU)
  return kernel_DxU.T.reshape(kernel_DxU.shape[1], *input_shape)


def conv_filters(kernel_KxKxCxF: np.ndarray) -> np.ndarray:
  """[F, K, K, C]: one image per output filter."""
  return np.moveaxis(np.asarray(kernel_KxKxCxF), -1, 0)


def to_colours(filters_NxHxWxC: np.ndarray) -> np.ndarray:
  """Each filter as RGB in [0, 1], scaled on its own.

  Colour inputs (C=3) show the kernel as an RGB image, each filter min-max normalized; one
  channel shows as a diverging map: red positive, blue negative, white zero.
  """
  f = np.asarray(filters_NxHxWxC, np.float32)
  axes = tuple(range(1, f.ndim))
  if f.shape[-1] == 3:
    low, high = f.min(axes, keepdims=True), f.max(axes, keepdims=True)
    return (f - low) / np.maximum(high - low, 1e-12)
  scale = np.maximum(np.abs(f).max(axes, keepdims=True), 1e-12)
  return colormaps['RdBu_r'](0.5 + 0.5 * f[..., 0] / scale[..., 0])[..., :3]


def filter_images(model, input_shape) -> tuple[np.ndarray, str]:
  """(filters as [N, H, W, C] weights, what they are) of the model's first layer."""
  layer = first_layer(model)
  if isinstance(layer, layers.Dense):
    images = dense_filters(layer.linear.kernel[...], input_shape)
    what = f"the input weights of the first Dense layer's {len(images)} units"
  else:
    images = conv_filters(layer.conv.kernel[...])
    k = images.shape[1]
    what = f'the {len(images)} {k}x{k} kernels of the first convolution'
  return images, what


def draw_filters(path, model, input_shape) -> str:
  """Writes the first layer's first MAX_FILTERS filters as a grid; returns what they are."""
  images, what = filter_images(model, input_shape)
  shown = images[:MAX_FILTERS]
  if len(shown) < len(images):
    what += f' (the first {len(shown)} shown)'
  grids.draw_titled_grid(
    path, to_colours(shown), [str(i) for i in range(len(shown))], cols=min(len(shown), 8),
    tile_inches=1.0, heading=what[0].upper() + what[1:], fill=0.85,
  )  # fmt: skip
  return what
