"""XLA compiler options for dnn_jax's compiled training and evaluation calls."""

import functools
import os

import jax
from absl import logging

# XLA's CPU default hands dots, reductions and convolutions to YNNPACK. Its convolutions
# measured slower than XLA's Eigen ones on the Keras CNNs' shapes (cifar10_cnn training on
# CPU), so convolutions go back to Eigen; dots and reductions stay.
CPU_OPTIONS = {
  'xla_cpu_experimental_ynn_fusion_type': (
    'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'
  ),
}


@functools.cache
def compiler_options() -> dict[str, str]:
  """Options for jax.jit(..., compiler_options=...): CPU_OPTIONS on CPU, else none.

  A user's own XLA_FLAGS setting of the same option wins. An XLA that no longer knows the
  option gets none, with one warning, rather than failing to compile.
  """
  if jax.default_backend() != 'cpu':
    return {}
  flags = os.environ.get('XLA_FLAGS', '')
  options = {k: v for k, v in CPU_OPTIONS.items() if f'--{k}' not in flags}
  try:
    jax.jit(lambda x: x + 1, compiler_options=options).lower(1.0).compile()
  except jax.errors.JaxRuntimeError as e:
    logging.warning('XLA rejected dnn_jax CPU options %s (%s); compiling without them', options, e)
    return {}
  return options


def jit(fn, **kwargs):
  """jax.jit with compiler_options(): how dnn_jax compiles its training and evaluation."""
  return jax.jit(fn, compiler_options=compiler_options(), **kwargs)
