"""Keras-style model summary: layer (type), output shape and parameter counts.

Usage: python -m dnn_jax.summary --config experiments/mnist_mlp.py [--config.model.x=v]
"""

import re

import jax
import jax.numpy as jnp
from flax import nnx

WIDTHS = (29, 26, 12)


def count(module, variable_filter=...) -> int:
  """How many numbers the module holds in variables matching variable_filter (all by default)."""
  return sum(x.size for x in jax.tree.leaves(nnx.state(module, variable_filter)))


def _snake(name: str) -> str:
  return re.sub(r'(?<!^)(?=[A-Z][a-z])', '_', name).lower()


def rows(model: nnx.Module, input_shape) -> list[tuple[str, str, str, int]]:
  """(keras-style name, type, output shape, parameters and statistics) per top-level layer."""
  layers = list(getattr(model, 'layers', [model]))
  spec = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  seen: dict[str, int] = {}
  table = []
  for layer in layers:
    spec = jax.eval_shape(lambda x, layer=layer: layer(x), spec)
    kind = type(layer).__name__
    base = _snake(kind)
    name = base if base not in seen else f'{base}_{seen[base]}'
    seen[base] = seen.get(base, 0) + 1
    shape = '(None, ' + ', '.join(str(d) for d in spec.shape[1:]) + ')'
    table.append((name, kind, shape, count(layer, ...)))  # Keras counts BN statistics too
  return table


def format_summary(model: nnx.Module, input_shape, title: str = '') -> str:
  """The summary as Keras 2 prints it (the first column widens for long layer names)."""
  table = rows(model, input_shape)
  total = count(model, ...)
  trainable = count(model, nnx.Param)
  widths = (max([WIDTHS[0]] + [len(f' {n} ({k}) ') for n, k, _, _ in table]), *WIDTHS[1:])
  line = '_' * sum(widths)
  out = [f'Model: "{title or _snake(type(model).__name__)}"', line]
  out.append(
    ' ' + 'Layer (type)'.ljust(widths[0] - 1) + 'Output Shape'.ljust(widths[1]) + 'Param #'
  )
  out.append('=' * sum(widths))
  for name, kind, shape, params in table:
    out.append(
      ' ' + f'{name} ({kind})'.ljust(widths[0] - 1) + shape.ljust(widths[1]) + f'{params:,}'
    )
  out.append('=' * sum(widths))
  out.append(f'Total params: {total:,}')
  out.append(f'Trainable params: {trainable:,}')
  out.append(f'Non-trainable params: {total - trainable:,}')
  out.append(line)
  return '\n'.join(out)


def main(argv):
  del argv
  cli.run_reporting_errors(print_summary, FLAGS.config)


def print_summary(config):
  """Prints the summary of the model config describes, for its dataset's input shape."""
  from dnn_jax import configs
  from dnn_jax.data import catalog

  model = configs.create_model(configs.validated(config))
  input_shape = catalog.get(config.data.name).image_shape
  print(format_summary(model, input_shape, title=config.model.name))


if __name__ == '__main__':
  from absl import app, flags
  from ml_collections import config_flags

  from dnn_jax import cli

  FLAGS = flags.FLAGS
  config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=cli.parse_flags)
