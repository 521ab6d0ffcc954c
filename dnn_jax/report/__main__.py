"""Draw a run's report: python -m dnn_jax.report --workdir W [--checkpoint best|latest|STEP].

Writes W/report/ (PNGs, confusion.txt and index.html) and prints the test confusion matrix.
"""

from absl import app, flags

from dnn_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, "A training run's workdir (holds metrics.json, checkpoints/).")
flags.DEFINE_string(
  'checkpoint', 'best', 'best (the latest if no epoch ended yet), latest, or a step number.'
)
flags.mark_flags_as_required(['workdir'])


def report(workdir, which: str) -> None:
  """Builds the report and prints its note, the confusion matrix and where it is."""
  from dnn_jax.report import build  # after flag parsing: JAX starts on import

  built = build.report_run(workdir, which)
  if built.note:
    print(f'note: {built.note}')
  print(built.confusion_text)
  print(f'Report: {built.index}')


def main(argv):
  del argv  # cli.parse_flags refuses positional arguments
  cli.run_reporting_errors(report, FLAGS.workdir, FLAGS.checkpoint)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
