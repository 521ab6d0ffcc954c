"""The trials as rows: trials.csv, trials.md and the console's best trial and top 5."""

import csv
import io
import math

METRICS = ('val_accuracy', 'val_loss', 'test_accuracy')
TIMES = ('train_seconds', 'compile_seconds', 'group_size')


def rows(trials, param_names, objective: str, direction: str) -> list[dict]:
  """One dict per trained trial, by trial number, with 'best' True on the best one."""
  out = []
  for trial in sorted(trials, key=lambda t: t.number):
    attrs = trial.user_attrs
    row = {'trial': trial.number, **{p: trial.params[p] for p in param_names}}
    row.update({k: attrs[k] for k in (*METRICS, *TIMES) if k in attrs})
    row['status'] = 'nonfinite' if attrs.get('nonfinite_steps') else 'complete'
    row['best'] = False
    out.append(row)
  ranked = ranking(out, objective, direction)
  if ranked:
    ranked[0]['best'] = True
  return out


def ranking(table: list[dict], objective: str, direction: str) -> list[dict]:
  """Complete trials, best first; equal values in trial order."""
  sign = -1.0 if direction == 'maximize' else 1.0
  usable = [
    r for r in table if r['status'] == 'complete' and math.isfinite(r.get(objective, math.nan))
  ]
  return sorted(usable, key=lambda r: (sign * r[objective], r['trial']))


def columns(table: list[dict], param_names) -> list[str]:
  present = [k for k in (*METRICS, *TIMES) if any(k in r for r in table)]
  return ['trial', *param_names, *present, 'status', 'best']


def _cell(key: str, value) -> str:
  if value is None:
    return ''
  if key == 'best':
    return 'best' if value else ''
  if isinstance(value, int | str):  # bools too
    return str(value)
  if key.endswith('seconds'):
    return f'{value:.2f}'
  if key in METRICS:
    return f'{value:.4f}'
  return f'{value:.4g}'  # swept floats: 0.15, not 0.15000000000000002


def to_csv(table: list[dict], param_names) -> str:
  """The rows as CSV text, with a header."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  keys = columns(table, param_names)
  writer.writerow(keys)
  for row in table:
    writer.writerow([_csv_value(k, row.get(k)) for k in keys])
  return out.getvalue()


def _csv_value(key: str, value):
  if key == 'best':
    return 'best' if value else ''
  if isinstance(value, float) and key not in METRICS and not key.endswith('seconds'):
    return float(f'{value:.10g}')
  return '' if value is None else value


def markdown(table: list[dict], param_names) -> str:
  """A markdown table of the rows; the best trial's row in bold."""
  keys = columns(table, param_names)
  lines = ['| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys)]
  for row in table:
    cells = [_cell(k, row.get(k)) for k in keys]
    if row['best']:
      cells = [f'**{c}**' if c else c for c in cells]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def describe(row: dict, param_names) -> str:
  """'units 512, dropout 0.25' for a row."""
  return ', '.join(f'{p} {_cell(p, row[p])}' for p in param_names)
