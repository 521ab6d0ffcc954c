"""CLAHE (OpenCV's contrast-limited adaptive histogram equalization) and CIE LAB, in JAX."""

import jax
import jax.numpy as jnp
import numpy as np

MAX_VALUE = 255.0  # images are float32 on the 0..255 scale
NUM_BINS = 256  # CLAHE histogram bins: OpenCV's for 8-bit images

# sRGB (D65) -> CIE XYZ and the D65 white point, as OpenCV's cvtColor(RGB2Lab) uses them.
_RGB_TO_XYZ_3x3 = np.array(
  [
    [0.412453, 0.357580, 0.180423],
    [0.212671, 0.715160, 0.072169],
    [0.019334, 0.119193, 0.950227],
  ],
  np.float32,
)
_XYZ_TO_RGB_3x3 = np.linalg.inv(_RGB_TO_XYZ_3x3.astype(np.float64)).astype(np.float32)
_WHITE_XYZ = np.array([0.950456, 1.0, 1.088754], np.float32)
_LAB_DELTA = 6.0 / 29.0  # where CIE LAB's cube root turns into its linear segment


def _clip_to_range(image):
  return jnp.clip(image, 0.0, MAX_VALUE)


def _srgb_to_linear(rgb):
  return jnp.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(linear):
  linear = jnp.clip(linear, 0.0, 1.0)  # out of gamut after a change of L: saturate like OpenCV
  return jnp.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


def _lab_f(t):
  return jnp.where(t > _LAB_DELTA**3, jnp.cbrt(t), t / (3 * _LAB_DELTA**2) + 4 / 29)


def _lab_f_inverse(f):
  return jnp.where(f > _LAB_DELTA, f**3, 3 * _LAB_DELTA**2 * (f - 4 / 29))


def rgb_to_lab(image_HxWx3: jax.Array) -> jax.Array:
  """0..255 sRGB -> CIE LAB (D65): L in 0..100, a and b roughly -128..127."""
  xyz_HxWx3 = _srgb_to_linear(image_HxWx3 / MAX_VALUE) @ _RGB_TO_XYZ_3x3.T
  fx, fy, fz = jnp.moveaxis(_lab_f(xyz_HxWx3 / _WHITE_XYZ), -1, 0)
  return jnp.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], axis=-1)


def lab_to_rgb(lab_HxWx3: jax.Array) -> jax.Array:
  """CIE LAB (D65) -> 0..255 sRGB, out-of-gamut colors clipped."""
  lightness, a, b = jnp.moveaxis(lab_HxWx3, -1, 0)
  fy = (lightness + 16) / 116
  f_HxWx3 = jnp.stack([fy + a / 500, fy, fy - b / 200], axis=-1)
  xyz_HxWx3 = _lab_f_inverse(f_HxWx3) * _WHITE_XYZ
  return _clip_to_range(_linear_to_srgb(xyz_HxWx3 @ _XYZ_TO_RGB_3x3.T) * MAX_VALUE)


def _tile_grid(tile_grid_size) -> tuple[int, int]:
  """(rows, cols) of tiles from an int or an OpenCV-style (cols, rows) pair."""
  if isinstance(tile_grid_size, int):
    return tile_grid_size, tile_grid_size
  cols, rows = tile_grid_size
  return int(rows), int(cols)


def _pad_to_tiles(levels_HxW: jax.Array, tiles_y: int, tiles_x: int) -> jax.Array:
  """OpenCV's padding for the histograms: bottom and right, BORDER_REFLECT_101."""
  height, width = levels_HxW.shape
  if height % tiles_y == 0 and width % tiles_x == 0:
    return levels_HxW
  # OpenCV pads both sides by tiles - size % tiles: a whole extra tile where one divides.
  pad = ((0, tiles_y - height % tiles_y), (0, tiles_x - width % tiles_x))
  return jnp.pad(levels_HxW, pad, mode='reflect')  # numpy's 'reflect' is REFLECT_101


def _tile_histograms(padded_HxW: jax.Array, tiles_y: int, tiles_x: int) -> jax.Array:
  """[tiles_y * tiles_x, 256] int32 histograms of the tiles, row-major (scatter-add)."""
  tile_h, tile_w = padded_HxW.shape[0] // tiles_y, padded_HxW.shape[1] // tiles_x
  tiles_TxN = (
    padded_HxW.reshape(tiles_y, tile_h, tiles_x, tile_w)
    .transpose(0, 2, 1, 3)
    .reshape(tiles_y * tiles_x, tile_h * tile_w)
  )
  tile_TxN = jnp.broadcast_to(jnp.arange(tiles_y * tiles_x)[:, None], tiles_TxN.shape)
  hist_TxK = jnp.zeros((tiles_y * tiles_x, NUM_BINS), jnp.int32)
  return hist_TxK.at[tile_TxN, tiles_TxN].add(1)


def _clip_histograms(hist_TxK: jax.Array, clip: int) -> jax.Array:
  """OpenCV's clipping: cut bins at clip, spread the excess evenly, the residual bin by bin."""
  excess_T = jnp.sum(jnp.maximum(hist_TxK - clip, 0), axis=1)
  batch_T, residual_T = excess_T // NUM_BINS, excess_T % NUM_BINS
  # The residual goes one pixel each to bins 0, step, 2 * step, ... (step = 256 // residual).
  step_T = jnp.maximum(NUM_BINS // jnp.maximum(residual_T, 1), 1)
  bins_K = jnp.arange(NUM_BINS)
  gets_one_TxK = (bins_K % step_T[:, None] == 0) & (bins_K // step_T[:, None] < residual_T[:, None])
  return jnp.minimum(hist_TxK, clip) + batch_T[:, None] + gets_one_TxK


def _interpolation_weights(size: int, tile_size: int, tiles: int):
  """Per row (or column): the two nearest tiles and the second one's weight, as OpenCV has them."""
  position = np.arange(size, dtype=np.float32) * np.float32(1 / tile_size) - np.float32(0.5)
  first = np.floor(position)
  weight = (position - first).astype(np.float32)
  first = first.astype(np.int32)
  return np.maximum(first, 0), np.minimum(first + 1, tiles - 1), weight


def clahe_channel(channel_HxW: jax.Array, clip_limit: float = 2.0, tile_grid_size=8) -> jax.Array:
  """OpenCV's CLAHE (createCLAHE(clip_limit, tile_grid_size).apply) of one 0..255 channel."""
  tiles_y, tiles_x = _tile_grid(tile_grid_size)
  height, width = channel_HxW.shape
  levels_HxW = jnp.clip(jnp.round(channel_HxW), 0, NUM_BINS - 1).astype(jnp.int32)
  padded_HxW = _pad_to_tiles(levels_HxW, tiles_y, tiles_x)
  tile_h, tile_w = padded_HxW.shape[0] // tiles_y, padded_HxW.shape[1] // tiles_x
  tile_pixels = tile_h * tile_w
  hist_TxK = _tile_histograms(padded_HxW, tiles_y, tiles_x)
  if clip_limit > 0:  # OpenCV: clip_limit is relative to a flat histogram, at least 1 pixel
    hist_TxK = _clip_histograms(hist_TxK, max(int(clip_limit * tile_pixels / NUM_BINS), 1))
  lut_scale = np.float32((NUM_BINS - 1) / tile_pixels)
  lut_TxK = jnp.clip(jnp.round(jnp.cumsum(hist_TxK, axis=1) * lut_scale), 0, NUM_BINS - 1)
  # Each pixel blends the mappings of its four nearest tile centers (clamped at the edges).
  y1_H, y2_H, wy_H = _interpolation_weights(height, tile_h, tiles_y)
  x1_W, x2_W, wx_W = _interpolation_weights(width, tile_w, tiles_x)

  def mapped(rows_H, cols_W):
    tiles_HxW = rows_H[:, None] * tiles_x + cols_W[None, :]
    return lut_TxK[tiles_HxW, levels_HxW]

  top_HxW = mapped(y1_H, x1_W) * (1 - wx_W) + mapped(y1_H, x2_W) * wx_W
  bottom_HxW = mapped(y2_H, x1_W) * (1 - wx_W) + mapped(y2_H, x2_W) * wx_W
  return top_HxW * (1 - wy_H[:, None]) + bottom_HxW * wy_H[:, None]


def equalize_clahe(image_HxWxC: jax.Array, clip_limit: float = 2.0, tile_grid_size=8):
  """CLAHE of a gray image, or of an RGB image's LAB lightness (as albumentations does)."""
  if image_HxWxC.shape[-1] == 1:
    return clahe_channel(image_HxWxC[..., 0], clip_limit, tile_grid_size)[..., None]
  # LAB's L (not HSV's V) keeps the hue and follows perceived brightness; OpenCV's 8-bit
  # LAB stores L * 255 / 100, which is what its CLAHE sees in albumentations.
  lab_HxWx3 = rgb_to_lab(image_HxWxC)
  lightness_HxW = clahe_channel(lab_HxWx3[..., 0] * 2.55, clip_limit, tile_grid_size) / 2.55
  return lab_to_rgb(lab_HxWx3.at[..., 0].set(lightness_HxW))
