"""The tutorial's hyperopt scatter plots of a sweep, one PNG each and all in sweep.png.

Per swept parameter: training time and the objective against it; per pair of parameters: one
against the other, coloured by the objective; and the objective per trial with its running
best. For units and dropout these are the notebook's five plots, and the history.
"""

import itertools
import pathlib

from matplotlib.figure import Figure

from dnn_jax.sweep import tables

LOG_PARAMS = ('learning_rate',)
LABELS = {
  'units': 'hidden units (every layer)',
  'dropout': 'dropout rate',
  'learning_rate': 'learning rate',
  'seed': 'seed',
  'train_seconds': 'training time per trial (s)',
  'val_accuracy': 'validation accuracy',
  'val_loss': 'validation loss',
}


def _label(key: str) -> str:
  return LABELS.get(key, key)


def panels(param_names, objective: str) -> list[tuple]:
  """(file stem, kind, x key, y key) of every plot."""
  out = [(f'time_vs_{p}', 'scatter', p, 'train_seconds') for p in param_names]
  out += [(f'{objective}_vs_{p}', 'scatter', p, objective) for p in param_names]
  out += [(f'{b}_vs_{a}', 'pair', a, b) for a, b in itertools.combinations(param_names, 2)]
  out.append(('history', 'history', 'trial', objective))
  return out


def _draw(fig, ax, kind: str, x: str, y: str, table: list, objective: str, maximize: bool):
  done = [r for r in table if r['status'] == 'complete']
  best = [r for r in done if r['best']]
  if kind == 'pair':
    points = ax.scatter(
      [r[x] for r in done], [r[y] for r in done], c=[r[objective] for r in done],
      cmap='viridis', s=36, edgecolors='k', linewidths=0.3,
    )  # fmt: skip
    fig.colorbar(points, ax=ax, label=_label(objective))
    ax.set_title(f'{_label(y)} vs {_label(x)}, colour: {_label(objective)}', fontsize=10)
  elif kind == 'history':
    order = sorted(done, key=lambda r: r['trial'])
    ax.scatter([r['trial'] for r in order], [r[objective] for r in order], s=20, label='trial')
    best_so_far, line = None, []
    for r in order:
      v = r[objective]
      if best_so_far is None or (v > best_so_far if maximize else v < best_so_far):
        best_so_far = v
      line.append(best_so_far)
    ax.step([r['trial'] for r in order], line, where='post', color='tab:red', label='best so far')
    ax.set_title(f'{_label(objective)} per trial', fontsize=10)
    ax.legend(fontsize=8)
  else:
    ax.scatter([r[x] for r in done], [r[y] for r in done], s=24, alpha=0.8)
    ax.set_title(f'{_label(y)} vs {_label(x)}', fontsize=10)
  if best:
    ax.scatter(
      [best[0][x]], [best[0][y]], marker='*', s=260, facecolors='none', edgecolors='tab:red',
      linewidths=1.5, label=f'best: trial {best[0]["trial"]}', zorder=3,
    )  # fmt: skip
    ax.legend(fontsize=8)
  ax.set_xlabel(_label(x))
  ax.set_ylabel(_label(y))
  if x in LOG_PARAMS:
    ax.set_xscale('log')
  if y in LOG_PARAMS:
    ax.set_yscale('log')
  ax.grid(alpha=0.3)


def write(table: list, param_names, objective: str, direction: str, workdir: pathlib.Path) -> list:
  """Writes every panel's PNG and sweep.png with all of them; returns the paths."""
  if not any(r['status'] == 'complete' for r in table):
    return []
  specs = panels(param_names, objective)
  maximize = direction == 'maximize'
  paths = []
  for stem, kind, x, y in specs:
    fig = Figure(figsize=(6, 4.5), layout='constrained')
    _draw(fig, fig.subplots(), kind, x, y, table, objective, maximize)
    paths.append(workdir / f'{stem}.png')
    fig.savefig(paths[-1], dpi=100)
  cols = 3
  rows = -(-len(specs) // cols)
  fig = Figure(figsize=(5.5 * cols, 4.3 * rows), layout='constrained')
  axes = fig.subplots(rows, cols, squeeze=False).ravel()
  for ax, (_, kind, x, y) in zip(axes, specs, strict=False):
    _draw(fig, ax, kind, x, y, table, objective, maximize)
  for ax in axes[len(specs) :]:
    ax.set_visible(False)
  best = tables.ranking(table, objective, direction)
  title = f'{len(table)} trials'
  if best:
    title += f'; best: trial {best[0]["trial"]} ({tables.describe(best[0], param_names)}), '
    title += f'{_label(objective)} {best[0][objective]:.4f}'
  fig.suptitle(title)
  paths.append(workdir / 'sweep.png')
  fig.savefig(paths[-1], dpi=90)
  return paths
