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
  outside_FxKxSxS: np.ndarray  # True where a window's pixel lies beyond the image's edge
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


def outside(top: int, left: int, size: int, input_hw) -> np.ndarray:
  """[size, size] True where the window at (top, left) lies beyond the image's edge."""
  rows, cols = top + np.arange(size), left + np.arange(size)
  inside_rows = (rows >= 0) & (rows < input_hw[0])
  inside_cols = (cols >= 0) & (cols < input_hw[1])
  return ~(inside_rows[:, None] & inside_cols[None, :])


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
  hw = x_N.shape[1:3]
  windows = [
    [
      (crop(x_N[i], t - margin, c - margin, size), outside(t - margin, c - margin, size, hw))
      for i, t, c in zip(*rows, strict=True)
    ]
    for rows in zip(image_FxK, top_FxK, left_FxK, strict=True)
  ]
  return TopPatches(
    image_FxK=image_FxK,
    top_FxK=top_FxK,
    left_FxK=left_FxK,
    value_FxK=value_NxF[image_FxK, filters_FxK],
    patches_FxKxSxSxC=np.array([[w for w, _ in row] for row in windows]),
    outside_FxKxSxS=np.array([[o for _, o in row] for row in windows]),
    kernel_size=kernel_size,
    margin=margin,
  )


def framed(
  patch_SxSx3: np.ndarray, outside_SxS: np.ndarray, margin: int, kernel_size: int, scale: int
) -> np.ndarray:
  """The patch upscaled `scale` times, the receptive field outlined, beyond the edge checkered."""
  big = np.repeat(np.repeat(patch_SxSx3, scale, axis=0), scale, axis=1).copy()
  yy, xx = np.mgrid[: big.shape[0], : big.shape[1]]
  cell = max(scale // 2, 1)
  checker = np.where((yy // cell + xx // cell) % 2, 0.55, 0.8)
  beyond = np.repeat(np.repeat(outside_SxS, scale, axis=0), scale, axis=1)
  big[beyond] = checker[beyond][:, None]
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
  for patches, outsides in zip(top.patches_FxKxSxSxC, top.outside_FxKxSxS, strict=True):
    tiles = np.stack(
      [
        framed(p, o, top.margin, top.kernel_size, scale)
        for p, o in zip(grids.to_rgb(patches), outsides, strict=True)
      ]
    )
    block, _ = grids.mosaic(tiles, cols=3)
    blocks.append(block)
  num_filters, k = top.image_FxK.shape
  heading = f'Top {k} test patches of the first {num_filters} filters'
  grids.draw_titled_grid(
    path, np.stack(blocks), [f'filter {f}' for f in range(num_filters)], cols=4,
    tile_inches=2.0, fontsize=10, heading=heading, fill=0.85,
  )  # fmt: skip
  field = f'{top.kernel_size}x{top.kernel_size}'
  caption = (
    f'For each of the first {num_filters} first-layer filters, the {k} test images whose '
    f'strongest response to it is the highest (strongest first, one window per image). '
  )
  if top.margin:
    caption += (
      f'Each tile is a {size}x{size}-pixel window of the input as the model sees it, upscaled: '
      f"the filter's {field} receptive field (outlined in yellow) with {top.margin} pixels of "
      f'context on each side.'
    )
  else:
    caption += f"Each tile is the filter's {field} receptive field, upscaled."
  if top.outside_FxKxSxS.any():
    caption += " Checkered pixels lie beyond the image's edge (a 'same' convolution sees zeros)."
  return caption
