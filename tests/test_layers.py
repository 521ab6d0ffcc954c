"""dnn_jax.models.layers and conv_kernels: dropout keys, convolutions, pooling, BatchNorm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from dnn_jax import parallel, xla_options
from dnn_jax.models import conv_kernels, layers


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(layers.INITIALIZERS))
def test_compiled_initializers_draw_the_same_bits_as_flax_uncompiled(name):
  flax_initializer = {
    'glorot_uniform': nnx.initializers.glorot_uniform(),
    'he_normal': nnx.initializers.he_normal(),
  }[name]
  key = jax.random.key(3)
  for shape in [(3, 3, 4, 8), (20, 10)]:  # a convolution kernel, a dense one
    # Called outside jit, flax's initializer runs as jax.random's own compiled pieces.
    np.testing.assert_array_equal(
      layers.INITIALIZERS[name](key, shape, jnp.float32), flax_initializer(key, shape, jnp.float32)
    )


def test_dropout_rate_scale_and_keys():
  dropout = layers.Dropout(0.25, salt=0)
  x = jnp.ones((64, 512))
  keys = jax.random.split(jax.random.key(0), 64)
  y = np.asarray(dropout(x, layers.Train(keys, jnp.ones(64, bool))))
  np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.75], rtol=1e-6)
  assert (y == 0).mean() == pytest.approx(0.25, abs=0.01)
  np.testing.assert_array_equal(dropout(x, layers.Train(keys, None)), y)  # same keys, same mask
  # An example's mask depends on its own key only, not on its batch or position.
  np.testing.assert_array_equal(dropout(x[:8], layers.Train(keys[10:18], None)), y[10:18])
  assert not np.array_equal(layers.Dropout(0.25, salt=1)(x, layers.Train(keys, None)), y)
  np.testing.assert_array_equal(dropout(x), x)  # no keys: evaluation


@pytest.mark.parametrize('keep', [0.5, 0.8, 0.95])
def test_keep_masks_are_bernoulli_and_uncorrelated(keep):
  # The hash-based masks must look like independent Bernoulli(keep) draws: the right mean,
  # and no correlation between neighbouring units, neighbouring examples or two layers.
  keys = jax.random.split(jax.random.key(3), 4096)
  masks = np.asarray(layers.keep_masks(keys, 0, (512,), keep), np.float64)
  other_layer = np.asarray(layers.keep_masks(keys, 1, (512,), keep), np.float64)
  sigma = np.sqrt(keep * (1 - keep) / masks.size)
  assert abs(masks.mean() - keep) < 5 * sigma
  centered = masks - keep
  variance = keep * (1 - keep)
  bound = 5 / np.sqrt(masks.size)  # correlations of independent draws are ~N(0, 1/n)
  for a, b in [
    (centered[:, :-1], centered[:, 1:]),  # unit i and i + 1
    (centered[:-1], centered[1:]),  # example b and b + 1
    (centered, other_layer - keep),  # the same example in two dropout layers
  ]:
    assert abs((a * b).mean() / variance) < bound
  per_unit = masks.mean(0)  # every unit is dropped at the same rate
  assert np.abs(per_unit - keep).max() < 5 * np.sqrt(keep * (1 - keep) / masks.shape[0])


CONV_CASES = [
  (3, 1, 'valid', (2, 9, 9, 3)), (3, 1, 'same', (2, 8, 8, 4)), (1, 2, 'same', (2, 8, 8, 5)),
  (3, 2, 'same', (2, 7, 7, 2)), (1, 1, 'valid', (2, 5, 5, 3)), (3, 2, 'valid', (1, 9, 8, 2)),
  (2, 1, 'same', (2, 7, 6, 2)), (4, 1, 'same', (1, 9, 8, 3)), (5, 1, 'valid', (2, 9, 11, 2)),
]  # fmt: skip
CONVS = {
  'patches': conv_kernels.conv_as_matmul,
  'forward_convs': lambda x, k, strides, padding: conv_kernels.conv_as_forward_convs(x, k, padding),
}


@pytest.mark.slow
@pytest.mark.parametrize('implementation', list(CONVS))
@pytest.mark.parametrize('kernel_size, strides, padding, shape', CONV_CASES)
def test_conv_implementations_equal_xla_conv_and_its_gradient(
  implementation, kernel_size, strides, padding, shape
):
  # Even kernels put SAME's odd pixel after, and strides skip rows: the gradients must follow.
  if implementation == 'forward_convs' and strides > 1:
    pytest.skip('forward_convs is stride-1 only; Conv2D uses patches for strided kernels')
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, shape[-1], 6)), jnp.float32)
  xla = lambda x, k: jax.lax.conv_general_dilated(
    x, k, (strides, strides), padding.upper(), dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )
  ours = lambda x, k: CONVS[implementation](x, k, strides, padding)
  # Compiled as training compiles it: with dnn_jax's XLA options (Eigen convolutions on CPU).
  np.testing.assert_allclose(xla_options.jit(ours)(x, kernel), xla(x, kernel), rtol=1e-5, atol=1e-5)
  loss = lambda conv: lambda x, k: jnp.sum(jnp.sin(conv(x, k)))
  grads_ours = xla_options.jit(jax.grad(loss(ours), argnums=(0, 1)))(x, kernel)
  grads_xla = jax.grad(loss(xla), argnums=(0, 1))(x, kernel)
  for a, b in zip(grads_ours, grads_xla, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('implementation', list(CONVS))
def test_conv_implementations_in_bfloat16_keep_dtypes_and_stay_close(implementation):
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(4, 8, 8, 3)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 3, 5)), jnp.float32)
  weights = jnp.asarray(rng.normal(size=(4, 8, 8, 5)), jnp.float32)  # a linear loss: no chaos

  def loss(dtype):
    def fn(x, k):
      y = CONVS[implementation](x.astype(dtype), k.astype(dtype), 1, 'same')
      assert y.dtype == dtype
      return jnp.sum(y.astype(jnp.float32) * weights)

    return fn

  dx16, dk16 = jax.grad(loss(jnp.bfloat16), argnums=(0, 1))(x, kernel)
  dx32, dk32 = jax.grad(loss(jnp.float32), argnums=(0, 1))(x, kernel)
  np.testing.assert_allclose(dk16, dk32, rtol=0.03, atol=0.03 * float(jnp.abs(dk32).max()))
  np.testing.assert_allclose(dx16, dx32, rtol=0.03, atol=0.03 * float(jnp.abs(dx32).max()))


@pytest.mark.slow
@pytest.mark.parametrize('shape', [(3, 8, 8, 4), (2, 7, 9, 3), (2, 13, 13, 5)])
@pytest.mark.parametrize('ties', [False, True])
@pytest.mark.parametrize('size', [2, 3])
def test_max_pool_equals_reduce_window_and_its_gradient_bitwise(shape, ties, size):
  # Odd sizes drop the remainder; rounded inputs tie often: the gradient must still go to the
  # first maximum of each window, as XLA's select_and_scatter does.
  x = jax.random.normal(jax.random.key(0), shape) * (3 if ties else 1)
  x = jnp.round(x) if ties else x
  xla = lambda x: nnx.max_pool(x, (size, size), strides=(size, size), padding='VALID')
  ours = lambda x: conv_kernels.max_pool(x, size)
  y, vjp_xla = jax.vjp(xla, x)
  g = jax.random.normal(jax.random.key(1), y.shape)
  np.testing.assert_array_equal(ours(x), y)
  np.testing.assert_array_equal(jax.vjp(ours, x)[1](g)[0], vjp_xla(g)[0])


@pytest.mark.parametrize(
  'shape, size', [((3, 8, 8, 4), 2), ((2, 7, 9, 3), 2), ((3, 8, 8, 4), 8), ((128, 8, 8, 64), 8)]
)
@pytest.mark.slow
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_avg_pool_equals_reduce_window_and_its_gradient(shape, dtype, size):
  # (128, 8, 8, 64) with size 8 is ResNet-20's global pool; 7x9 drops a remainder.
  x = jax.random.normal(jax.random.key(0), shape).astype(dtype)
  xla = lambda x: nnx.avg_pool(x, (size, size), strides=(size, size), padding='VALID')
  ours = lambda x: conv_kernels.avg_pool(x, size)
  y, vjp_xla = jax.vjp(xla, x)
  g = jax.random.normal(jax.random.key(1), y.shape).astype(dtype)
  tol = dict(rtol=1e-6, atol=1e-6) if dtype == jnp.float32 else dict(rtol=1e-2, atol=1e-2)
  y_ours, vjp_ours = jax.vjp(ours, x)
  assert y_ours.dtype == y.dtype
  np.testing.assert_allclose(np.float32(y_ours), np.float32(y), **tol)
  np.testing.assert_allclose(np.float32(vjp_ours(g)[0]), np.float32(vjp_xla(g)[0]), **tol)


@pytest.mark.slow
@pytest.mark.parametrize('shape', [(6, 5), (4, 3, 7, 5), (3, 2, 4, 6, 5)])
def test_channel_sums_equal_a_weighted_sum_over_all_but_the_last_axis(shape):
  x = jax.random.normal(jax.random.key(0), shape)
  weight = jnp.arange(shape[0], dtype=jnp.float32) % 3
  expected = jnp.sum(x * weight.reshape((-1,) + (1,) * (x.ndim - 1)), tuple(range(x.ndim - 1)))
  np.testing.assert_allclose(layers.channel_sums(x, weight), expected, rtol=1e-5, atol=1e-5)
  # Against float64: float32 sums in another order differ by ~1e-6 (absolute) near zero.
  exact = np.float64(x).sum(tuple(range(x.ndim - 1)))
  np.testing.assert_allclose(layers.channel_sums(x), exact, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_add_bias_equals_float32_autodiff_of_the_plain_form(dtype):
  # Against float32: XLA's own bfloat16 bias gradient sums in bfloat16, ours in float32.
  x = jax.random.normal(jax.random.key(0), (4, 6, 5, 8)).astype(dtype)
  bias = jax.random.normal(jax.random.key(1), (8,)).astype(dtype)
  g = jax.random.normal(jax.random.key(2), x.shape).astype(dtype)
  f32 = lambda *a: [np.float32(v) for v in a]
  y, vjp_plain = jax.vjp(lambda x, b: x + b, *(jnp.float32(v) for v in (x, bias)))
  y_ours, vjp_ours = jax.vjp(layers.add_bias, x, bias)
  grads = vjp_ours(g)
  assert y_ours.dtype == dtype and [v.dtype for v in grads] == [dtype, dtype]
  tol = (
    1e-5 if dtype == jnp.float32 else 1e-2
  )  # float32 summation order; bfloat16's rounding of the result
  np.testing.assert_allclose(*f32(y_ours, y), rtol=tol, atol=tol)
  for ours, expected in zip(grads, vjp_plain(jnp.float32(g)), strict=True):
    np.testing.assert_allclose(*f32(ours, expected), rtol=tol, atol=tol)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_scale_and_shift_gradients_equal_autodiff_of_the_plain_form(dtype):
  x = jax.random.normal(jax.random.key(0), (4, 6, 5, 8)).astype(dtype)
  scale, shift = jax.random.normal(jax.random.key(1), (2, 8))
  g = jax.random.normal(jax.random.key(2), x.shape).astype(dtype)
  plain = lambda x, a, b: (x * a + b).astype(x.dtype)
  y, vjp_plain = jax.vjp(plain, x, scale, shift)
  y_ours, vjp_ours = jax.vjp(layers.scale_and_shift, x, scale, shift)
  assert y_ours.dtype == dtype
  np.testing.assert_array_equal(np.float32(y_ours), np.float32(y))
  tol = 1e-5 if dtype == jnp.float32 else 2e-2
  for ours, expected in zip(vjp_ours(g), vjp_plain(g), strict=True):
    assert ours.dtype == expected.dtype
    np.testing.assert_allclose(np.float32(ours), np.float32(expected), rtol=tol, atol=tol)


def batch_norm_step(x, mask=None, num_devices=1):
  """One training call of a fresh BatchNormalization, data parallel over num_devices."""
  graphdef, variables = nnx.split(layers.BatchNormalization(x.shape[-1]))
  mask = jnp.ones(x.shape[0], bool) if mask is None else mask
  mesh = parallel.make_mesh(num_devices)

  def per_device(variables, x, mask):
    bn = nnx.merge(graphdef, variables)  # as the train step does: no mutation across traces
    y = bn(x, layers.Train(None, mask, parallel.DATA_AXIS))
    return y, bn.moving_mean[...], bn.moving_variance[...]

  fn = parallel.data_parallel(
    per_device, mesh, in_specs=(P(), P(parallel.DATA_AXIS), P(parallel.DATA_AXIS)),
    out_specs=(P(parallel.DATA_AXIS), P(), P()),
  )  # fmt: skip
  return jax.jit(fn)(variables, x, mask)


def test_batch_norm_training_equals_keras():
  keras = pytest.importorskip('keras')
  x = np.random.default_rng(0).normal(2.0, 3.0, (16, 5, 5, 4)).astype(np.float32)
  y, mean, variance = batch_norm_step(jnp.asarray(x))
  theirs = keras.layers.BatchNormalization()  # momentum 0.99, epsilon 1e-3
  expected = np.asarray(theirs(x, training=True))
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(mean, np.asarray(theirs.moving_mean), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(variance, np.asarray(theirs.moving_variance), rtol=1e-5)


def test_batch_norm_evaluation_uses_the_moving_statistics():
  bn = layers.BatchNormalization(3, epsilon=0.0)
  bn.moving_mean[...] = jnp.array([1.0, 2.0, 3.0])
  bn.moving_variance[...] = jnp.array([4.0, 1.0, 0.25])
  y = bn(jnp.array([[3.0, 3.0, 3.0]]))
  np.testing.assert_allclose(y, [[1.0, 1.0, 0.0]], atol=1e-6)


def test_batch_norm_statistics_on_four_devices_equal_one():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(16, 3, 3, 8)), jnp.float32)
  one, four = batch_norm_step(x, num_devices=1), batch_norm_step(x, num_devices=4)
  for a, b in zip(one, four, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_batch_norm_ignores_padding_even_a_wholly_padded_device():
  x = jnp.asarray(np.random.default_rng(2).normal(size=(16, 2, 2, 3)), jnp.float32)
  mask = jnp.arange(16) < 11  # the last device (rows 12..15) holds padding only
  padded = batch_norm_step(x.at[11:].set(1e3), mask, num_devices=4)
  valid = batch_norm_step(x[:11], num_devices=1)
  np.testing.assert_allclose(padded[0][:11], valid[0], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(padded[1], valid[1], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(padded[2], valid[2], rtol=1e-5)
