"""Keras-named layers as Flax NNX modules, with Keras initializers and defaults.

Every layer is called as `layer(x, train)`: `train` is a `Train` context in training and
None in evaluation, so one graph serves both and no module attribute flips between modes.
"""

import contextlib
import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dnn_jax.errors import ConfigError
from dnn_jax.kernels import onednn
from dnn_jax.models import conv_kernels

ACTIVATIONS = {
  'relu': jax.nn.relu,
  'elu': jax.nn.elu,
  'gelu': jax.nn.gelu,
  'sigmoid': jax.nn.sigmoid,
  'tanh': jnp.tanh,
  'linear': lambda x: x,
}

# Keras's initializer names, each compiled once per (shape, dtype): run op by op, an initializer
# compiles a dozen one-op programs for every new shape, most of a model's build time. The same
# bits either way (tests/test_layers.py).
INITIALIZERS = {
  name: jax.jit(initializer, static_argnums=(1, 2))
  for name, initializer in {
    'glorot_uniform': nnx.initializers.glorot_uniform(),
    'he_normal': nnx.initializers.he_normal(),  # truncated normal, scale 2 / fan_in, as Keras
  }.items()
}
zeros = nnx.initializers.zeros_init()


@dataclasses.dataclass(frozen=True)
class Train:
  """What layers need while training; evaluation passes None instead."""

  keys_B: jax.Array  # one PRNG key per example: dropout masks independent of device count
  mask_B: jax.Array  # False for batch padding, which BatchNorm statistics must not see
  axis_name: str | None = None  # device axis over which BatchNorm statistics are summed


class Dense(nnx.Module):
  """Keras Dense: x @ kernel + bias, then the activation."""

  def __init__(
    self, in_features: int, features: int, activation: str = 'linear', *,
    kernel_init: str = 'glorot_uniform', rngs: nnx.Rngs,
  ):  # fmt: skip
    self.linear = nnx.Linear(
      in_features, features, kernel_init=INITIALIZERS[kernel_init], bias_init=zeros, rngs=rngs
    )
    self.activation = activation

  def __call__(self, x_BxD, train: Train | None = None):
    return ACTIVATIONS[self.activation](self.linear(x_BxD))


CONV_IMPLEMENTATIONS = ('auto', 'forward_convs', 'onednn', 'patches', 'xla')


class Conv2D(nnx.Module):
  """Keras Conv2D (NHWC): 'valid' or 'same' padding, optional L2 penalty on the kernel.

  implementation: 'xla' (lax.conv and the gradients JAX derives), 'patches' (conv_as_matmul),
  'forward_convs' (conv_as_forward_convs for stride-1 kernels larger than 1x1, patches for the
  rest), 'onednn' (oneDNN's kernels via jax.ffi where dnn_jax.kernels.onednn.available(dtype),
  else as 'auto') or 'auto': oneDNN where onednn.preferred(dtype) (AVX-512 or AMX CPUs, library
  built), else forward_convs when training on a CPU, where the gradients JAX derives are slow,
  and XLA's convolution otherwise.
  """

  def __init__(
    self, in_features: int, features: int, kernel_size: int = 3, *, strides: int = 1,
    padding: str = 'valid', activation: str = 'linear', use_bias: bool = True,
    kernel_init: str = 'glorot_uniform', l2: float = 0.0, implementation: str = 'auto',
    rngs: nnx.Rngs,
  ):  # fmt: skip
    if implementation not in CONV_IMPLEMENTATIONS:
      choices = ', '.join(CONV_IMPLEMENTATIONS)
      raise ConfigError(f'unknown conv implementation {implementation!r}; choose one of {choices}')
    self.conv = nnx.Conv(
      in_features, features, (kernel_size, kernel_size), strides=(strides, strides),
      padding=padding.upper(), use_bias=use_bias, kernel_init=INITIALIZERS[kernel_init],
      bias_init=zeros, rngs=rngs,
    )  # fmt: skip
    self.strides = strides
    self.padding = padding
    self.activation = activation
    self.l2 = l2  # Keras kernel_regularizer=l2(l2): see loss_penalty
    self.implementation = implementation

  def __call__(self, x_BxHxWxC, train: Train | None = None):
    implementation = self.implementation
    if implementation == 'onednn' and not onednn.available(x_BxHxWxC.dtype):
      implementation = 'auto'  # not built, not a CPU, or no fast kernel for the dtype here
    elif implementation == 'auto' and onednn.preferred(x_BxHxWxC.dtype):
      implementation = 'onednn'
    if implementation == 'auto':
      on_cpu = jax.default_backend() == 'cpu'
      implementation = 'forward_convs' if on_cpu and train is not None else 'xla'
    if implementation == 'xla':
      return ACTIVATIONS[self.activation](self.conv(x_BxHxWxC))
    kernel = self.conv.kernel[...]
    if implementation == 'onednn':
      y = onednn.conv(x_BxHxWxC, kernel, self.strides, self.padding)
    # 1x1 and strided kernels: patches (a 1x1's are a plain matmul; measured faster)
    elif implementation == 'forward_convs' and self.strides == 1 and kernel.shape[0] > 1:
      y = conv_kernels.conv_as_forward_convs(x_BxHxWxC, kernel, self.padding)
    else:
      y = conv_kernels.conv_as_matmul(x_BxHxWxC, kernel, self.strides, self.padding)
    if self.conv.bias is not None:
      y = add_bias(y, self.conv.bias[...])
    return ACTIVATIONS[self.activation](y)

  def loss_penalty(self) -> jax.Array | None:
    """Keras kernel_regularizer=l2(l2): l2 * sum(kernel ** 2), or None without one."""
    return self.l2 * jnp.sum(jnp.square(self.conv.kernel[...])) if self.l2 else None


class MaxPooling2D(nnx.Module):
  """Keras MaxPooling2D: non-overlapping windows, 'valid' (the remainder is dropped)."""

  def __init__(self, pool_size: int = 2):
    self.pool_size = pool_size

  def __call__(self, x_BxHxWxC, train: Train | None = None):
    return conv_kernels.max_pool(x_BxHxWxC, self.pool_size)


class AveragePooling2D(nnx.Module):
  """Keras AveragePooling2D: non-overlapping windows, 'valid'."""

  def __init__(self, pool_size: int):
    self.pool_size = pool_size

  def __call__(self, x_BxHxWxC, train: Train | None = None):
    return conv_kernels.avg_pool(x_BxHxWxC, self.pool_size)


class BatchNormalization(nnx.Module):
  """Keras BatchNormalization (momentum 0.99, epsilon 1e-3) over the last axis.

  Training statistics are sums over the valid (unmasked) examples of every device, so a
  padded last batch and the device count do not change them.
  """

  def __init__(self, features: int, *, momentum: float = 0.99, epsilon: float = 1e-3):
    self.gamma = nnx.Param(jnp.ones([features], jnp.float32))
    self.beta = nnx.Param(jnp.zeros([features], jnp.float32))
    self.moving_mean = nnx.BatchStat(jnp.zeros([features], jnp.float32))
    self.moving_variance = nnx.BatchStat(jnp.ones([features], jnp.float32))
    self.momentum = momentum
    self.epsilon = epsilon

  def __call__(self, x_BxC, train: Train | None = None):
    if train is None:
      mean, variance = self.moving_mean[...], self.moving_variance[...]
    else:
      mean, variance = self._batch_moments(x_BxC, train)
      m = self.momentum
      self.moving_mean[...] = m * self.moving_mean[...] + (1 - m) * mean
      self.moving_variance[...] = m * self.moving_variance[...] + (1 - m) * variance
    scale = jax.lax.rsqrt(variance + self.epsilon) * self.gamma[...]
    # Statistics stay float32; the output keeps the input's dtype (bfloat16 compute).
    return scale_and_shift(x_BxC, scale, self.beta[...] - mean * scale)

  @staticmethod
  def _batch_moments(x_BxC, train: Train):
    x_BxC = x_BxC.astype(jnp.float32)
    sums = jnp.stack(
      [channel_sums(x_BxC, train.mask_B), channel_sums(jnp.square(x_BxC), train.mask_B)]
    )
    count = jnp.sum(train.mask_B.astype(jnp.float32)) * (x_BxC[0].size // x_BxC.shape[-1])
    if train.axis_name is not None:
      sums, count = jax.lax.psum((sums, count), train.axis_name)
    mean, mean_sq = sums / jnp.maximum(count, 1.0)
    return mean, jnp.maximum(mean_sq - jnp.square(mean), 0.0)  # biased, as Keras


def channel_sums(x_BxC, weight_B=None):
  """Float32 sums over every axis but the last, each example weighted by weight_B if given.

  Rows of the last two axes are summed first, then the rows: XLA:CPU splits one reduction
  over B*H*W into a reduce_window that was among the slowest kernels of a bfloat16 ResNet step.
  """
  x_BxC = x_BxC.astype(jnp.float32)
  rows_RxC = x_BxC if x_BxC.ndim == 2 else x_BxC.reshape((-1, *x_BxC.shape[-2:])).sum(1)
  if weight_B is None:
    return rows_RxC.sum(0)
  weight_R = jnp.repeat(weight_B.astype(jnp.float32), rows_RxC.shape[0] // x_BxC.shape[0])
  return weight_R @ rows_RxC


@jax.custom_vjp
def scale_and_shift(x_BxC, scale_C, shift_C):
  """x * scale + shift per channel, in x's dtype; the gradient's channel sums as channel_sums."""
  return (x_BxC * scale_C + shift_C).astype(x_BxC.dtype)


def _scale_and_shift_fwd(x_BxC, scale_C, shift_C):
  return scale_and_shift(x_BxC, scale_C, shift_C), (x_BxC, scale_C)


def _scale_and_shift_bwd(residuals, g_BxC):
  x_BxC, scale_C = residuals
  g32_BxC = g_BxC.astype(jnp.float32)
  dx_BxC = (g32_BxC * scale_C).astype(x_BxC.dtype)
  return dx_BxC, channel_sums(g32_BxC * x_BxC), channel_sums(g32_BxC)


scale_and_shift.defvjp(_scale_and_shift_fwd, _scale_and_shift_bwd)


@jax.custom_vjp
def add_bias(x_BxC, bias_C):
  """x + bias per channel, in x's dtype; the bias gradient sums as channel_sums does."""
  return (x_BxC + bias_C).astype(x_BxC.dtype)


def _add_bias_fwd(x_BxC, bias_C):
  return add_bias(x_BxC, bias_C), bias_C  # only its dtype counts: a [C] vector is cheap


def _add_bias_bwd(bias_C, g_BxC):
  return g_BxC, channel_sums(g_BxC).astype(bias_C.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


class Activation(nnx.Module):
  """Keras Activation layer."""

  def __init__(self, activation: str):
    self.activation = activation

  def __call__(self, x, train: Train | None = None):
    return ACTIVATIONS[self.activation](x)


class KeepProbability(nnx.Variable):
  """A Dropout layer's 1 - rate held in the model state: an input of the compiled program."""


_dropout_counters = []  # one per model being built by numbered_dropouts(), innermost last


@contextlib.contextmanager
def numbered_dropouts():
  """Dropout layers made inside take the salts 0, 1, 2, ... in the order they are made."""
  _dropout_counters.append(itertools.count())
  try:
    yield
  finally:
    _dropout_counters.pop()


class Dropout(nnx.Module):
  """Inverted dropout with one key per example, so masks do not depend on device count.

  The rate is a Python float, a constant of the compiled program, until hold_rate_in_state()
  moves it into the model state: then states stacked over trials and a vmap train trials with
  different rates in one program (dnn_jax.sweep), with the masks the float gives.
  """

  def __init__(self, rate: float, salt: int | None = None):
    if salt is None:
      if not _dropout_counters:
        raise ValueError(
          'Dropout(rate) made outside models.create needs salt=k, unique in its model'
        )
      salt = next(_dropout_counters[-1])
    self.rate = rate
    self.salt = salt  # tells this layer's mask apart from the other dropout layers'
    self.keep = nnx.data(None)  # a KeepProbability once the rate is held in the state

  def hold_rate_in_state(self, rate: float) -> None:
    """Sets the rate as a KeepProbability variable (nnx.split puts it with BatchNorm's stats)."""
    # 1 - rate in float64, then float32: exactly the keep probability the float path computes.
    self.keep = KeepProbability(jnp.asarray(np.float32(1.0 - rate)))
    self.rate = None  # the state's value is the one that counts

  def __call__(self, x_Bx, train: Train | None = None):
    if train is None or (self.keep is None and self.rate == 0.0):
      return x_Bx
    keep = 1.0 - self.rate if self.keep is None else self.keep[...]
    keep_Bx = keep_masks(train.keys_B, self.salt, x_Bx.shape[1:], keep)
    return jnp.where(keep_Bx, x_Bx / keep, 0.0).astype(x_Bx.dtype)


def _fmix32(z):
  """MurmurHash3's 32-bit finalizer: every input bit flips each output bit with p ~ 1/2."""
  z = (z ^ (z >> 16)) * np.uint32(0x85EBCA6B)
  z = (z ^ (z >> 13)) * np.uint32(0xC2B2AE35)
  return z ^ (z >> 16)


def keep_masks(keys_B, salt: int, shape, keep) -> jax.Array:
  """Bernoulli(keep) masks [B, *shape], each a function of its example's key and salt only.

  One threefry word per example (its key folded with salt) seeds a counter-based hash:
  bit i of example b is fmix32(seed_b ^ fmix32(i * golden ratio)), compared with keep at
  24-bit precision. On CPU this measured faster per MLP step than jax.random.bernoulli's
  threefry per element (every element's bits take 20 rounds there, one hash here).
  """
  size = int(np.prod(shape))
  with np.errstate(over='ignore'):  # uint32 wrap-around is the point
    counters = _fmix32(np.arange(size, dtype=np.uint32) * np.uint32(0x9E3779B9))
  seeds_B = jax.vmap(lambda key: jax.random.bits(jax.random.fold_in(key, salt), (), jnp.uint32))(
    keys_B
  )
  bits_BxN = _fmix32(seeds_B[:, None] ^ jnp.asarray(counters)[None, :])
  threshold = (jnp.asarray(keep, jnp.float32) * (1 << 24)).astype(jnp.uint32)
  return ((bits_BxN >> 8) < threshold).reshape(keys_B.shape[0], *shape)


class Flatten(nnx.Module):
  """Keras Flatten: every axis but the batch into one."""

  def __call__(self, x_Bx, train: Train | None = None):
    return x_Bx.reshape(x_Bx.shape[0], -1)


class Residual(nnx.Module):
  """A block computing shortcut(x) + main(x), each a run of the block's layers in order.

  A subclass names the attributes of each run in `main_path` and `shortcut_path` (an empty or
  all-None shortcut is the identity). Its __call__, the diagram (report/diagram.py) and the
  torch twin's weight copy all walk `branches()`, so what is drawn and copied is what runs.
  """

  main_path: tuple[str, ...] = ()
  shortcut_path: tuple[str, ...] = ()

  def branches(self) -> tuple[list, list]:
    """([(name, layer)] of the main path, the same of the shortcut); None attributes left out."""

    def run(names):
      return [(name, getattr(self, name)) for name in names if getattr(self, name) is not None]

    return run(self.main_path), run(self.shortcut_path)

  def __call__(self, x, train: Train | None = None):
    main, shortcut = self.branches()
    y, s = x, x
    for _, layer in main:
      y = layer(y, train)
    for _, layer in shortcut:
      s = layer(s, train)
    return s + y


class Sequential(nnx.Module):
  """Layers applied in order; `layers` is what the Keras-style summary walks."""

  def __init__(self, layers):
    self.layers = nnx.List(layers)

  def __call__(self, x, train: Train | None = None):
    for layer in self.layers:
      x = layer(x, train)
    return x


def total_loss_penalty(model: nnx.Module) -> jax.Array:
  """The sum of what every module's `loss_penalty()` returns (the model contract's item 5)."""
  total = jnp.zeros([], jnp.float32)
  for _, module in nnx.iter_graph(model):
    declared = getattr(module, 'loss_penalty', None)
    term = declared() if callable(declared) else None
    if term is not None:
      total += term
  return total
