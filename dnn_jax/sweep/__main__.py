"""Run a sweep: python -m dnn_jax.sweep --config experiments/sweeps/X.py --workdir W.

Re-running the same command on W continues the sweep; any value can be overridden, e.g.
--config.sweep.num_trials=10 --config.data.train_split='train[:10000]'.
"""

import pathlib

from absl import app, flags
from ml_collections import config_flags

from dnn_jax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Sweep config file.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Where the sweep goes (default: runs/sweeps/<config name>).')
flags.mark_flags_as_required(['config'])


def main(argv):
  del argv  # cli.parse_flags refuses positional arguments
  from dnn_jax.sweep import run  # after flag parsing: JAX starts on import

  config_path = config_flags.get_config_filename(FLAGS['config'])
  workdir = FLAGS.workdir or str(pathlib.Path('runs/sweeps') / pathlib.Path(config_path).stem)
  try:
    cli.run_reporting_errors(run.run_sweep, FLAGS.config, workdir)
  except KeyboardInterrupt:
    print(f'\ninterrupted; run the same command to continue the sweep in {workdir}')
    raise SystemExit(130) from None


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
