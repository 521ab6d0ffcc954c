"""The "top 9 patches": for each first-layer filter, the test windows that excite it most.

A filter's response at one output position depends on a kernel_size x kernel_size window of
the input (its receptive field). Each test image contributes its single strongest window per
filter, so the 9 shown come from 9 different images rather than 9 neighbouring positions.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from dnn_jax.models import layers
from dnn_jax.report import grids, predict

FRAME = (1.0, 0.8, 0.0)  # the receptive field's outline: yellow on grey and on colour


@dataclasses.dataclass
class TopPatches:
  """The k strongest windows of each of F filters (rows sorted strongest first)."""

  image_FxK: np.ndarray  # test image index
  top_FxK: np.ndarray  # receptive field's top-left corner in input pixels ('same': may be < 0)
  left_FxK: np.ndarray
  value_FxK: np.ndarray  # the filter's response there (before its activation)
  patches_FxKxSxSxC: np.ndarray  # windows of S = kernel_size + 2 * margin pixels, zero outside
  kernel_size: int
  margin: int  # context pixels shown around the receptive field on each side


def strongest_responses(conv: layers.Conv2D, x_N, num_filters: int, batch_size: int = 500):
  """(value_NxF, output row_NxF, output column_NxF) of each image's strongest response."""
  kernel = conv.conv.kernel[...][..., :num_filters]
  bias = conv.conv.bias[...][:num_filters] if conv.conv.bias is not None else 0.0
  stride = conv.strides

  @jax.jit
  def strongest(x_Bx):
    y_BxHxWxF = jax.lax.conv_general_dilated(
      x_Bx, kernel, (stride, stride), conv.padding.upper(),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    ) + bias  # fmt: skip
    b, _, w, f = y_BxHxWxF.shape
    flat = y_BxHxWxF.reshape(b, -1, f)
    where_BxF = jnp.argmax(flat, axis=1)
    value_BxF = jnp.max(flat, axis=1)
    # One array out (batched concatenates one): positions are exact in float32 below 2**24.
    row, col = where_BxF // w, where_BxF % w
    return jnp.stack([value_BxF, row.astype(jnp.float32), col.astype(jnp.float32)], axis=-1)

  out_BxFx3 = predict.batched(strongest, (np.asarray(x_N, np.float32),), batch_size)
  return out_BxFx3[..., 0], out_BxFx3[..., 1].astype(int), out_BxFx3[..., 2].astype(int)


def receptive_field_origin(row, col, conv: layers.Conv2D, input_hw) -> tuple:
  """Top-left input pixel of the window an output position sees (XLA's 'same' padding)."""
  k, s = conv.conv.kernel.shape[0], conv.strides
  pad_top = pad_left = 0
  if conv.padding == 'same':
    out_h, out_w = -(-input_hw[0] // s), -(-input_hw[1] // s)
    pad_top = max((out_h - 1) * s + k - input_hw[0], 0) // 2
    pad_left = max((out_w - 1) * s + k - input_hw[1], 0) // 2
  return row * s - pad_top, col * s - pad_left


def crop(image_HxWxC: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
  """The size x size window at (top, left); pixels outside the image are zero."""
  h, w, c = image_HxWxC.shape
  out = np.zeros((size, size, c), image_HxWxC.dtype)
  y0, x0 = max(top, 0), max(left, 0)
  y1, x1 = min(top + size, h), min(left + size, w)
  if y0 < y1 and x0 < x1:
    out[y0 - top : y1 - top, x0 - left : x1 - left] = image_HxWxC[y0:y1, x0:x1]
  return out


def top_patches(
  conv: layers.Conv2D, x_N, k: int = 9, num_filters: int = 16, margin: int = 2,
  batch_size: int = 500,
) -> TopPatches:  # fmt: skip
  """The k images (one window each) with the strongest responses of the first filters."""
  x_N = np.asarray(x_N, np.float32)
  num_filters = min(num_filters, conv.conv.kernel.shape[-1])
  value_NxF, row_NxF, col_NxF = strongest_responses(conv, x_N, num_filters, batch_size)
  # Strongest first; among equal responses the earlier image (a stable sort).
  image_FxK = np.argsort(-value_NxF, axis=0, kind='stable')[:k].T
  filters_FxK = np.arange(num_filters)[:, None]
  top_FxK, left_FxK = receptive_field_origin(
    row_NxF[image_FxK, filters_FxK], col_NxF[image_FxK, filters_FxK], conv, x_N.shape[1:3]
  )
  kernel_size = conv.conv.kernel.shape[0]
  size = kernel_size + 2 * margin
  patches = np.stack(
    [
      np.stack([crop(x_N[i], t - margin, c - margin, size) for i, t, c in zip(*rows, strict=True)])
      for rows in zip(image_FxK, top_FxK, left_FxK, strict=True)
    ]
  )
  return TopPatches(
    image_FxK=image_FxK,
    top_FxK=top_FxK,
    left_FxK=left_FxK,
    value_FxK=value_NxF[image_FxK, filters_FxK],
    patches_FxKxSxSxC=patches,
    kernel_size=kernel_size,
    margin=margin,
  )


def framed(patch_SxSx3: np.ndarray, margin: int, kernel_size: int, scale: int) -> np.ndarray:
  """The patch upscaled `scale` times with the receptive field outlined (when there is context)."""
  big = np.repeat(np.repeat(patch_SxSx3, scale, axis=0), scale, axis=1).copy()
  if margin:
    a, b = margin * scale - 1, (margin + kernel_size) * scale  # just outside the field
    big[a, a : b + 1] = big[b, a : b + 1] = FRAME
    big[a : b + 1, a] = big[a : b + 1, b] = FRAME
  return big


def draw_top_patches(path, top: TopPatches) -> str:
  """Writes one 3x3 block of windows per filter, titled by filter; returns a caption."""
  size = top.patches_FxKxSxSxC.shape[2]
  scale = max(1, -(-42 // size))  # about 42 pixels a window, so the pixels are visible
  blocks = []
  for patches in top.patches_FxKxSxSxC:
    tiles = np.stack([framed(p, top.margin, top.kernel_size, scale) for p in grids.to_rgb(patches)])
    block, _ = grids.mosaic(tiles, cols=3)
    blocks.append(block)
  num_filters, k = top.image_FxK.shape
  heading = f'Top {k} test patches of the first {num_filters} filters'
  grids.draw_titled_grid(
    path, np.stack(blocks), [f'filter {f}' for f in range(num_filters)], cols=4,
    tile_inches=2.0, fontsize=10, heading=heading, fill=0.85,
  )  # fmt: skip
  field = f'{top.kernel_size}x{top.kernel_size}'
  if top.margin:
    return (
      f'For each of the first {num_filters} first-layer filters, the {k} test images whose '
      f'strongest response to it is the highest (strongest first, one window per image). Each '
      f'tile is a {size}x{size}-pixel window of the input as the model sees it, upscaled: the '
      f"filter's {field} receptive field (outlined in yellow) with {top.margin} pixels of "
      f'context on each side.'
    )
  return (
    f'For each of the first {num_filters} first-layer filters, the {k} {field} receptive '
    f'fields (input as the model sees it, upscaled) that excite it most, one per test image.'
  )
