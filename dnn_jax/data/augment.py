"""Per-example image augmentation in JAX, run on the device inside the jit-compiled step."""

# Images are float32 [H, W, C] on the 0..255 scale, C = 1 (gray) or 3 (RGB). Every op is
# op(key, image_HxWxC, *, <params>, p) -> image_HxWxC, clipped to [0, 255], and applied with
# probability p. A chain config is an ordered mapping {op name: {param: value}}.
#
# The 2019 Keras ResNet notebook's albumentations (0.4-era) chain, as albumentations_resnet_chain():
#
#   albumentations                                 | here                 | p
#   -----------------------------------------------+----------------------+-----
#   HorizontalFlip()                               | flip_left_right      | 0.5
#   RandomContrast(limit=0.2)                      | random_contrast      | 0.5
#   RandomGamma(gamma_limit=(80, 120))             | random_gamma         | 0.5
#   RandomBrightness(limit=0.2)                    | random_brightness    | 0.5
#   HueSaturationValue(5, 20, 10)                  | hue_saturation_value | 0.9
#   CLAHE(clip_limit=2.0, tile_grid_size=(8, 8))   | clahe                | 1.0
#   ShiftScaleRotate(0.0625, 0.1, 15, REFLECT_101) | shift_scale_rotate   | 0.8
#
# It also applies the CLAHE alone to validation and test images: clahe_only(). The Keras
# CIFAR-10 CNN example's ImageDataGenerator(width_shift_range=0.1, height_shift_range=0.1,
# horizontal_flip=True) is keras_cifar_shift_flip().

import functools
import inspect
from collections.abc import Callable, Mapping

import dm_pix as pix
import jax
import jax.numpy as jnp
import ml_collections

from dnn_jax.data.clahe import equalize_clahe
from dnn_jax.errors import ConfigError

MAX_VALUE = 255.0
FILL_MODES = ('nearest', 'reflect')  # Keras fill_mode names; both mean what scipy.ndimage means


def _clip(image_HxWxC: jax.Array) -> jax.Array:
  return jnp.clip(image_HxWxC, 0.0, MAX_VALUE)


def _maybe(key, p: float, image_HxWxC: jax.Array, augmented_HxWxC: jax.Array) -> jax.Array:
  """augmented with probability p, else the input untouched (vmap-friendly: no branching)."""
  # bernoulli is uniform[0, 1) < p: never true for p = 0, always true for p = 1.
  applies = jax.random.bernoulli(key, jnp.asarray(p, jnp.float32))  # p may come as an int
  return jnp.where(applies, augmented_HxWxC, image_HxWxC)


def _uniform(key, low, high) -> jax.Array:
  return jax.random.uniform(key, (), jnp.float32, low, high)


# ---------------------------------------------------------------------------------------------
# Deterministic building blocks (public so tests and other code can call them directly).


def _border_index(index, size: int, fill: str):
  """Where an index outside [0, size) reads from: the edge ('nearest') or its mirror ('reflect')."""
  if fill == 'nearest':
    return jnp.clip(index, 0, size - 1)
  period = jnp.mod(index, 2 * size)  # scipy's 'reflect': d c b a | a b c d | d c b a
  return jnp.where(period < size, period, 2 * size - 1 - period)


def _resampling_matrix(size: int, shift, fill: str) -> jax.Array:
  """[size, size] weights of a 1-D bilinear pull shift: row i blends inputs at i - shift."""
  source_N = jnp.arange(size, dtype=jnp.float32) - jnp.asarray(shift, jnp.float32)
  low_N = jnp.floor(source_N)
  frac_N1 = (source_N - low_N)[:, None]
  low_N = low_N.astype(jnp.int32)
  one_hot = functools.partial(jax.nn.one_hot, num_classes=size, dtype=jnp.float32)
  return (1.0 - frac_N1) * one_hot(_border_index(low_N, size, fill)) + frac_N1 * one_hot(
    _border_index(low_N + 1, size, fill)
  )


def shift_image(image_HxWxC: jax.Array, dy, dx, fill: str = 'nearest') -> jax.Array:
  """Moves the content dy pixels down and dx right; fractional shifts interpolate bilinearly."""
  # Pull resampling as in scipy.ndimage (which Keras uses): output (i, j) reads input
  # (i - dy, j - dx). A translation is separable, so it is two small matmuls with
  # [H, H] and [W, W] interpolation matrices: measured faster on CPU in a training step than
  # dm-pix's gathers (equal within float rounding).
  height, width, _ = image_HxWxC.shape
  rows_HxH = _resampling_matrix(height, dy, fill)
  cols_WxW = _resampling_matrix(width, dx, fill)
  exact = jax.lax.Precision.HIGHEST  # pixel values up to 255: keep full float32 products
  rows_moved = jnp.einsum('ia,ajc->ijc', rows_HxH, image_HxWxC, precision=exact)
  return jnp.einsum('jb,ibc->ijc', cols_WxW, rows_moved, precision=exact)


def warp_shift_scale_rotate(image_HxWxC: jax.Array, angle, scale, dx, dy) -> jax.Array:
  """One bilinear affine warp: rotate angle degrees counter-clockwise and scale about the center,
  then shift by (dx * W, dy * H) pixels; borders are OpenCV's BORDER_REFLECT_101."""
  height, width, _ = image_HxWxC.shape
  theta = jnp.deg2rad(jnp.asarray(angle, jnp.float32))
  cos, sin = jnp.cos(theta) / scale, jnp.sin(theta) / scale
  # OpenCV's getRotationMatrix2D maps input to output; dm-pix wants output -> input in
  # (row, col) order, i.e. the inverse: input = inverse @ (output - center - shift) + center.
  inverse_2x2 = jnp.stack([jnp.stack([cos, sin]), jnp.stack([-sin, cos])])
  # The true pixel-grid center, so a 90 degree turn of a square image is exactly np.rot90;
  # albumentations passes (W / 2, H / 2), half a pixel off, to OpenCV.
  center_2 = jnp.array([(height - 1) / 2, (width - 1) / 2], jnp.float32)
  shift_2 = jnp.stack([dy * height, dx * width]).astype(jnp.float32)
  offset_2 = center_2 - inverse_2x2 @ (center_2 + shift_2)
  matrix_3x3 = jnp.eye(3, dtype=jnp.float32).at[:2, :2].set(inverse_2x2)
  offset_3 = jnp.concatenate([offset_2, jnp.zeros(1, jnp.float32)])
  # scipy's 'mirror' (d c b | a b c d | c b a) is OpenCV's BORDER_REFLECT_101 and numpy.pad's
  # 'reflect'; scipy's 'reflect' repeats the edge pixel (OpenCV's BORDER_REFLECT).
  return pix.affine_transform(image_HxWxC, matrix_3x3, offset=offset_3, mode='mirror')


# ---------------------------------------------------------------------------------------------
# Random ops: op(key, image_HxWxC, *, params..., p) -> image_HxWxC.


def flip_left_right(key, image_HxWxC: jax.Array, *, p: float = 0.5) -> jax.Array:
  """Reverses the columns (albumentations HorizontalFlip, Keras horizontal_flip)."""
  return _maybe(key, p, image_HxWxC, pix.flip_left_right(image_HxWxC))


def random_shift(
  key, image_HxWxC: jax.Array, *, width=0.1, height=0.1, fill='nearest', p: float = 1.0
) -> jax.Array:
  """Keras width/height_shift_range: a shift by U(-f, f) of the size, sub-pixel and bilinear."""
  key_apply, key_y, key_x = jax.random.split(key, 3)
  rows, cols, _ = image_HxWxC.shape
  dy = _uniform(key_y, -height, height) * rows
  dx = _uniform(key_x, -width, width) * cols
  # Bilinear weights can overshoot 255 by a rounding error: clip like every op.
  return _maybe(key_apply, p, image_HxWxC, _clip(shift_image(image_HxWxC, dy, dx, fill)))


def random_contrast(key, image_HxWxC: jax.Array, *, limit=0.2, p: float = 0.5) -> jax.Array:
  """albumentations 0.4 RandomContrast: x * (1 + U(-limit, limit)); a gain, no mean centering."""
  key_apply, key_alpha = jax.random.split(key)
  alpha = 1.0 + _uniform(key_alpha, -limit, limit)
  return _maybe(key_apply, p, image_HxWxC, _clip(image_HxWxC * alpha))


def random_gamma(key, image_HxWxC: jax.Array, *, low=80, high=120, p: float = 0.5) -> jax.Array:
  """albumentations RandomGamma: 255 * (x / 255) ** gamma, gamma a whole percent in [low, high]."""
  key_apply, key_gamma = jax.random.split(key)
  # Whole percents, both ends included, as albumentations' random.randint draws them.
  gamma = jax.random.randint(key_gamma, (), int(low), int(high) + 1) / 100
  gamma_HxWxC = pix.adjust_gamma(image_HxWxC / MAX_VALUE, gamma) * MAX_VALUE
  return _maybe(key_apply, p, image_HxWxC, _clip(gamma_HxWxC))


def random_brightness(key, image_HxWxC: jax.Array, *, limit=0.2, p: float = 0.5) -> jax.Array:
  """albumentations 0.4 RandomBrightness: x + 255 * U(-limit, limit) (brightness_by_max)."""
  key_apply, key_beta = jax.random.split(key)
  delta = _uniform(key_beta, -limit, limit) * MAX_VALUE
  return _maybe(key_apply, p, image_HxWxC, _clip(pix.adjust_brightness(image_HxWxC, delta)))


def hue_saturation_value(
  key, image_HxWxC: jax.Array, *, hue=5, saturation=20, value=10, p: float = 0.9
) -> jax.Array:
  """albumentations HueSaturationValue: uniform shifts on OpenCV's 8-bit HSV scales."""
  key_apply, key_h, key_s, key_v = jax.random.split(key, 4)
  # OpenCV's 8-bit hue is degrees / 2 (180 per turn); saturation and value are 0..255.
  dh = _uniform(key_h, -hue, hue) / 180
  ds = _uniform(key_s, -saturation, saturation) / MAX_VALUE
  dv = _uniform(key_v, -value, value)
  if image_HxWxC.shape[-1] == 1:  # gray: only the value shift applies, as in albumentations
    return _maybe(key_apply, p, image_HxWxC, _clip(image_HxWxC + dv))
  h, s, v = jnp.moveaxis(pix.rgb_to_hsv(image_HxWxC / MAX_VALUE), -1, 0)
  hsv_HxWx3 = jnp.stack(
    [(h + dh) % 1.0, jnp.clip(s + ds, 0, 1), jnp.clip(v + dv / MAX_VALUE, 0, 1)], -1
  )
  return _maybe(key_apply, p, image_HxWxC, _clip(pix.hsv_to_rgb(hsv_HxWx3) * MAX_VALUE))


def clahe(
  key, image_HxWxC: jax.Array, *, clip_limit=2.0, tile_grid_size=8, p: float = 1.0
) -> jax.Array:
  """OpenCV/albumentations CLAHE, deterministic but for p (see equalize_clahe)."""
  # albumentations 0.4 CLAHE(clip_limit=2.0) draws the limit from U(1, 2) per image; here it is
  # fixed. On 32x32 images with 8x8 tiles (16 pixels a tile) every limit below 16 clips at 1.
  return _maybe(key, p, image_HxWxC, _clip(equalize_clahe(image_HxWxC, clip_limit, tile_grid_size)))


def shift_scale_rotate(
  key, image_HxWxC: jax.Array, *, shift=0.0625, scale=0.1, rotate=15.0, p: float = 0.8
) -> jax.Array:
  """albumentations ShiftScaleRotate: U(+-rotate) degrees, 1 + U(+-scale), U(+-shift) * size."""
  key_apply, key_angle, key_scale, key_dx, key_dy = jax.random.split(key, 5)
  angle = _uniform(key_angle, -rotate, rotate)
  zoom = _uniform(key_scale, 1 - scale, 1 + scale)
  dx, dy = _uniform(key_dx, -shift, shift), _uniform(key_dy, -shift, shift)
  warped_HxWxC = warp_shift_scale_rotate(image_HxWxC, angle, zoom, dx, dy)
  return _maybe(key_apply, p, image_HxWxC, _clip(warped_HxWxC))


AUGMENTATIONS: dict[str, Callable[..., jax.Array]] = {
  op.__name__: op
  for op in (
    flip_left_right,
    random_shift,
    random_contrast,
    random_gamma,
    random_brightness,
    hue_saturation_value,
    clahe,
    shift_scale_rotate,
  )
}


# ---------------------------------------------------------------------------------------------
# Chains.


def _ordered_items(mapping) -> list:
  """A mapping's items in insertion order, also for a ConfigDict."""
  # ConfigDict.items() sorts keys unless built with sort_keys=False (and deepcopy or freezing
  # drops that flag), which would silently reorder a chain; its _fields keep insertion order.
  if isinstance(mapping, ml_collections.ConfigDict):
    return [(name, mapping[name]) for name in mapping._fields]
  return list(mapping.items())


def _param_names(op) -> list[str]:
  """The keyword parameters op accepts in a chain config (p included), sorted."""
  parameters = inspect.signature(op).parameters.values()
  return sorted(param.name for param in parameters if param.kind is param.KEYWORD_ONLY)


def _bind(name: str, params) -> Callable[..., jax.Array]:
  """op(key, image) for one chain entry, or ConfigError naming the bad name or value."""
  if name not in AUGMENTATIONS:
    choices = ', '.join(sorted(AUGMENTATIONS))
    raise ConfigError(f'unknown augmentation {name!r}; choose one of {choices}')
  op = AUGMENTATIONS[name]
  if params is None:
    params = {}
  if not isinstance(params, Mapping | ml_collections.ConfigDict):
    raise ConfigError(f'augmentation {name!r} needs a mapping of parameters, got {params!r}')
  params = dict(_ordered_items(params))
  allowed = _param_names(op)
  for param in params:
    if param not in allowed:
      raise ConfigError(
        f'unknown parameter {param!r} of augmentation {name!r}; choose one of {", ".join(allowed)}'
      )
  p = params.get('p', inspect.signature(op).parameters['p'].default)
  if not (isinstance(p, int | float) and 0.0 <= p <= 1.0):
    raise ConfigError(f'augmentation {name!r} has p={p!r}; choose a probability in [0, 1]')
  if params.get('fill', FILL_MODES[0]) not in FILL_MODES:
    raise ConfigError(
      f'augmentation {name!r} has fill={params["fill"]!r}; choose one of {", ".join(FILL_MODES)}'
    )
  return functools.partial(op, **params)


def make_chain(chain_config) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """fn(key, image_HxWxC) applying the configured ops in order, each with its own key."""
  if chain_config is None:
    chain_config = {}
  if not isinstance(chain_config, Mapping | ml_collections.ConfigDict):
    raise ConfigError(
      f'an augmentation chain is a mapping of op name to params, got {chain_config!r}'
    )
  ops = [_bind(name, params) for name, params in _ordered_items(chain_config)]

  def chain(key, image_HxWxC: jax.Array) -> jax.Array:
    if not ops:
      return image_HxWxC
    for op, op_key in zip(ops, jax.random.split(key, len(ops)), strict=True):
      image_HxWxC = op(op_key, image_HxWxC)
    return image_HxWxC

  return chain


def augment_batch(chain_fn, keys_B: jax.Array, images_BxHxWxC: jax.Array) -> jax.Array:
  """chain_fn on every example with its own key (a vmap)."""
  return jax.vmap(chain_fn)(keys_B, images_BxHxWxC)


def _chain_config(*entries) -> ml_collections.ConfigDict:
  """An ordered chain config from (op name, params) pairs."""
  return ml_collections.ConfigDict(dict(entries), sort_keys=False)


def keras_cifar_shift_flip() -> ml_collections.ConfigDict:
  """The Keras CIFAR-10 CNN example's ImageDataGenerator: shifts of 10%, then a mirror."""
  return _chain_config(
    ('random_shift', {'width': 0.1, 'height': 0.1, 'fill': 'nearest', 'p': 1.0}),
    ('flip_left_right', {'p': 0.5}),
  )


def albumentations_resnet_chain() -> ml_collections.ConfigDict:
  """The notebook's albumentations training chain (table at the top of this module)."""
  return _chain_config(
    ('flip_left_right', {'p': 0.5}),
    ('random_contrast', {'limit': 0.2, 'p': 0.5}),
    ('random_gamma', {'low': 80, 'high': 120, 'p': 0.5}),
    ('random_brightness', {'limit': 0.2, 'p': 0.5}),
    ('hue_saturation_value', {'hue': 5, 'saturation': 20, 'value': 10, 'p': 0.9}),
    ('clahe', {'clip_limit': 2.0, 'tile_grid_size': 8, 'p': 1.0}),
    ('shift_scale_rotate', {'shift': 0.0625, 'scale': 0.1, 'rotate': 15.0, 'p': 0.8}),
  )


def clahe_only() -> ml_collections.ConfigDict:
  """The notebook's deterministic preprocessing of validation and test images."""
  return _chain_config(('clahe', {'clip_limit': 2.0, 'tile_grid_size': 8, 'p': 1.0}))
