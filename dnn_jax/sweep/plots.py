"""The tutorial's hyperopt scatter plots of a sweep, one PNG each and all in sweep.png.

Per swept parameter: training time and the objective against it; per pair of parameters: one
against the other, coloured by the objective; and the objective per trial with its running
best. For units and dropout these are the notebook's five plots, and the history.
"""

import itertools
import pathlib

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from dnn_jax import files
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
    values = [r[objective] for r in done]
    # The worst few would stretch the colours over nothing: they saturate at the scale's end.
    low, high = np.percentile(values, [10, 100] if maximize else [0, 90])
    points = ax.scatter(
      [r[x] for r in done], [r[y] for r in done], c=values, cmap='viridis', vmin=low, vmax=high,
      s=36, edgecolors='k', linewidths=0.3,
    )  # fmt: skip
    fig.colorbar(points, ax=ax, label=_label(objective), extend='min' if maximize else 'max')
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
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
  else:
    ax.scatter([r[x] for r in done], [r[y] for r in done], s=24, alpha=0.8)
    ax.set_title(f'{_label(y)} vs {_label(x)}', fontsize=10)
  if best:
    bx, by = best[0][x], best[0][y]
    ax.scatter([bx], [by], marker='*', s=260, facecolors='none', edgecolors='tab:red', zorder=3)
    right = bx > np.median([r[x] for r in done])  # the label goes toward the middle
    ax.annotate(
      f'best: trial {best[0]["trial"]}', (bx, by), xytext=(-10 if right else 10, -14),
      textcoords='offset points', ha='right' if right else 'left', color='tab:red', fontsize=8,
      bbox={'boxstyle': 'round,pad=0.15', 'facecolor': 'white', 'edgecolor': 'none', 'alpha': 0.8},
    )  # fmt: skip
  ax.set_xlabel(_label(x))
  ax.set_ylabel(_label(y))
  for key, which in ((x, 'x'), (y, 'y')):
    if key in LOG_PARAMS:
      _log_axis(ax, which, sorted({r[key] for r in done}))
  ax.grid(alpha=0.3)


def _log_axis(ax, which: str, values) -> None:
  """A log axis; a few distinct values are its ticks, written plainly (3e-4, not 3x10^-4)."""
  getattr(ax, f'set_{which}scale')('log')
  axis = ax.xaxis if which == 'x' else ax.yaxis
  if len(values) <= 8:
    axis.set_ticks(values, [f'{v:g}' for v in values])
    axis.set_minor_formatter(NullFormatter())


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
    files.save_figure(fig, paths[-1], dpi=100)
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
  files.save_figure(fig, paths[-1], dpi=90)
  return paths
