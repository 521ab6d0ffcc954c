"""Records a finished training run for the tutorial's results table.

Usage: python -m benchmarks.record_run --workdir runs/mnist_cnn [--experiment mnist_cnn]
  [--record benchmarks/records.jsonl] [--note 'what a reader of the row must know']

Appends one 'training' record (the run's test metrics, its history, its config, and the commit,
machine and date its metrics.json says it ran at) to the records file, and copies the run's
curves into benchmarks/curves/<experiment>.png. A finished sweep's workdir (sweep.json) gives
its best trial, its budget (trials x epochs per trial) and its objective-per-trial plot instead.
`python -m benchmarks.results --readme README.md` then rewrites the README's results table from
the records, so no number in it is typed by hand. --experiment defaults to the workdir's name
(runs/<config file name>, runs/sweeps/<sweep file name>). --note is printed under the table,
named by the row's experiment: for what the numbers cannot say (a fault found after the run).
"""

import json
import pathlib
import shutil
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
    'starts': metrics.get('starts', []),  # none from older runs: the table shows 'machine'
    'history': history,
    'config': metrics['config'],
  }


def sweep_record(summary: dict, experiment: str) -> dict:
  """The record's fields from a finished sweep's sweep.json: its best trial stands for it."""
  best = summary['best']
  if best is None:
    raise ValueError('no trial of the sweep finished with a finite loss')
  data = summary['config']['data']
  # The best trial's test accuracy: its validation accuracy where it validates on the test
  # split (as the tutorial did, which picked its best trial by test accuracy too).
  same = data['validation_split'] == data['test_split']
  accuracy = best.get('test_accuracy', best['val_accuracy'] if same else None)
  if accuracy is None:
    raise ValueError('the sweep recorded no test accuracy; run it again to finish it')
  params = sorted(summary['config']['sweep']['params'])
  return {
    'experiment': experiment,
    'epochs': summary['epochs_per_trial'],
    'num_epochs': summary['epochs_per_trial'],
    'trials': summary['num_trials'],
    'best_trial': {k: best[k] for k in ('trial', *params)},
    'test': {'accuracy': accuracy},
    'train_seconds': summary['train_seconds'],
    'starts': summary.get('starts', []),
    'config': summary['config'],
  }


def record_run(workdir, experiment: str = '', path=records.DEFAULT_PATH, note: str = '') -> dict:
  """Appends workdir's run (or sweep) to the records file and copies its curves; returns it."""
  workdir = pathlib.Path(workdir)
  experiment = experiment or workdir.name
  CURVES_DIR.mkdir(exist_ok=True)
  if (workdir / 'sweep.json').is_file():
    summary = json.loads((workdir / 'sweep.json').read_text())
    fields = sweep_record(summary, experiment)
    shutil.copyfile(workdir / 'history.png', CURVES_DIR / f'{experiment}.png')
  else:
    summary = json.loads((workdir / 'metrics.json').read_text())
    fields = training_record(summary, experiment)
    # Drawn again from the history: the same picture as the report's, without its other files.
    best = (summary.get('best') or {}).get('epoch')
    curves.draw_curves(CURVES_DIR / f'{experiment}.png', summary['history'], best)
  fields['curves'] = f'curves/{experiment}.png'
  if note:
    fields['note'] = note
  return records.append(path, 'training', fields, where=summary['machine'])


def main(argv):
  del argv
  workdir = pathlib.Path(FLAGS.workdir)
  if not any((workdir / name).is_file() for name in ('metrics.json', 'sweep.json')):
    print(f'error: no metrics.json or sweep.json in {workdir}; train or sweep there first',
          file=sys.stderr)  # fmt: skip
    sys.exit(2)
  try:
    record = record_run(workdir, FLAGS.experiment, FLAGS.record, FLAGS.note.strip())
  except ValueError as e:
    print(f'error: {workdir}: {e}', file=sys.stderr)
    sys.exit(2)
  test = record['test']
  trials = f' per trial, best of {record["trials"]} trials' if 'trials' in record else ''
  print(
    f'recorded {record["experiment"]}: test accuracy {test["accuracy"]:.4f} after '
    f'{record["epochs"]} epoch(s){trials}, commit {record["machine"]["commit"]}, in '
    f'{FLAGS.record}'
  )


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, "A finished training run's (or sweep's) workdir.")
  flags.DEFINE_string('experiment', '', "The experiment's name (default: the workdir's).")
  flags.DEFINE_string('record', str(records.DEFAULT_PATH), 'The records file (JSON lines).')
  flags.DEFINE_string('note', '', "Printed under the results table beside the row's name.")
  flags.mark_flags_as_required(['workdir'])
  app.run(main)
