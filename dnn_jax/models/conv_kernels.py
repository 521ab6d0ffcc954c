"""CPU-friendly kernels with custom VJPs: convolutions and max pooling, equal to XLA's own.

On CPU, the gradients JAX derives for lax.conv and reduce_window max are slow (and inside a
lax.scan slower still); each function here computes the same numbers a faster way (tests).
"""

import functools

import jax
import jax.numpy as jnp

NHWC = ('NHWC', 'HWIO', 'NHWC')  # lax.conv_general_dilated's dimension_numbers


def _conv_pads(size_hw, kernel_hw, strides: int, padding: str) -> list[tuple[int, int]]:
  """(before, after) padding per spatial axis, as XLA (and Keras) pad: SAME's odd one after."""
  if padding == 'valid':
    return [(0, 0)] * len(kernel_hw)
  pads = []
  for size, k in zip(size_hw, kernel_hw, strict=True):
    total = max((-(-size // strides) - 1) * strides + k - size, 0)
    pads.append((total // 2, total - total // 2))
  return pads


def patches(x_BxHxWxC, kernel_size: int, strides: int, padding: str):
  """im2col as shifted slices: [B, H', W', K * K * C], ordered as a KxKxCxF kernel's rows."""
  k = kernel_size
  pads = _conv_pads(x_BxHxWxC.shape[1:3], (k, k), strides, padding)
  x_BxHxWxC = jnp.pad(x_BxHxWxC, [(0, 0), *pads, (0, 0)])
  h, w = x_BxHxWxC.shape[1:3]
  out_h, out_w = (h - k) // strides + 1, (w - k) // strides + 1
  span_h, span_w = (out_h - 1) * strides + 1, (out_w - 1) * strides + 1
  slices = [
    x_BxHxWxC[:, i : i + span_h : strides, j : j + span_w : strides, :]
    for i in range(k)
    for j in range(k)
  ]
  return slices[0] if k == 1 else jnp.concatenate(slices, axis=-1)


def input_grad_as_conv(g_BxHxWxF, kernel_KxKxCxF, size_hw, padding: str):
  """A stride-1 convolution's input gradient as one forward convolution.

  dx[b, y, x, c] = sum over (i, j, f) of g[b, y + lo - i, x + lo - j, f] kernel[i, j, c, f]:
  the output gradient, padded, convolved with the flipped, transposed kernel.
  """
  kernel_hw = kernel_KxKxCxF.shape[:2]
  pads = _conv_pads(size_hw, kernel_hw, 1, padding)
  full_pads = [(k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(kernel_hw, pads, strict=True)]
  flipped_KxKxFxC = jnp.flip(kernel_KxKxCxF, (0, 1)).transpose(0, 1, 3, 2)
  return jax.lax.conv_general_dilated(
    g_BxHxWxF, flipped_KxKxFxC, (1, 1), full_pads, dimension_numbers=NHWC
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_as_matmul(x_BxHxWxC, kernel_KxKxCxF, strides: int, padding: str):
  """A convolution as shifted slices (im2col) and one matmul; equals lax.conv_general_dilated.

  On CPU, the convolutions JAX derives for lax.conv's gradients are slow (the kernel
  gradient most of all, inside a lax.scan slower still). Here the kernel gradient is one matmul
  with the patches, and the input gradient is a forward convolution, which XLA's CPU backend
  runs fast: measured faster than the transpose of im2col (a matmul with a small inner
  dimension, then adding the 9 shifted slices back).
  """
  k, _, c, f = kernel_KxKxCxF.shape
  patches_BxHxWxP = patches(x_BxHxWxC, k, strides, padding)
  return patches_BxHxWxP @ kernel_KxKxCxF.reshape(k * k * c, f)


def _conv_as_matmul_fwd(x_BxHxWxC, kernel_KxKxCxF, strides, padding):
  k, _, c, f = kernel_KxKxCxF.shape
  patches_BxHxWxP = patches(x_BxHxWxC, k, strides, padding)
  y = patches_BxHxWxP @ kernel_KxKxCxF.reshape(k * k * c, f)
  return y, (x_BxHxWxC, patches_BxHxWxP, kernel_KxKxCxF)


def _conv_as_matmul_bwd(strides, padding, residuals, g_BxHxWxF):
  x_BxHxWxC, patches_BxHxWxP, kernel_KxKxCxF = residuals
  k, _, c, f = kernel_KxKxCxF.shape
  dkernel_PxF = jnp.einsum(
    'bhwp,bhwf->pf', patches_BxHxWxP, g_BxHxWxF, preferred_element_type=jnp.float32
  )
  dkernel = dkernel_PxF.reshape(k, k, c, f).astype(kernel_KxKxCxF.dtype)
  if strides == 1 and k > 1:
    dx = input_grad_as_conv(g_BxHxWxF, kernel_KxKxCxF, x_BxHxWxC.shape[1:3], padding)
  else:  # strided or 1x1: im2col's own transpose is a matmul and a scatter into a strided grid
    dpatches = g_BxHxWxF @ kernel_KxKxCxF.reshape(k * k * c, f).T
    (dx,) = jax.vjp(lambda x: patches(x, k, strides, padding), x_BxHxWxC)[1](dpatches)
  return dx.astype(x_BxHxWxC.dtype), dkernel


conv_as_matmul.defvjp(_conv_as_matmul_fwd, _conv_as_matmul_bwd)


def _conv(x_BxHxWxC, kernel_KxKxCxF, padding: str):
  """lax.conv, stride 1, NHWC and HWIO, with Keras's padding."""
  pads = _conv_pads(x_BxHxWxC.shape[1:3], kernel_KxKxCxF.shape[:2], 1, padding)
  return jax.lax.conv_general_dilated(
    x_BxHxWxC, kernel_KxKxCxF, (1, 1), pads, dimension_numbers=NHWC
  )


def kernel_grad_as_conv(x_BxHxWxC, g_BxHxWxF, kernel_hw, padding: str):
  """A stride-1 convolution's kernel gradient as one forward convolution (NHWC, HWIO).

  dkernel[i, j, c, f] = sum over (b, y, x) of xpad[b, y + i, x + j, c] g[b, y, x, f]: the
  input with channels as its batch and examples as its features, convolved with the output
  gradient as the kernel.
  """
  pads = _conv_pads(x_BxHxWxC.shape[1:3], kernel_hw, 1, padding)
  dkernel_CxKxKxF = jax.lax.conv_general_dilated(
    x_BxHxWxC.transpose(3, 1, 2, 0), g_BxHxWxF.transpose(1, 2, 0, 3), (1, 1), pads,
    dimension_numbers=NHWC, preferred_element_type=jnp.float32,
  )  # fmt: skip
  return dkernel_CxKxKxF.transpose(1, 2, 0, 3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_as_forward_convs(x_BxHxWxC, kernel_KxKxCxF, padding: str):
  """A stride-1 convolution whose three passes are all forward convolutions in XLA's
  canonical NHWC/HWIO form; equals lax.conv_general_dilated.

  XLA's CPU backend runs this form on its Eigen convolution kernels, also inside the training
  loop, where the kernel-gradient convolution JAX derives (non-canonical dimension numbers)
  falls to a much slower generic loop. Needs xla_options.compiler_options() on CPU: YNNPACK's
  convolutions, XLA's default there, measured slower than Eigen's for these shapes.
  """
  return _conv(x_BxHxWxC, kernel_KxKxCxF, padding)


def _forward_convs_fwd(x_BxHxWxC, kernel_KxKxCxF, padding):
  return _conv(x_BxHxWxC, kernel_KxKxCxF, padding), (x_BxHxWxC, kernel_KxKxCxF)


def _forward_convs_bwd(padding, residuals, g_BxHxWxF):
  x_BxHxWxC, kernel_KxKxCxF = residuals
  dkernel = kernel_grad_as_conv(x_BxHxWxC, g_BxHxWxF, kernel_KxKxCxF.shape[:2], padding)
  dx = input_grad_as_conv(g_BxHxWxF, kernel_KxKxCxF, x_BxHxWxC.shape[1:3], padding)
  return dx.astype(x_BxHxWxC.dtype), dkernel.astype(kernel_KxKxCxF.dtype)


conv_as_forward_convs.defvjp(_forward_convs_fwd, _forward_convs_bwd)


def _windows(x_BxHxWxC, size: int):
  """Non-overlapping size x size windows as axes 2 and 4: [B, H/size, size, W/size, size, C]."""
  b, h, w, c = x_BxHxWxC.shape
  h, w = h // size * size, w // size * size  # 'valid': the remainder is dropped
  return x_BxHxWxC[:, :h, :w].reshape(b, h // size, size, w // size, size, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool(x_BxHxWxC, size: int):
  """Max over non-overlapping windows; equals lax.reduce_window max, gradient included.

  XLA's max-pool gradient (select_and_scatter) is slow on CPU: much slower than this reshape
  and a mask, and a large share of the Keras cifar10 CNN's step. Like select_and_scatter, the
  gradient goes to the first maximum of a window in row-major order.
  """
  return jnp.max(_windows(x_BxHxWxC, size), axis=(2, 4))


def _max_pool_fwd(x_BxHxWxC, size):
  y = max_pool(x_BxHxWxC, size)
  return y, (x_BxHxWxC, y)


def _max_pool_bwd(size, residuals, g_BxHxWxC):
  x_BxHxWxC, y = residuals
  win = _windows(x_BxHxWxC, size)
  # The first hit in row-major window order, by a pass over the size * size offsets: a
  # cumsum here lowers to XLA's reduce_window, measured slower in cifar10_cnn.
  taken = jnp.zeros(y.shape, bool)
  rows = []
  for i in range(size):
    row = []
    for j in range(size):
      hit = win[:, :, i, :, j, :] == y
      row.append(jnp.where(hit & ~taken, g_BxHxWxC, 0).astype(x_BxHxWxC.dtype))
      taken = taken | hit
    rows.append(jnp.stack(row, axis=3))  # [B, H/size, W/size, size(j), C]
  b, h, w, c = x_BxHxWxC.shape
  dx = jnp.stack(rows, axis=2).reshape(b, win.shape[1] * size, win.shape[3] * size, c)
  return (jnp.pad(dx, ((0, 0), (0, h - dx.shape[1]), (0, w - dx.shape[2]), (0, 0))),)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def avg_pool(x_BxHxWxC, size: int):
  """Mean over non-overlapping windows; equals lax.reduce_window add / size**2.

  As a reshape and a mean the gradient is a broadcast: XLA's avg-pool gradient is a padded
  reduce_window, in bfloat16 ResNet-20 the slowest kernel of the step (by benchmarks.profile).
  """
  return jnp.mean(_windows(x_BxHxWxC, size), axis=(2, 4), dtype=jnp.float32).astype(x_BxHxWxC.dtype)
