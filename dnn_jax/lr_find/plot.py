"""lr_find.png: the final loss against the rate, the suggestion marked, and each rate's curve."""

import math

import numpy as np
from matplotlib import cm, colors, ticker
from matplotlib.figure import Figure

from dnn_jax import files
from dnn_jax.lr_find import suggest


def _values(xs) -> np.ndarray:
  return np.array([math.nan if x is None else x for x in xs], np.float64)


def _loss_axis(ax, low: float, top: float) -> None:
  """A log loss axis from low to top, its ticks written plainly (0.2, not 2x10^-1)."""
  ax.set_yscale('log')
  ax.set_ylim(low, top)
  ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
  ax.yaxis.set_major_formatter(ticker.FormatStrFormatter('%g'))
  ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def draw(path, result: dict) -> None:
  """Two panels from lr_find.json's content: loss vs learning rate, and loss vs step per rate."""
  rates = np.array(result['rates'])
  trials, best = result['trials'], result['suggestion']
  status_T = [t['status'] for t in trials]
  diverged = np.array([s == suggest.DIVERGED for s in status_T])
  final_T = np.where(diverged, math.nan, _values([t['final_loss'] for t in trials]))
  val_T = np.where(diverged, math.nan, _values([t['val_loss'] for t in trials]))
  chance = result['chance_loss']
  # Losses above a uniform guess's are off the scale: drawn at its top, as triangles.
  top = 1.25 * chance
  shown = [x for x in (*final_T, *val_T) if 0 < x < top]
  low = 0.7 * min(shown, default=chance / 10)
  edge = top / 1.04

  fig = Figure(figsize=(14, 5), layout='constrained')
  left, right = fig.subplots(1, 2)
  for loss_T, style, colour, name in (
    (final_T, 'o-', 'tab:blue', 'train (smoothed)'),
    (val_T, 's--', 'tab:orange', 'validation'),
  ):
    left.plot(rates, np.minimum(loss_T, edge), style, color=colour, ms=5, label=name)
    over = loss_T > edge
    if over.any():
      left.scatter(rates[over], np.full(over.sum(), edge), marker='^', s=60, color=colour, zorder=3)
  if diverged.any():
    left.scatter(rates[diverged], np.full(diverged.sum(), edge), marker='x', s=80,
                 color='tab:red', zorder=3, label='diverged (NaN/Inf)')  # fmt: skip
  left.axhline(chance, color='gray', linestyle=':', lw=1, label=f'chance (ln K = {chance:.2f})')
  if best['learning_rate'] is not None:
    lowest = best['lowest_index']
    within = f'within {best["tolerance"]:.0%} of the lowest'
    left.axhline(best['lowest_loss'] * (1 + best['tolerance']), color='tab:green', lw=0.8,
                 linestyle='--', alpha=0.7, label=within)  # fmt: skip
    left.scatter([rates[lowest]], [final_T[lowest]], marker='*', s=220, color='tab:blue',
                 zorder=4, label=f'lowest: {rates[lowest]:.3g}')  # fmt: skip
    left.axvline(best['learning_rate'], color='tab:green', lw=2,
                 label=f'suggested: {best["learning_rate"]:.3g}')  # fmt: skip
  left.set_xscale('log')
  _loss_axis(left, low, top)
  left.set_xlabel('learning rate')
  left.set_ylabel(f'loss after {result["steps"]} steps (▲: off the scale)')
  left.set_title(f'{len(rates)} rates, each trained from the same weights', fontsize=11)
  left.grid(alpha=0.3, which='both')
  left.legend(fontsize=8, loc='upper center')

  norm = colors.LogNorm(rates.min(), rates.max())
  steps_C = result['curve_steps']
  for i, curve in enumerate(result['smoothed']):
    chosen = i == best['index']
    colour = 'black' if chosen else cm.viridis(norm(rates[i]))
    right.plot(steps_C, np.minimum(_values(curve), edge), color=colour, lw=2.4 if chosen else 1.1,
               zorder=3 if chosen else 2)  # fmt: skip
  fig.colorbar(cm.ScalarMappable(norm=norm, cmap='viridis'), ax=right, label='learning rate')
  _loss_axis(right, low, top)
  right.set_xlim(0, result['steps'])
  right.set_xlabel('step')
  right.set_ylabel('training loss (smoothed)')
  title = 'Training loss per rate'
  if best['learning_rate'] is not None:
    title += f' (black: the suggested {best["learning_rate"]:.3g})'
  right.set_title(title, fontsize=11)
  right.grid(alpha=0.3, which='both')
  files.save_figure(fig, path, dpi=100)
