"""Augmentation ops: invariants of every op, references (numpy, OpenCV, scikit-image), configs."""

import copy
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import natural_image

from dnn_jax.data import augment
from dnn_jax.errors import ConfigError

SHAPES = [(32, 32, 3), (28, 28, 1)]  # CIFAR-10 RGB, MNIST gray
# Compiled once per call signature: much faster than op-by-op dispatch on a busy CPU.
_warp = jax.jit(augment.warp_shift_scale_rotate)


def _batch(shape, n=4, seed=0):
  return jnp.asarray(np.stack([natural_image(shape, seed + i) for i in range(n)]), jnp.float32)


def _keys(n, seed=0):
  return jax.random.split(jax.random.key(seed), n)


@functools.cache
def _op_outputs(name, shape):
  """(input, p=1 output, p=1 output again, p=0 output) for one op, in one compiled call."""
  images = _batch(shape)
  applied = augment.make_chain({name: {'p': 1.0}})
  skipped = augment.make_chain({name: {'p': 0.0}})

  @jax.jit
  def run(keys_B, images_B):
    return augment.augment_batch(applied, keys_B, images_B), augment.augment_batch(
      skipped, keys_B, images_B
    )

  out, out_p0 = run(_keys(len(images)), images)
  again, _ = run(_keys(len(images)), images)
  return np.asarray(images), np.asarray(out), np.asarray(again), np.asarray(out_p0)


@pytest.mark.parametrize('shape', SHAPES, ids=['rgb32', 'gray28'])
@pytest.mark.parametrize('name', sorted(augment.AUGMENTATIONS))
def test_op_keeps_shape_dtype_and_range(name, shape):
  images, out, _, _ = _op_outputs(name, shape)
  assert out.shape == images.shape and out.dtype == np.float32
  assert np.all(np.isfinite(out)) and out.min() >= 0.0 and out.max() <= 255.0
  assert not np.array_equal(out, images), 'p=1 left every image unchanged'


@pytest.mark.parametrize('shape', SHAPES, ids=['rgb32', 'gray28'])
@pytest.mark.parametrize('name', sorted(augment.AUGMENTATIONS))
def test_op_is_reproducible_and_identity_at_p_zero(name, shape):
  images, out, again, out_p0 = _op_outputs(name, shape)
  np.testing.assert_array_equal(out, again)
  np.testing.assert_array_equal(out_p0, images)


def test_flip_probability_is_p():
  image = _batch((8, 8, 1), n=1)[0]
  flip = functools.partial(augment.flip_left_right, p=0.5)
  out_B = jax.jit(jax.vmap(flip, (0, None)))(_keys(200), image)
  flipped_B = np.all(np.asarray(out_B) == np.asarray(image)[:, ::-1], axis=(1, 2, 3))
  assert 70 <= flipped_B.sum() <= 130  # Binomial(200, 0.5): mean 100, std 7


def test_flip_left_right_reverses_columns():
  images = _batch((32, 32, 3))
  chain = augment.make_chain({'flip_left_right': {'p': 1}})  # an int p is fine too
  out = augment.augment_batch(chain, _keys(4), images)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(images)[:, :, ::-1])


@pytest.mark.parametrize(('fill', 'np_mode'), [('nearest', 'edge'), ('reflect', 'symmetric')])
@pytest.mark.parametrize(('dy', 'dx'), [(2, -3), (-1, 4)])
def test_shift_image_by_whole_pixels_matches_numpy(fill, np_mode, dy, dx):
  image = np.asarray(_batch((12, 10, 3), n=1)[0])
  # Content moves dy down and dx right; what comes in is the border per numpy's pad mode.
  padded = np.pad(image, ((4, 4), (4, 4), (0, 0)), mode=np_mode)
  expected = padded[4 - dy : 4 - dy + 12, 4 - dx : 4 - dx + 10]
  out = jax.jit(augment.shift_image, static_argnums=3)(jnp.asarray(image), dy, dx, fill)
  np.testing.assert_allclose(np.asarray(out), expected, atol=1e-4)


@pytest.mark.parametrize('fill', ['nearest', 'reflect'])
def test_shift_image_by_fractions_matches_scipy(fill):
  # Keras's ImageDataGenerator shifts with scipy.ndimage (order 1): the reference.
  ndimage = pytest.importorskip('scipy.ndimage')
  rng = np.random.default_rng(0)
  image = rng.uniform(0, 255, (12, 10, 3)).astype(np.float32)
  shift = jax.jit(augment.shift_image, static_argnums=3)
  for dy, dx in rng.uniform(-5, 5, (8, 2)):
    expected = ndimage.shift(image.astype(np.float64), (dy, dx, 0), order=1, mode=fill)
    np.testing.assert_allclose(np.asarray(shift(image, dy, dx, fill)), expected, atol=2e-3)


def test_random_shift_moves_the_content_by_one_bounded_offset():
  # On ramps (value = 10 * column, 10 * row) a bilinear shift by (dy, dx) subtracts 10 * dx
  # (10 * dy) inside the image, so the shift can be read off and must be the same everywhere.
  cols_HxW = np.broadcast_to(np.arange(20, dtype=np.float32) * 10, (20, 20))
  ramps = jnp.asarray(np.stack([cols_HxW, cols_HxW.T], -1))
  shift = functools.partial(augment.random_shift, width=0.1, height=0.15, fill='nearest', p=1.0)
  out_B = np.asarray(jax.jit(jax.vmap(shift, (0, None)))(_keys(16), ramps))
  inner = (slice(4, 16), slice(4, 16))  # away from the border the shift brings in
  dx_B = (np.asarray(ramps)[inner][..., 0] - out_B[:, 4:16, 4:16, 0]) / 10
  dy_B = (np.asarray(ramps)[inner][..., 1] - out_B[:, 4:16, 4:16, 1]) / 10
  np.testing.assert_allclose(dx_B, dx_B[:, :1, :1] + 0 * dx_B, atol=1e-3)
  np.testing.assert_allclose(dy_B, dy_B[:, :1, :1] + 0 * dy_B, atol=1e-3)
  assert np.all(np.abs(dx_B) <= 0.1 * 20 + 1e-4) and np.all(np.abs(dy_B) <= 0.15 * 20 + 1e-4)
  assert len(np.unique(np.round(dx_B[:, 0, 0], 3))) > 8  # a continuous draw, not one value


def test_shift_scale_rotate_with_zero_limits_is_the_identity():
  images = _batch((32, 32, 3))
  chain = augment.make_chain(
    {'shift_scale_rotate': {'shift': 0.0, 'scale': 0.0, 'rotate': 0.0, 'p': 1.0}}
  )
  out = jax.jit(functools.partial(augment.augment_batch, chain))(_keys(4), images)
  np.testing.assert_allclose(np.asarray(out), np.asarray(images), atol=1e-4)


def test_warp_by_90_degrees_is_rot90():
  image = natural_image((16, 16, 3))
  out = _warp(jnp.asarray(image, jnp.float32), 90.0, 1.0, 0.0, 0.0)
  np.testing.assert_allclose(np.asarray(out), np.rot90(image), atol=1e-3)


def test_warp_shift_borders_are_reflect_101():
  image = natural_image((12, 10, 3))
  # Content moves 3 right and 2 up: out[i, j] = in[i + 2, j - 3], reflected without repeating
  # the edge pixel (OpenCV BORDER_REFLECT_101 = numpy.pad 'reflect').
  out = _warp(jnp.asarray(image, jnp.float32), 0.0, 1.0, 3 / 10, -2 / 12)
  padded = np.pad(image, ((4, 4), (4, 4), (0, 0)), mode='reflect')
  np.testing.assert_allclose(np.asarray(out), padded[6:18, 1:11], atol=1e-3)


def test_hue_saturation_value_on_gray_shifts_the_value_only():
  image = jnp.asarray(np.random.default_rng(0).uniform(50, 200, (28, 28, 1)), jnp.float32)
  out = jax.jit(functools.partial(augment.hue_saturation_value, p=1.0))(jax.random.key(3), image)
  shift = np.asarray(out - image)
  assert 0 < np.abs(shift[0, 0, 0]) <= 10
  np.testing.assert_allclose(shift, shift[0, 0, 0], atol=1e-4)


@pytest.mark.slow
def test_albumentations_chain_runs_under_jit():
  image = natural_image((32, 32, 3))
  images = jnp.asarray(np.stack([image] * 8), jnp.float32)
  chain = augment.make_chain(augment.albumentations_resnet_chain())
  out = np.asarray(jax.jit(functools.partial(augment.augment_batch, chain))(_keys(8), images))
  assert out.shape == images.shape and np.all(np.isfinite(out))
  assert out.min() >= 0 and out.max() <= 255
  distinct = {out[i].tobytes() for i in range(8)}
  assert len(distinct) == 8  # the same image, eight keys: eight results


def test_ready_made_chains_are_in_the_notebooks_order():
  assert list(augment.albumentations_resnet_chain().keys()) == [
    'flip_left_right',
    'random_contrast',
    'random_gamma',
    'random_brightness',
    'hue_saturation_value',
    'clahe',
    'shift_scale_rotate',
  ]
  assert list(augment.keras_cifar_shift_flip().keys()) == ['random_shift', 'flip_left_right']
  assert list(augment.clahe_only().keys()) == ['clahe']


def test_chain_applies_a_config_dicts_ops_in_insertion_order():
  # A default ConfigDict lists its keys sorted (clahe first); the chain must not reorder.
  ordered = {'random_brightness': {'p': 1.0}, 'clahe': {'p': 1.0}}
  config = copy.deepcopy(ml_collections.ConfigDict(ordered))
  reversed_order = dict(reversed(ordered.items()))
  image = _batch((32, 32, 3), n=1)[0]
  run = lambda chain_config: np.asarray(
    jax.jit(augment.make_chain(chain_config))(jax.random.key(1), image)
  )
  np.testing.assert_array_equal(run(config), run(ordered))
  assert not np.array_equal(run(config), run(reversed_order))


@pytest.mark.parametrize('chain_config', [ml_collections.ConfigDict(), {}, None])
def test_empty_chain_is_the_identity(chain_config):
  image = _batch((8, 8, 1), n=1)[0]
  out = augment.make_chain(chain_config)(jax.random.key(0), image)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(image))


def test_chain_config_that_is_not_a_mapping_raises_config_error():
  with pytest.raises(ConfigError, match='^an augmentation chain is a mapping of op name to params'):
    augment.make_chain(['clahe'])


@pytest.mark.parametrize(
  ('chain_config', 'message'),
  [
    ({'blur': {}}, "unknown augmentation 'blur'; choose one of clahe, flip_left_right, "),
    ({'clahe': {'clip': 2}}, "unknown parameter 'clip' of augmentation 'clahe'; choose one of "),
    ({'random_gamma': {'p': 1.5}}, "augmentation 'random_gamma' has p=1.5; choose a probability"),
    ({'random_gamma': {'p': -0.1}}, "augmentation 'random_gamma' has p=-0.1; choose"),
    ({'random_shift': {'fill': 'wrap'}}, "has fill='wrap'; choose one of nearest, reflect"),
  ],
)
def test_bad_chain_config_raises_one_line_config_error(chain_config, message):
  with pytest.raises(ConfigError) as error:
    augment.make_chain(ml_collections.ConfigDict(chain_config))
  assert message in str(error.value)
  assert '\n' not in str(error.value)


def test_unknown_parameter_error_lists_the_allowed_ones():
  with pytest.raises(ConfigError, match=r'choose one of clip_limit, p, tile_grid_size$'):
    augment.make_chain({'clahe': {'clip': 2}})
