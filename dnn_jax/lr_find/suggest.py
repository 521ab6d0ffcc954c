"""The range test's arithmetic: the rates, the smoothed loss curves and the suggested rate.

Each rate trains from the same weights for the same steps at a fixed rate, so the final loss
against the rate is U-shaped: too small a rate has not got far yet, too large a one is noisy or
diverges. Its minimum is the best constant rate for this short budget; a longer run does best
somewhat lower (a constant rate's noise floor rises with it, and a long run has time to use a
smaller step), so the rule walks from the minimum down the valley's stable side.
"""

import math

import numpy as np

# The curves' exponential moving average, per point (a compiled call, about 1/50 of the budget):
# the final loss weighs about the budget's last tenth. fastai's and Lightning's finders use
# 0.98 per step over their 100 steps; per point here, the same span whatever the budget.
SMOOTHING = 0.8
DEFAULT_TOLERANCE = 0.1
OK, DIVERGED, CHANCE = 'ok', 'diverged', 'no better than chance'


def rule(tolerance: float) -> str:
  """The suggestion rule in words, for the output and the plot."""
  return (
    f'the smallest rate whose final smoothed training loss is within {tolerance:.0%} of the '
    f'lowest, reached from the lowest through rates that all are; never a diverged rate'
  )


def log_rates(min_lr: float, max_lr: float, num_rates: int) -> list[float]:
  """num_rates rates evenly spaced in log from min_lr to max_lr, both included."""
  return [float(r) for r in np.geomspace(min_lr, max_lr, num_rates)]


def smooth(loss_TxC: np.ndarray, steps_C) -> np.ndarray:
  """Per trial, the bias-corrected moving average of its calls' mean losses.

  A call shorter than the longest counts for its share of a point; a NaN stays NaN.
  """
  loss_TxC = np.asarray(loss_TxC, np.float64)
  out_TxC = np.empty_like(loss_TxC)
  average_T, kept = np.zeros(loss_TxC.shape[0]), 1.0
  for c, k in enumerate(steps_C):
    beta = SMOOTHING ** (k / max(steps_C))
    average_T = beta * average_T + (1 - beta) * loss_TxC[:, c]
    kept *= beta
    out_TxC[:, c] = average_T / (1 - kept)
  return out_TxC


def statuses(final_loss_T, nonfinite_T, chance_loss: float) -> list[str]:
  """Per trial: OK, DIVERGED (a NaN or Inf loss) or CHANCE (final loss >= a uniform guess's)."""
  out = []
  for loss, nonfinite in zip(final_loss_T, nonfinite_T, strict=True):
    if nonfinite or not math.isfinite(loss):
      out.append(DIVERGED)
    elif loss >= chance_loss:
      out.append(CHANCE)
    else:
      out.append(OK)
  return out


def suggest(rates, final_loss_T, status_T, tolerance: float = DEFAULT_TOLERANCE) -> dict:
  """The suggested rate by rule(tolerance), with the lowest-loss rate and a note on the range.

  Returns {'learning_rate', 'index', 'lowest_index', 'lowest_loss', 'rule', 'note'};
  learning_rate and the indices are None when no trial is OK.
  """
  ok = [i for i, s in enumerate(status_T) if s == OK]
  out = {'learning_rate': None, 'index': None, 'lowest_index': None, 'lowest_loss': None}
  out |= {'rule': rule(tolerance), 'tolerance': tolerance, 'note': ''}
  if not ok:
    out['note'] = (
      'no rate trained to a finite loss below chance; try a lower range (--min_lr, --max_lr)'
    )
    return out
  lowest = min(ok, key=lambda i: final_loss_T[i])
  threshold = final_loss_T[lowest] * (1 + tolerance)
  index = lowest
  while index > 0 and status_T[index - 1] == OK and final_loss_T[index - 1] <= threshold:
    index -= 1
  notes = []
  if index == 0:
    notes.append('the valley reaches --min_lr: lower it to see where the loss rises')
  if lowest == len(rates) - 1:
    notes.append('the lowest loss is at --max_lr: raise it to see where the loss rises')
  out |= {
    'learning_rate': float(rates[index]),
    'index': index,
    'lowest_index': lowest,
    'lowest_loss': float(final_loss_T[lowest]),
    'note': '; '.join(notes),
  }
  return out
