"""Records a finished training run for the tutorial's results table.

Usage: python -m benchmarks.record_run --workdir runs/mnist_cnn [--experiment mnist_cnn]
  [--record benchmarks/records.jsonl]

Appends one 'training' record (the run's test metrics, its history, its config, and the commit,
machine and date its metrics.json says it ran at) to the records file, and copies the run's
curves into benchmarks/curves/<experiment>.png; `python -m benchmarks.results --readme
README.md` then rewrites the README's results table from the records, so no number in it is
typed by hand. --experiment defaults to the workdir's name (runs/<config file name>).
"""

import json
import pathlib
import sys

from absl import app, flags

from benchmarks import records
from dnn_jax.report import curves

FLAGS = flags.FLAGS
CURVES_DIR = pathlib.Path(__file__).parent / 'curves'
HISTORY_KEYS = ('epoch', 'loss', 'accuracy', 'val_loss', 'val_accuracy', 'learning_rate')


def training_record(metrics: dict, experiment: str) -> dict:
  """The record's fields from a finished run's metrics.json; ValueError if it is unfinished."""
  if 'test' not in metrics or 'preempted' in metrics:
    raise ValueError('the run has not finished (no test metrics); run its command again')
  if 'machine' not in metrics:
    raise ValueError('its metrics.json names no commit or machine (a run from before they were '
                     'recorded); train it again')  # fmt: skip
  history = [{k: r[k] for k in HISTORY_KEYS if k in r} for r in metrics['history']]
  return {
    'experiment': experiment,
    'epochs': len(history),
    'num_epochs': metrics['config']['num_epochs'],
    'test': metrics['test'],
    'best': metrics.get('best'),
    'early_stopped': metrics.get('early_stopped'),
    'train_samples_per_sec': metrics.get('train_samples_per_sec'),
    'devices': metrics['devices'],
    'history': history,
    'config': metrics['config'],
  }


def record_run(workdir, experiment: str = '', path=records.DEFAULT_PATH) -> dict:
  """Appends workdir's run to the records file and copies its curves; returns the record."""
  workdir = pathlib.Path(workdir)
  experiment = experiment or workdir.name
  metrics = json.loads((workdir / 'metrics.json').read_text())
  fields = training_record(metrics, experiment)
  CURVES_DIR.mkdir(exist_ok=True)
  # Drawn again from the history: the same picture as the report's, without its other files.
  best = (metrics.get('best') or {}).get('epoch')
  curves.draw_curves(CURVES_DIR / f'{experiment}.png', metrics['history'], best)
  fields['curves'] = f'curves/{experiment}.png'
  return records.append(path, 'training', fields, where=metrics['machine'])


def main(argv):
  del argv
  workdir = pathlib.Path(FLAGS.workdir)
  if not (workdir / 'metrics.json').is_file():
    print(f'error: no metrics.json in {workdir}; train there first', file=sys.stderr)
    sys.exit(2)
  try:
    record = record_run(workdir, FLAGS.experiment, FLAGS.record)
  except ValueError as e:
    print(f'error: {workdir}: {e}', file=sys.stderr)
    sys.exit(2)
  test = record['test']
  print(
    f'recorded {record["experiment"]}: test accuracy {test["accuracy"]:.4f} after '
    f'{record["epochs"]} epoch(s), commit {record["machine"]["commit"]}, in {FLAGS.record}'
  )


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, "A finished training run's workdir.")
  flags.DEFINE_string('experiment', '', "The experiment's name (default: the workdir's).")
  flags.DEFINE_string('record', str(records.DEFAULT_PATH), 'The records file (JSON lines).')
  flags.mark_flags_as_required(['workdir'])
  app.run(main)
