"""Train an experiment: python -m dnn_jax.main --config experiments/X.py --workdir runs/X.

Any config value can be overridden, e.g. --config.optimizer.learning_rate=3e-4.
"""

import pathlib

from absl import app, flags
from ml_collections import config_flags

from dnn_jax import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Where metrics go (default: runs/<config file name>).')
flags.DEFINE_bool('report', True, 'Draw <workdir>/report/ when the run has finished.')
flags.mark_flags_as_required(['config'])


def main(argv):
  del argv  # cli.parse_flags refuses positional arguments
  from dnn_jax import train  # after flag parsing: JAX starts on import

  config_path = config_flags.get_config_filename(FLAGS['config'])
  workdir = FLAGS.workdir or str(pathlib.Path('runs') / pathlib.Path(config_path).stem)
  result = cli.run_reporting_errors(train.train_and_evaluate, FLAGS.config, workdir)
  if FLAGS.report and 'preempted' not in result:
    from dnn_jax.report import build  # only now: training start-up never pays for matplotlib

    cli.run_reporting_errors(build.report_finished_run, workdir)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
