"""dnn_jax.xla_options: CPU convolutions compile to XLA's Eigen kernels, not YNNPACK's."""

import jax
import jax.numpy as jnp

from dnn_jax import xla_options
from dnn_jax.models import conv_kernels


def _library_convolutions(compiler_options) -> int:
  """How many of a conv layer's training convolutions XLA hands to YNNPACK."""
  # cifar10_cnn's second conv: XLA hands only convolutions this large to YNNPACK
  x, kernel = jnp.ones((16, 32, 32, 32)), jnp.ones((3, 3, 32, 32))
  loss = lambda x, k: jnp.sum(conv_kernels.conv_as_forward_convs(x, k, 'same') ** 2)
  step = jax.jit(jax.grad(loss, argnums=(0, 1)), compiler_options=compiler_options)
  hlo = step.lower(x, kernel).compile().as_text()
  return sum('__ynn_fusion' in line and 'conv_general_dilated' in line for line in hlo.splitlines())


def test_options_move_convolutions_off_ynnpack():
  # Fails if XLA's default stops using YNNPACK for convolutions (the option is then moot) or
  # if the option stops taking effect.
  assert _library_convolutions(None) > 0
  assert _library_convolutions(xla_options.compiler_options()) == 0


def test_users_own_xla_flags_setting_wins(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_experimental_ynn_fusion_type=-individual_dot')
  assert xla_options.compiler_options.__wrapped__() == {}


def test_an_option_xla_rejects_is_dropped_with_a_warning(monkeypatch, caplog):
  monkeypatch.setattr(
    xla_options, 'CPU_OPTIONS', {'xla_cpu_experimental_ynn_fusion_type': 'NOT_A_FUSION_TYPE'}
  )
  assert xla_options.compiler_options.__wrapped__() == {}
  assert 'compiling without them' in caplog.text
