"""Train an experiment: python -m dnn_jax.main --config experiments/X.py --workdir runs/X.

Any config value can be overridden, e.g. --config.optimizer.learning_rate=3e-4.
"""

import pathlib
import sys

from absl import app, flags
from ml_collections import config_flags

from dnn_jax import cli
from dnn_jax.errors import UserError

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
    draw_report(workdir)


def draw_report(workdir: str) -> None:
  """The finished run's report; if it fails, one line says that training's results are safe."""
  from dnn_jax.report import build  # only now: training start-up never pays for matplotlib

  try:
    build.report_finished_run(workdir)
  except Exception as e:
    if FLAGS.verbose:
      raise
    why = str(e) if isinstance(e, UserError) else f'{type(e).__name__}: {e}'
    metrics = pathlib.Path(workdir) / 'metrics.json'
    print(
      f'error: the report could not be drawn ({why.splitlines()[0] if why else ""}); the run '
      f'itself finished: {metrics}; redraw it with python -m dnn_jax.report --workdir {workdir}',
      file=sys.stderr,
    )
    sys.exit(2 if isinstance(e, UserError) else 1)  # 2: the user can fix it (a full disk)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
