"""Runs of one recipe over several seeds, per framework: whether a gap between two runs is chance.

dnn_jax's runs are the recorded training runs and time_to_accuracy's dnn_jax runs; Keras's are
time_to_accuracy's, with an unreachable target (every epoch trained). All validate on the test
split, so each run's last validation accuracy is its test accuracy.
"""

import pathlib
import statistics

from benchmarks.tutorial_table import full_length, seed_of


def by_seed(training: list, tta: list) -> dict:
  """(experiment, epochs) -> {'dnn_jax': {seed: accuracy}, 'keras': {seed: accuracy}}."""
  found = {}
  for r in training:
    if 'history' in r and r['epochs'] == r['num_epochs']:  # a run that ended, not a sweep
      side = found.setdefault((r['experiment'], r['epochs']), {'dnn_jax': {}, 'keras': {}})
      side['dnn_jax'][seed_of(r)] = r['test']['accuracy']
  for r in tta:
    for peer in ('dnn_jax', 'keras'):
      if full_length(r, peer):
        key = (pathlib.Path(r['config']).stem, r['epochs'])
        found.setdefault(key, {'dnn_jax': {}, 'keras': {}})[peer][seed_of(r)] = r['accuracy']
  return found


def _summary(accuracies: dict) -> str:
  if not accuracies:
    return ''
  values = list(accuracies.values())
  spread = f' ± {statistics.stdev(values):.4f}' if len(values) > 1 else ''
  seeds = sorted(accuracies)
  each = ', '.join(f'{accuracies[s]:.4f}' for s in seeds)
  return f'{statistics.mean(values):.4f}{spread} (seeds {", ".join(map(str, seeds))}: {each})'


def table(training: list, tta: list) -> list:
  """Markdown lines: each recipe run over two or more seeds on either side, mean ± sd per side."""
  rows = {k: v for k, v in by_seed(training, tta).items() if max(map(len, v.values())) > 1}
  if not rows:
    return [
      'No recipe is recorded over several seeds yet (`benchmarks.time_to_accuracy '
      '--target 0.9999 --max_epochs N --config.seed=S`).',
      '',
    ]
  lines = [
    'Test accuracy over seeds (weights, data order, dropout): mean ± standard deviation, each '
    'seed\'s run in brackets. A gap between one run of each side means something only where it '
    'is wider than these spreads.', '',
    '| experiment | epochs | dnn_jax | Keras | dnn_jax - Keras (means) |',
    '|---|---|---|---|---|',
  ]  # fmt: skip
  for (name, epochs), sides in sorted(rows.items()):
    ours, keras = sides['dnn_jax'], sides['keras']
    gap = ''
    if ours and keras:
      gap = f'{statistics.mean(ours.values()) - statistics.mean(keras.values()):+.4f}'
    lines.append(f'| {name} | {epochs} | {_summary(ours)} | {_summary(keras)} | {gap} |')
  return [*lines, '']
