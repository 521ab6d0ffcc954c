"""LR range test: python -m dnn_jax.lr_find --config experiments/X.py [--workdir W].

Trains --num_rates log-spaced learning rates from --min_lr to --max_lr, each from the same
initial weights for --steps steps (0: one epoch), all as one vmapped program; prints a table
and the suggested rate, and writes W/lr_find.json and W/lr_find.png (default W: runs/<config
name>, where training with the rate puts its report beside them). Any config value can be
overridden, e.g. --config.model.hidden_sizes='(256,)'.
"""

import pathlib
import sys

from absl import app, flags
from ml_collections import config_flags

from dnn_jax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
flags.DEFINE_string(
  'workdir', None, 'Where lr_find.json and .png go (default: runs/<config name>).'
)
flags.DEFINE_float('min_lr', 1e-5, 'The lowest learning rate tried.')
flags.DEFINE_float('max_lr', 1.0, 'The highest learning rate tried.')
flags.DEFINE_integer('num_rates', 16, 'How many rates, log-spaced from min_lr to max_lr.')
flags.DEFINE_integer('steps', 0, 'Optimizer steps per rate; 0: one epoch.')
flags.DEFINE_float(
  'tolerance', 0.1, 'Suggest the smallest rate whose final loss is within this of the lowest.'
)
flags.mark_flags_as_required(['config'])


def overrides(argv) -> list[str]:
  """The --config.key=value flags of argv, each as one argument."""
  out, args = [], list(argv[1:])
  for i, arg in enumerate(args):
    if arg.startswith('--config.'):
      has_value = '=' in arg or i + 1 == len(args)
      out.append(arg if has_value else f'{arg}={args[i + 1]}')
  return out


def main(argv):
  del argv  # cli.parse_flags refuses positional arguments
  from dnn_jax.lr_find import run  # after flag parsing: JAX starts on import

  config_path = config_flags.get_config_filename(FLAGS['config'])
  workdir = FLAGS.workdir or str(pathlib.Path('runs') / pathlib.Path(config_path).stem)
  cli.run_reporting_errors(
    run.lr_find, FLAGS.config, workdir, min_lr=FLAGS.min_lr, max_lr=FLAGS.max_lr,
    num_rates=FLAGS.num_rates, steps=FLAGS.steps, tolerance=FLAGS.tolerance,
    config_path=config_path, overrides=overrides(sys.argv),
  )  # fmt: skip


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
