"""dnn_jax.kernels: oneDNN's convolutions through jax.ffi, their fallback and their build."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from dnn_jax import parallel, xla_options
from dnn_jax.kernels import build, onednn
from dnn_jax.models import conv_kernels, layers

NHWC = ('NHWC', 'HWIO', 'NHWC')

# Every experiment's convolutions at batch 2: (H, W, C), kernel size, filters, stride, padding.
EXPERIMENT_CONVS = {
  'mnist_cnn-conv32': ((28, 28, 1), 3, 32, 1, 'valid'),
  'mnist_cnn-conv64': ((26, 26, 32), 3, 64, 1, 'valid'),
  'mnist_cnn_deep-conv64b': ((12, 12, 64), 3, 64, 1, 'valid'),
  'mnist_cnn_deep-conv64c': ((10, 10, 64), 3, 64, 1, 'valid'),
  'cifar10_cnn-conv32same': ((32, 32, 3), 3, 32, 1, 'same'),
  'cifar10_cnn-conv32': ((32, 32, 32), 3, 32, 1, 'valid'),
  'cifar10_cnn-conv64same': ((15, 15, 32), 3, 64, 1, 'same'),
  'cifar10_cnn-conv64': ((15, 15, 64), 3, 64, 1, 'valid'),
  'cifar10_resnet110_aug-stem': ((32, 32, 3), 3, 16, 1, 'same'),
  'cifar10_resnet110_aug-s0-1x1in': ((32, 32, 16), 1, 16, 1, 'same'),
  'cifar10_resnet110_aug-s0-3x3': ((32, 32, 16), 3, 16, 1, 'same'),
  'cifar10_resnet110_aug-s0-1x1out': ((32, 32, 16), 1, 64, 1, 'same'),
  'cifar10_resnet110_aug-s0-1x1in-later': ((32, 32, 64), 1, 16, 1, 'same'),
  'cifar10_resnet110_aug-s1-1x1in-stride2': ((32, 32, 64), 1, 64, 2, 'same'),
  'cifar10_resnet110_aug-s1-shortcut-stride2': ((32, 32, 64), 1, 128, 2, 'same'),
  'cifar10_resnet110_aug-s1-3x3': ((16, 16, 64), 3, 64, 1, 'same'),
  'cifar10_resnet110_aug-s1-1x1out': ((16, 16, 64), 1, 128, 1, 'same'),
  'cifar10_resnet110_aug-s1-1x1in-later': ((16, 16, 128), 1, 64, 1, 'same'),
  'cifar10_resnet110_aug-s2-1x1in-stride2': ((16, 16, 128), 1, 128, 2, 'same'),
  'cifar10_resnet110_aug-s2-shortcut-stride2': ((16, 16, 128), 1, 256, 2, 'same'),
  'cifar10_resnet110_aug-s2-3x3': ((8, 8, 128), 3, 128, 1, 'same'),
  'cifar10_resnet110_aug-s2-1x1out': ((8, 8, 128), 1, 256, 1, 'same'),
  'cifar10_resnet110_aug-s2-1x1in-later': ((8, 8, 256), 1, 128, 1, 'same'),
}
# Shapes no experiment has, where a kernel could go wrong: SAME's odd pixel after (even
# kernels), strides that skip the last rows, strided 1x1s with few channels, odd sizes.
EDGE_CONVS = {
  'even-kernel-same': ((7, 6, 2), 2, 6, 1, 'same'),
  'stride2-valid-drops-a-row': ((8, 8, 2), 3, 6, 2, 'valid'),
  'stride2-same-odd': ((7, 7, 2), 3, 6, 2, 'same'),
  'kernel5-valid': ((9, 11, 2), 5, 6, 1, 'valid'),
  'stride2-1x1-2-channels': ((8, 8, 2), 1, 6, 2, 'same'),
  'stride2-1x1-5-channels': ((16, 16, 5), 1, 16, 2, 'same'),
  'stride2-1x1-valid-odd': ((9, 7, 4), 1, 8, 2, 'valid'),
}
CONVS = {**EXPERIMENT_CONVS, **EDGE_CONVS}


def lax_conv(x, kernel, strides, padding):
  return jax.lax.conv_general_dilated(
    x, kernel, (strides, strides), padding.upper(), dimension_numbers=NHWC
  )


def skip_unless_available(dtype):
  if not onednn.available(dtype):
    pytest.skip(onednn.why_unavailable(dtype))


def assert_close(actual, expected, rtol):
  # atol scaled to the tensor: sums that cancel to ~0 have no meaningful relative error
  expected = np.asarray(expected, np.float32)
  atol = rtol * float(np.abs(expected).max())
  np.testing.assert_allclose(np.asarray(actual, np.float32), expected, rtol=rtol, atol=atol)


def inputs(hwc, k, filters, dtype, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(2, *hwc)), jnp.float32).astype(dtype)
  kernel = rng.normal(size=(k, k, hwc[-1], filters)) / np.sqrt(k * k * hwc[-1])
  return x, jnp.asarray(kernel, jnp.float32).astype(dtype)


@pytest.mark.slow
@pytest.mark.parametrize('dtype, rtol', [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
@pytest.mark.parametrize('name', list(CONVS))
def test_conv_and_its_gradients_equal_lax_conv(name, dtype, rtol):
  skip_unless_available(dtype)
  hwc, k, filters, strides, padding = CONVS[name]
  x, kernel = inputs(hwc, k, filters, dtype)
  y, vjp = jax.vjp(lambda x, k: onednn.conv(x, k, strides, padding), x, kernel)
  g = jnp.asarray(np.random.default_rng(1).normal(size=y.shape), jnp.float32).astype(dtype)
  dx, dkernel = vjp(g)
  assert (y.dtype, dx.dtype, dkernel.dtype) == (dtype,) * 3
  # The reference: float32 on the same (for bfloat16, rounded) numbers.
  f32 = lambda a: a.astype(jnp.float32)
  y_ref, vjp_ref = jax.vjp(lambda x, k: lax_conv(x, k, strides, padding), f32(x), f32(kernel))
  dx_ref, dkernel_ref = vjp_ref(f32(g))
  assert_close(y, y_ref, rtol)
  assert_close(dx, dx_ref, rtol)
  assert_close(dkernel, dkernel_ref, rtol)


@pytest.mark.parametrize('channels', [1, 2, 3, 5, 16])
def test_strided_1x1_in_the_handlers_equals_lax_conv(channels):
  # conv() slices strided 1x1s to stride 1; the handlers take them too, and oneDNN's jit_1x1
  # weights gradient is wrong there with fewer channels than its block (oneDNN issue #6035).
  skip_unless_available(jnp.float32)
  x, kernel = inputs((16, 16, channels), 1, 8, jnp.float32)
  y, vjp = jax.vjp(lambda x, k: onednn._conv(x, k, 2, 'same'), x, kernel)
  y_ref, vjp_ref = jax.vjp(lambda x, k: lax_conv(x, k, 2, 'same'), x, kernel)
  g = jnp.asarray(np.random.default_rng(1).normal(size=y.shape), jnp.float32)
  for a, b in zip((y, *vjp(g)), (y_ref, *vjp_ref(g)), strict=True):
    assert_close(a, b, 1e-5)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_experiment_convs_get_fast_kernels(dtype):
  # A reference kernel in any pass would make 'onednn' slower than XLA for that layer.
  skip_unless_available(dtype)
  slow = {}
  for name, (hwc, k, filters, strides, padding) in EXPERIMENT_CONVS.items():
    if k == 1 and strides > 1:  # conv() runs these as stride-1 1x1s on every other pixel
      hwc, strides = (-(-hwc[0] // strides), -(-hwc[1] // strides), hwc[2]), 1
    (lo_h, hi_h), (lo_w, hi_w) = conv_kernels._conv_pads(hwc[:2], (k, k), strides, padding)
    dims = (128, *hwc, k, k, filters, strides, lo_h, hi_h, lo_w, hi_w)
    infos = onednn.impl_info(dims, dtype)
    if any('ref' in info or ' ' in info for info in infos):
      slow[name] = infos
  assert not slow, f'oneDNN reference kernels (slow) for {slow}'


def train_steps(conv_fn, num_devices):
  """Three SGD steps of sum(sin(conv)) in a lax.scan, data parallel, as dnn_jax trains."""

  def per_device(kernel, x_SxBx):
    def step(kernel, x):
      loss = lambda k: jnp.sum(jnp.sin(conv_fn(x, k)))
      grad = jax.lax.psum(jax.grad(loss)(kernel), parallel.DATA_AXIS)
      return kernel - 0.01 * grad, jax.lax.psum(loss(kernel), parallel.DATA_AXIS)

    return jax.lax.scan(step, kernel, x_SxBx)

  fn = parallel.data_parallel(
    per_device, parallel.make_mesh(num_devices), in_specs=(P(), P(None, parallel.DATA_AXIS)),
    out_specs=(P(), P()),
  )  # fmt: skip
  return xla_options.jit(fn)


def test_training_steps_in_a_scan_on_four_devices_equal_lax_conv():
  # Four devices run the handlers at once, on one cached primitive: scratchpads must not mix.
  skip_unless_available(jnp.float32)
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(3, 8, 16, 16, 16)), jnp.float32)  # 3 steps of batch 8
  kernel = jnp.asarray(rng.normal(size=(3, 3, 16, 16)) / 12, jnp.float32)
  ours = train_steps(lambda x, k: onednn.conv(x, k, 1, 'same'), 4)(kernel, x)
  reference = train_steps(lambda x, k: lax_conv(x, k, 1, 'same'), 4)(kernel, x)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference), strict=True):
    assert_close(a, b, 1e-5)


def conv2d_outputs_and_grads(implementation, x, train):
  layer = layers.Conv2D(3, 8, 3, padding='same', implementation=implementation, rngs=nnx.Rngs(0))
  loss = lambda layer, x: jnp.sum(jnp.sin(layer(x, train)))
  grads = nnx.grad(loss, argnums=(0, 1))(layer, x)
  return [layer(x, train), *jax.tree.leaves(grads)]


@pytest.mark.parametrize('training', [True, False])
def test_conv2d_onednn_falls_back_to_xla_when_the_library_is_missing(
  monkeypatch, tmp_path, training
):
  monkeypatch.setattr(onednn, '_library', lambda: onednn._load(tmp_path / 'missing.so'))

  def not_called(*args):
    raise AssertionError('onednn.conv called though oneDNN is unavailable')

  monkeypatch.setattr(onednn, 'conv', not_called)
  x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 8, 8, 3)), jnp.float32)
  train = layers.Train(None, None) if training else None
  fallback = conv2d_outputs_and_grads('onednn', x, train)
  xla = conv2d_outputs_and_grads('xla', x, train)
  for a, b in zip(fallback, xla, strict=True):
    assert_close(a, b, 1e-5)


def test_conv2d_onednn_uses_onednn_where_available(monkeypatch):
  skip_unless_available(jnp.float32)
  calls = []
  conv = onednn.conv
  monkeypatch.setattr(onednn, 'conv', lambda *args: calls.append(args) or conv(*args))
  x = jnp.asarray(np.random.default_rng(5).normal(size=(2, 8, 8, 3)), jnp.float32)
  ours = conv2d_outputs_and_grads('onednn', x, layers.Train(None, None))
  assert calls, "Conv2D(implementation='onednn') did not call onednn.conv"
  for a, b in zip(ours, conv2d_outputs_and_grads('xla', x, None), strict=True):
    assert_close(a, b, 1e-5)


def test_why_unavailable_names_the_missing_library_and_the_fix(monkeypatch, tmp_path):
  monkeypatch.setattr(onednn, '_library', lambda: onednn._load(tmp_path / 'missing.so'))
  why = onednn.why_unavailable(jnp.float32)
  assert 'not built' in why and 'python -m dnn_jax.kernels.build' in why and '\n' not in why
  assert not onednn.available(jnp.float32)
  stale = tmp_path / 'stale.so'
  stale.write_bytes(b'')
  os.utime(stale, (0, 0))  # older than onednn_conv.cc
  monkeypatch.setattr(onednn, '_library', lambda: onednn._load(stale))
  assert 'older than onednn_conv.cc' in onednn.why_unavailable(jnp.float32)
  assert 'float16' in onednn.why_unavailable(jnp.float16)


def test_handler_errors_are_one_clear_line():
  skip_unless_available(jnp.float32)
  x, kernel = inputs((8, 8, 3), 3, 4, jnp.float32)
  pads = dict(lo_h=np.int64(1), hi_h=np.int64(1), lo_w=np.int64(1), hi_w=np.int64(1))
  forward = lambda out_shape: jax.block_until_ready(
    onednn._call('dnn_jax_onednn_conv_forward', out_shape, jnp.float32, x, kernel, 1, pads)
  )
  with pytest.raises(jax.errors.JaxRuntimeError, match='shapes or the stride do not agree'):
    forward((3, 8, 8, 4))  # batch 3 from batch 2
  # Pads that do not give the output's size: oneDNN's own error, with the way around it.
  with pytest.raises(jax.errors.JaxRuntimeError, match="forward failed: .*implementation='xla'"):
    forward((2, 5, 5, 4))


def fake_compiler(tmp_path, script: str) -> str:
  path = tmp_path / 'fake-g++'
  path.write_text(f'#!/bin/sh\n{script}\n')
  path.chmod(0o755)
  return str(path)


def test_build_without_a_compiler_prints_one_line_and_exits_0(monkeypatch, tmp_path, capsys):
  monkeypatch.setenv('CXX', 'dnn-jax-no-such-compiler')
  output = tmp_path / '_build' / 'lib.so'
  assert build.main(['--force', '--output', str(output)]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 1 and 'no C++ compiler' in lines[0] and "XLA's convolutions" in lines[0]
  assert not output.parent.exists() or not list(output.parent.iterdir())


def test_build_without_onednn_names_the_wheels(monkeypatch, tmp_path, capsys):
  monkeypatch.setenv('CXX', fake_compiler(tmp_path, 'exit 0'))
  monkeypatch.setattr(build, 'onednn_prefix', lambda: tmp_path)
  assert build.main(['--force', '--output', str(tmp_path / 'lib.so')]) == 0
  (line,) = capsys.readouterr().out.splitlines()
  assert 'no oneDNN headers' in line and 'onednn-devel-cpu-gomp' in line
  assert not (tmp_path / 'lib.so').exists()


def test_a_failed_build_leaves_nothing_behind(monkeypatch, tmp_path, capsys):
  # The compiler writes half a library, then fails: neither it nor a temp file may remain.
  out_arg = 'for a; do [ "$prev" = -o ] && echo half > "$a"; prev=$a; done; exit 1'
  monkeypatch.setenv('CXX', fake_compiler(tmp_path, out_arg))
  output = tmp_path / '_build' / 'lib.so'
  assert build.main(['--force', '--output', str(output)]) == 1
  assert 'failed' in capsys.readouterr().err
  assert list(output.parent.iterdir()) == []


def test_build_skips_an_up_to_date_library(monkeypatch, tmp_path, capsys):
  monkeypatch.setenv('CXX', 'dnn-jax-no-such-compiler')  # would print 'no C++ compiler'
  output = tmp_path / 'lib.so'
  output.write_bytes(b'built')
  assert build.main(['--output', str(output)]) == 0
  assert 'up to date' in capsys.readouterr().out
  assert output.read_bytes() == b'built'


@pytest.mark.parametrize('isa, takes_onednn', [('avx2', False), ('avx512_core_amx', True)])
def test_conv2d_auto_takes_onednn_only_on_avx512_or_amx(monkeypatch, isa, takes_onednn):
  skip_unless_available(jnp.float32)
  monkeypatch.setattr(onednn, 'cpu_isa', lambda: isa)
  calls = []
  conv = onednn.conv
  monkeypatch.setattr(onednn, 'conv', lambda *args: calls.append(args) or conv(*args))
  x = jnp.asarray(np.random.default_rng(6).normal(size=(2, 8, 8, 3)), jnp.float32)
  ours = conv2d_outputs_and_grads('auto', x, layers.Train(None, None))
  assert bool(calls) == takes_onednn
  for a, b in zip(ours, conv2d_outputs_and_grads('xla', x, None), strict=True):
    assert_close(a, b, 1e-5)


def test_preferred_is_false_where_the_library_is_missing(monkeypatch, tmp_path):
  monkeypatch.setattr(onednn, '_library', lambda: onednn._load(tmp_path / 'missing.so'))
  monkeypatch.setattr(onednn, 'cpu_isa', lambda: 'avx512_core_amx')
  assert not onednn.preferred(jnp.float32)
