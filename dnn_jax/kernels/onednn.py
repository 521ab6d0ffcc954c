"""oneDNN's convolutions in JAX through jax.ffi, where this CPU has fast kernels for them.

oneDNN runs its AMX / AVX-512-BF16 / AVX2 convolution kernels on the XLA CPU backend's
buffers (NHWC, HWIO) with no activation reorders. The library is optional: build it with
`python -m dnn_jax.kernels.build`; callers check available(dtype) and fall back to XLA.
"""

import ctypes
import functools
import threading

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from dnn_jax.kernels import build
from dnn_jax.models import conv_kernels

# FFI target name -> symbol in the library (one per pass of a training step).
TARGETS = {
  'dnn_jax_onednn_conv_forward': 'DnnJaxOnednnConvForward',
  'dnn_jax_onednn_conv_backward_data': 'DnnJaxOnednnConvBackwardData',
  'dnn_jax_onednn_conv_backward_weights': 'DnnJaxOnednnConvBackwardWeights',
}
PASSES = ('forward', 'backward data', 'backward weights')  # DnnJaxOnednnImplInfo's directions
DTYPES = ('float32', 'bfloat16')
# Convolutions that must all get a fast kernel for available(): a 3x3 'same' and a strided
# 1x1, as in the ResNets; [n, h, w, c, kh, kw, f, stride, lo_h, hi_h, lo_w, hi_w].
PROBES = ((8, 16, 16, 32, 3, 3, 32, 1, 1, 1, 1, 1), (8, 16, 16, 32, 1, 1, 64, 2, 0, 0, 0, 0))
_REBUILD = 'run python -m dnn_jax.kernels.build'

_lock = threading.Lock()
_loaded = None  # (library or None, why not): set once by _library()


def _load(path) -> tuple[ctypes.CDLL | None, str]:
  """Loads the library at path and registers its FFI targets; or None and one line why not."""
  if not path.exists():
    return None, f'the oneDNN kernels are not built ({path} is missing): {_REBUILD}'
  if path.stat().st_mtime < build.SOURCE.stat().st_mtime:
    return None, f'the oneDNN kernels are older than {build.SOURCE.name}: {_REBUILD}'
  try:
    lib = ctypes.CDLL(str(path))
  except OSError as e:  # e.g. libdnnl.so.3 uninstalled since the build
    return None, f'cannot load {path.name} ({e}): pip install {build.WHEELS}, then {_REBUILD}'
  lib.DnnJaxOnednnCpuIsa.restype = ctypes.c_char_p
  lib.DnnJaxOnednnVersion.restype = ctypes.c_char_p
  lib.DnnJaxOnednnImplInfo.argtypes = [
    ctypes.c_int64, ctypes.c_int64, ctypes.POINTER(ctypes.c_int64), ctypes.c_char_p,
    ctypes.c_size_t,
  ]  # fmt: skip
  for name, symbol in TARGETS.items():
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, symbol)), platform='cpu')
  return lib, ''


def _library() -> tuple[ctypes.CDLL | None, str]:
  """The library, loaded and registered once per process (tests replace this function)."""
  global _loaded
  with _lock:
    if _loaded is None:
      _loaded = _load(build.LIBRARY)
    return _loaded


def cpu_isa() -> str:
  """The instruction set oneDNN uses on this CPU (e.g. 'avx2', 'avx512_core_amx'), or ''."""
  lib, _ = _library()
  return lib.DnnJaxOnednnCpuIsa().decode() if lib is not None else ''


def impl_info(dims, dtype) -> tuple[str, str, str]:
  """The kernel oneDNN picks for each pass of a convolution (e.g. 'brgconv:avx2').

  dims: n, h, w, c, kh, kw, f, stride, lo_h, hi_h, lo_w, hi_w. A pass oneDNN cannot run
  gives its error message instead. The primitives are cached for the calls that follow.
  """
  lib, why = _library()
  if lib is None:
    raise RuntimeError(why)
  array = (ctypes.c_int64 * 12)(*dims)
  infos = []
  for direction in range(len(PASSES)):
    out = ctypes.create_string_buffer(512)
    lib.DnnJaxOnednnImplInfo(direction, int(jnp.dtype(dtype) == jnp.bfloat16), array, out, 512)
    infos.append(out.value.decode())
  return tuple(infos)


@functools.cache
def _slow_reason(dtype_name: str) -> str:
  """Why oneDNN's kernels for this dtype are not worth using on this CPU, or ''."""
  lib, _ = _library()
  where = f'oneDNN {lib.DnnJaxOnednnVersion().decode()} on this CPU ({cpu_isa()})'
  for dims in PROBES:
    for pass_name, impl in zip(PASSES, impl_info(dims, dtype_name), strict=True):
      if ' ' in impl:  # an error message: no kernel at all (bfloat16 below AVX-512, say)
        return f'{where} has no {dtype_name} convolution: {impl}'
      if 'ref' in impl:  # 'ref:any', 'gemm:ref': reference loops, slower than XLA's
        return f'{where} has only a reference {dtype_name} convolution {pass_name} ({impl})'
  return ''


def why_unavailable(dtype) -> str:
  """One line saying why conv() is not used for dtype here, or '' when it is available."""
  name = jnp.dtype(dtype).name
  if name not in DTYPES:
    return f'oneDNN convolutions take float32 or bfloat16, not {name}'
  backend = jax.default_backend()
  if backend != 'cpu':
    return f'oneDNN convolutions run on the CPU backend, and this one is {backend}'
  lib, why = _library()
  return why if lib is None else _slow_reason(name)


def available(dtype) -> bool:
  """Whether conv() runs oneDNN's fast kernels for dtype here (library, CPU backend, ISA)."""
  why = why_unavailable(dtype)
  if why:
    _warn_once(why)
  return not why


def preferred(dtype) -> bool:
  """Whether Conv2D's 'auto' takes oneDNN: available, and AVX-512 or AMX kernels here.

  On AVX2 (AMD EPYC Zen 3) oneDNN trained ResNet-20 and mnist_cnn only slightly faster than
  XLA with forward_convs, with slower evaluation and more memory: not enough to switch there.
  oneDNN's AVX-512, AVX-512-BF16 and AMX kernels are its fastest, and XLA:CPU's bfloat16
  matmuls on AMX measured far slower than oneDNN's.
  """
  return not why_unavailable(dtype) and cpu_isa().startswith('avx512')


@functools.cache
def _warn_once(why: str) -> None:
  logging.warning("dnn_jax uses XLA's convolutions, not oneDNN's: %s", why)


def _pads(x_shape, kernel_shape, strides: int, padding: str):
  if padding not in ('same', 'valid'):
    raise ValueError(f"padding={padding!r}: oneDNN conv takes 'same' or 'valid'")
  (lo_h, hi_h), (lo_w, hi_w) = conv_kernels._conv_pads(
    x_shape[1:3], kernel_shape[:2], strides, padding
  )
  # numpy int64: jax.ffi passes them as the handlers' int64_t attributes
  return {k: np.int64(v) for k, v in dict(lo_h=lo_h, hi_h=hi_h, lo_w=lo_w, hi_w=hi_w).items()}


def _call(target: str, out_shape, out_dtype, a, b, strides: int, pads):
  return jax.ffi.ffi_call(
    target, jax.ShapeDtypeStruct(out_shape, out_dtype), vmap_method='sequential'
  )(a, b, stride=np.int64(strides), **pads)


def conv(x_BxHxWxC, kernel_KxKxCxF, strides: int, padding: str):
  """A convolution on oneDNN's kernels; equals lax.conv_general_dilated with Keras padding.

  NHWC input, HWIO kernel of the input's dtype (float32 or bfloat16; bfloat16 accumulates
  in float32), 'same' or 'valid' padding. Check available(dtype) first.
  """
  if kernel_KxKxCxF.shape[:2] == (1, 1) and strides > 1:
    # A strided 1x1 reads every strides-th pixel (no padding either way): slicing them out
    # and running the stride-1 kernels measured faster than oneDNN's strided ones.
    x_BxHxWxC, strides = x_BxHxWxC[:, ::strides, ::strides], 1
  return _conv(x_BxHxWxC, kernel_KxKxCxF, strides, padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x_BxHxWxC, kernel_KxKxCxF, strides: int, padding: str):
  return _forward(x_BxHxWxC, kernel_KxKxCxF, strides, padding)


def _forward(x_BxHxWxC, kernel_KxKxCxF, strides, padding):
  why = why_unavailable(x_BxHxWxC.dtype)
  if why:
    raise RuntimeError(f"{why}; use Conv2D implementation='xla' instead of 'onednn'")
  if kernel_KxKxCxF.dtype != x_BxHxWxC.dtype:
    raise TypeError(
      f'oneDNN conv: kernel dtype {kernel_KxKxCxF.dtype} differs from input dtype '
      f'{x_BxHxWxC.dtype}; cast both to one'
    )
  pads = _pads(x_BxHxWxC.shape, kernel_KxKxCxF.shape, strides, padding)
  b, h, w, _ = x_BxHxWxC.shape
  k_h, k_w, _, f = kernel_KxKxCxF.shape
  out_h = (h + pads['lo_h'] + pads['hi_h'] - k_h) // strides + 1
  out_w = (w + pads['lo_w'] + pads['hi_w'] - k_w) // strides + 1
  return _call(
    'dnn_jax_onednn_conv_forward', (b, int(out_h), int(out_w), f), x_BxHxWxC.dtype,
    x_BxHxWxC, kernel_KxKxCxF, strides, pads,
  )  # fmt: skip


def _conv_fwd(x_BxHxWxC, kernel_KxKxCxF, strides, padding):
  return _forward(x_BxHxWxC, kernel_KxKxCxF, strides, padding), (x_BxHxWxC, kernel_KxKxCxF)


def _conv_bwd(strides, padding, residuals, g_BxHxWxF):
  x_BxHxWxC, kernel_KxKxCxF = residuals
  g_BxHxWxF = g_BxHxWxF.astype(x_BxHxWxC.dtype)
  pads = _pads(x_BxHxWxC.shape, kernel_KxKxCxF.shape, strides, padding)
  dx = _call(
    'dnn_jax_onednn_conv_backward_data', x_BxHxWxC.shape, x_BxHxWxC.dtype,
    g_BxHxWxF, kernel_KxKxCxF, strides, pads,
  )  # fmt: skip
  # float32 from oneDNN's float32 accumulation, rounded once to the kernel's dtype
  dkernel = _call(
    'dnn_jax_onednn_conv_backward_weights', kernel_KxKxCxF.shape, jnp.float32,
    x_BxHxWxC, g_BxHxWxF, strides, pads,
  )  # fmt: skip
  return dx, dkernel.astype(kernel_KxKxCxF.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)
