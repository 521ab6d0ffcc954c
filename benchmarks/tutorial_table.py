"""The tutorial's results table: each experiment's newest full-length run, the tutorial's number
and Keras's run of the same recipe beside it (README.md and RESULTS.md show it)."""

import pathlib

from benchmarks.records import machine_label
from dnn_jax import files

# The tutorial's test accuracies (its notebooks' printed results), by experiment file.
TUTORIAL = {
  'mnist_mlp': 0.9802, 'mnist_mlp_minimal': 0.9759, 'mnist_mlp_2layer': 0.98,
  'mnist_cnn': 0.9925, 'mnist_cnn_deep': 0.9959, 'cifar10_cnn': 0.79,
  'mnist_mlp_units_dropout_10epochs': 0.9833,  # the hyperopt notebook's best of 50 trials
}  # fmt: skip
# The tutorial's networks it printed no number for (the notebook trained ResNet at depth 110 only).
WITHOUT_FIGURE = ('cifar10_resnet20_aug', 'cifar10_resnet110_aug')


def seed_of(record: dict) -> int:
  """The seed of a record's run; records from before seeds were recorded ran the default, 0."""
  config = record.get('config')
  return config.get('seed', 0) if isinstance(config, dict) else record.get('seed', 0)


def full_length(record: dict, peer: str) -> bool:
  """A float32 time_to_accuracy run of peer that trained every epoch (an unreachable target)."""
  return record['peer'].startswith(peer) and record['dtype'] == 'float32' and not record['reached']


def keras_side_by_side(tta: list) -> dict:
  """(experiment, seed, epochs) -> Keras's newest full-length run of that recipe (float32).

  Those runs validate on the test split (the tutorial's validation), so their last val_accuracy
  compares with dnn_jax's test accuracy.
  """
  keras = {}
  for r in tta:
    if full_length(r, 'keras'):
      keras[pathlib.Path(r['config']).stem, seed_of(r), r['epochs']] = r  # the newest wins
  return keras


def keras_twin(keras: dict, record: dict) -> dict | None:
  """Keras's run (from keras_side_by_side) of record's experiment, seed and epochs, if any."""
  return keras.get((record['experiment'], seed_of(record), record['epochs']))


def side_by_side_name(experiment: str) -> str:
  """The picture of both frameworks' curves, under benchmarks/."""
  return f'curves/{experiment}_keras.png'


def draw_side_by_side(path, experiment: str, ours: dict, keras: dict) -> None:
  """Test accuracy per epoch, dnn_jax's run beside Keras's of the same recipe."""
  from matplotlib.figure import Figure
  from matplotlib.ticker import MaxNLocator

  fig = Figure(figsize=(8, 4.5), layout='constrained')
  ax = fig.subplots()
  mine = [h['val_accuracy'] for h in ours['history']]
  theirs = keras['val_accuracies']
  for accuracies, marker, side, last in (
    (mine, 'o-', f'dnn_jax ({ours["machine"]["commit"]})', ours['test']['accuracy']),
    (theirs, 's-', f'{keras["peer"]} ({keras["machine"]["commit"]})', keras['accuracy']),
  ):
    ax.plot(range(1, len(accuracies) + 1), accuracies, marker, markersize=3,
            label=f'{side}: {last:.4f}')  # fmt: skip
  if experiment in TUTORIAL:
    ax.axhline(TUTORIAL[experiment], color='gray', linestyle=':',
               label=f"the tutorial's {TUTORIAL[experiment]:.4g}")  # fmt: skip
  # The first quarter of the epochs (the climb) left out of the range: the end is what counts.
  later = mine[len(mine) // 4 :] + theirs[len(theirs) // 4 :]
  low, high = min(later), max([*later, TUTORIAL.get(experiment, 0)])
  ax.set_ylim(low - 0.05 * (high - low), high + 0.3 * (high - low))  # room for the legend
  ax.set_title(f'{experiment}: the same recipe, the same data (validation = test split)')
  ax.set_xlabel('epoch')
  ax.set_ylabel('accuracy after the epoch')
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.grid(alpha=0.3)
  ax.legend(loc='upper left')
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  files.save_figure(fig, path, dpi=100)


def pairs(training: list, tta: list) -> dict:
  """Experiment -> (its newest recorded run, Keras's run of its recipe and seed), where both are."""
  newest = {r['experiment']: r for r in training if 'history' in r}  # sweeps have no curve
  keras = keras_side_by_side(tta)
  found = {name: keras_twin(keras, r) for name, r in newest.items()}
  return {name: (newest[name], k) for name, k in found.items() if k}


def _unique(items) -> list:
  return list(dict.fromkeys(items))


def provenance(record: dict) -> tuple:
  """A row's commit(s), date(s) and machine(s): a resumed run names each of its starts'."""
  starts = [s['machine'] for s in record.get('starts') or []] or [record['machine']]
  commits = ' then '.join(_unique(s['commit'] for s in starts))
  machines = ' then '.join(_unique(machine_label({'machine': s}) for s in starts))
  date = starts[0]['date']
  if not record.get('starts') and 'trials' in record:
    date += ' (finished)'  # a sweep records its machine once it ends, not when it began
  if len(starts) > 1:
    date = f'{date} to {starts[-1]["date"]} ({len(starts)} starts)'
  return commits, date, machines


def table(training: list, tta: list = (), prefix: str = '') -> list:
  """Markdown lines: the newest recorded run of each experiment beside the tutorial's number,
  and beside Keras's run of the same recipe where one is recorded.

  prefix: where benchmarks/ is from the page (README.md: 'benchmarks/'), for the curves' links.
  """
  if not training:
    return ['No training run is recorded yet (`python -m benchmarks.record_run --workdir W`).', '']
  newest = {r['experiment']: r for r in training}  # file order: the last one wins
  keras = keras_side_by_side(tta)
  names = [n for n in TUTORIAL if n in newest] + sorted(set(newest) - set(TUTORIAL))
  lines = [
    "| experiment | epochs | test accuracy | tutorial's | Keras, same recipe here "
    '| commit, started | machine | curves |',
    '|---|---|---|---|---|---|---|---|',
  ]
  for name in names:
    r = newest[name]
    epochs = f'{r["epochs"]}/{r["num_epochs"]}' + (
      ' (early stop)' if r.get('early_stopped') else ''
    )
    shown = f'`{name}`'
    if 'trials' in r:  # a sweep: its best trial, each of its trials trained this long
      epochs += f' per trial, {r["trials"]} trials'
      best = ', '.join(f'{k} {v:.4g}' for k, v in r['best_trial'].items() if k != 'trial')
      shown += f' (best: {best})'
    tutorial = f'{TUTORIAL[name]:.4g}' if name in TUTORIAL else ''
    k = keras_twin(keras, r)
    side = f'{k["accuracy"]:.4f} ({k["epochs"]} epochs, {k["machine"]["commit"]})' if k else ''
    if k and 'history' in r:
      side += f', [both curves]({prefix}{side_by_side_name(name)})'
    commits, date, machines = provenance(r)
    lines.append(
      f'| {shown} | {epochs} | {r["test"]["accuracy"]:.4f} | {tutorial} | {side} | '
      f'{commits}, {date} | {machines} | [curves]({prefix}{r["curves"]}) |'
    )
  for name in names:  # what a row's numbers cannot say, given by record_run --note
    if newest[name].get('note'):
      lines += ['', f'Note on `{name}`: {newest[name]["note"]}']
  missing = [f'`{n}`' for n in (*TUTORIAL, *WITHOUT_FIGURE) if n not in newest]
  if missing:  # say so, rather than let a row's absence pass unnoticed
    lines += ['', f'Not trained in full here yet: {", ".join(missing)}.']
  return [*lines, '']
