"""lr_find(config, workdir): N learning rates trained as one vmapped program; the suggested rate.

Every rate is a trial of dnn_jax.sweep.vmapped: the same initial weights (the config's seed),
the same data order and dropout keys, the config's optimizer and schedule scaled by the trial's
rate, for the same budget of steps. Each trial's loss is read after every compiled call of a
few steps; the curves are smoothed by a moving average (suggest.smooth), and the
suggestion rule is suggest.rule.
"""

import math
import pathlib
import shlex
import shutil
import time

import jax
import ml_collections
import numpy as np

from dnn_jax import configs, experiment, files, parallel
from dnn_jax import workdir as workdir_lib
from dnn_jax.errors import UserError
from dnn_jax.lr_find import JSON, PNG, plot, suggest
from dnn_jax.sweep import vmapped

CURVE_POINTS = 50  # about this many compiled calls, each a point of the loss curves


def check_flags(min_lr, max_lr, num_rates, steps, tolerance) -> None:
  """Raises UserError naming the first bad flag and the fix."""
  for name, value in (('min_lr', min_lr), ('max_lr', max_lr)):
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
      raise UserError(f'--{name}={value} must be a positive number (a learning rate)')
  if min_lr >= max_lr:
    raise UserError(f'--min_lr={min_lr:g} must be below --max_lr={max_lr:g}')
  if not isinstance(num_rates, int) or num_rates < 3:
    raise UserError(f'--num_rates={num_rates} must be at least 3 (a curve needs a low, a middle '
                    f'and a high rate)')  # fmt: skip
  if not isinstance(steps, int) or steps < 0:
    raise UserError(f'--steps={steps} must be a non-negative integer (0: one epoch)')
  if not (isinstance(tolerance, int | float) and 0 <= tolerance < 10):
    raise UserError(f'--tolerance={tolerance} must be in [0, 10) (0.1: within 10% of the lowest)')


def plan_calls(budget: int, steps_per_epoch: int, call_steps: int) -> list[tuple]:
  """(epoch, first, end) step of each compiled call: budget steps, none across an epoch's end."""
  calls = []
  for start in range(0, budget, steps_per_epoch):
    in_epoch = min(steps_per_epoch, budget - start)
    for a in range(0, in_epoch, call_steps):
      calls.append((start // steps_per_epoch, a, min(a + call_steps, in_epoch)))
  return calls


def lr_find(
  config, workdir, *, min_lr=1e-5, max_lr=1.0, num_rates=16, steps=0,
  tolerance=suggest.DEFAULT_TOLERANCE, config_path='experiments/<name>.py', overrides=(),
) -> dict:  # fmt: skip
  """Trains num_rates rates for `steps` steps each (0: one epoch); writes lr_find.json and .png.

  One epoch by default: every rate sees each training example once, as the real run's first
  epoch does. Each rate here is fixed, so a short budget favours large rates (the small ones
  have barely started); Lightning's 100 steps suit its one run of rising rates, not this.

  Args:
    config: an experiment config; its optimizer.learning_rate is replaced by each trial's.
    workdir: lr_find.json and lr_find.png go here (a training run's workdir shows them in
      its report).
    config_path, overrides: the config file and its --config.* flags, for the printed command.

  Returns:
    lr_find.json's content.
  """
  check_flags(min_lr, max_lr, num_rates, steps, tolerance)
  configs.validated(config)
  configs.check_vmappable(config, 'lr_find')
  created = not pathlib.Path(workdir).exists()
  workdir = workdir_lib.prepare(workdir)
  try:
    parallel.initialize_distributed(config.distributed)
    with workdir_lib.locked(workdir):
      result = _lr_find(config, workdir, min_lr, max_lr, num_rates, steps, tolerance)
  except UserError:
    if created:
      shutil.rmtree(workdir, ignore_errors=True)  # nothing worth keeping: leave no trace
    raise
  result['train_command'] = train_command(result, workdir, config_path, overrides)
  files.write_json(workdir / JSON, result)
  plot.draw(workdir / PNG, result)
  _print_result(result, workdir)
  return result


def train_rates(exp: experiment.Experiment, rates, budget: int):
  """Trains one trial per rate for budget steps; (group, calls, per-call sums, seconds)."""
  config = exp.config
  trial_configs = []
  for rate in rates:
    trial = ml_collections.ConfigDict(config.to_dict())
    trial.optimizer.learning_rate = rate
    trial_configs.append(trial)
  group = vmapped.build_group(exp, trial_configs)
  calls = plan_calls(budget, exp.steps_per_epoch, max(1, -(-budget // CURVE_POINTS)))
  began = time.perf_counter()
  train = vmapped.train_program(exp, group)
  order, keys = vmapped.epoch_inputs(exp, group, 0)
  order_sharding = order.sharding
  programs = {}
  for length in sorted({b - a for _, a, b in calls}):
    args = (group.state, *exp.data.arrays['train'], order[:length], keys)
    programs[length] = train.lower(*args).compile()
  group.evaluators = vmapped.compile_evaluators(exp, group)
  compile_seconds = time.perf_counter() - began

  began, sums, epoch = time.perf_counter(), [], 0
  marks, shown = {len(calls) * k // 10 for k in range(1, 10)}, time.perf_counter()
  for n, (call_epoch, a, b) in enumerate(calls, start=1):
    if call_epoch != epoch:
      epoch = call_epoch
      order, keys = vmapped.epoch_inputs(exp, group, epoch)
    chunk = parallel.put(order[a:b], order_sharding)
    group.state, call_sums = programs[b - a](group.state, *exp.data.arrays['train'], chunk, keys)
    sums.append(call_sums)
    if n in marks:  # a line at every tenth of the budget, when a while apart
      jax.block_until_ready(call_sums)
      if time.perf_counter() - shown > 5:
        shown, step = time.perf_counter(), epoch * exp.steps_per_epoch + b
        print(f'step {step}/{budget}: {shown - began:.1f}s', flush=True)
  sums = jax.device_get(sums)
  seconds = {'compile': compile_seconds, 'train': time.perf_counter() - began}
  return group, calls, sums, seconds


def _lr_find(config, workdir, min_lr, max_lr, num_rates, steps, tolerance) -> dict:
  exp = experiment.setup(config)
  rates = suggest.log_rates(min_lr, max_lr, num_rates)
  budget = steps or exp.steps_per_epoch
  epochs = budget / exp.steps_per_epoch
  print(
    f'LR range test: {num_rates} rates from {min_lr:g} to {max_lr:g} (log-spaced), {budget} steps '
    f'each ({epochs:.2g} epoch(s) of {exp.num_train:,} samples, batch {config.batch_size}) from '
    f'the same initial weights (seed {config.seed}), trained as one vmapped program on '
    f'{exp.mesh.size} {exp.mesh.devices.flat[0].platform} device(s)',
    flush=True,
  )
  group, calls, sums, seconds = train_rates(exp, rates, budget)
  began = time.perf_counter()
  val = vmapped.evaluate(exp, group, 'validation')
  seconds['evaluate'] = time.perf_counter() - began

  steps_C = [b - a for _, a, b in calls]
  nonfinite_TxC = np.stack([s['nonfinite'] for s in sums], axis=1)
  count_TxC = np.maximum(np.stack([s['count'] for s in sums], axis=1), 1)
  loss_TxC = np.stack([s['loss'] for s in sums], axis=1) / count_TxC
  loss_TxC = np.where(nonfinite_TxC > 0, np.nan, loss_TxC)  # such a call's sums skip its NaNs
  smoothed_TxC = suggest.smooth(loss_TxC, steps_C)
  final_T = smoothed_TxC[:, -1]
  chance = math.log(exp.data.splits.num_classes)
  status_T = suggest.statuses(final_T, nonfinite_TxC.sum(1), chance)
  first_bad_TxC = np.stack([s['first_nonfinite'] for s in sums], axis=1)
  trials = []
  for i, rate in enumerate(rates):
    bad = [int(s) for s in first_bad_TxC[i] if s >= 0]
    trials.append({
      'learning_rate': rate,
      'final_loss': _number(final_T[i]),
      'val_loss': _number(val[i]['loss']),
      'val_accuracy': _number(val[i]['accuracy']) if status_T[i] != suggest.DIVERGED else None,
      'status': status_T[i],
      'first_nonfinite_step': bad[0] if bad else None,
    })  # fmt: skip
  ends, total = [], 0
  for n in steps_C:
    total += n
    ends.append(total)
  return {
    'config': config.to_dict(),
    'rates': rates,
    'steps': budget,
    'steps_per_epoch': exp.steps_per_epoch,
    'batch_size': config.batch_size,
    'num_train': exp.num_train,
    'chance_loss': chance,
    'smoothing': suggest.SMOOTHING,
    'curve_steps': ends,
    'loss': [[_number(x) for x in row] for row in loss_TxC],
    'smoothed': [[_number(x) for x in row] for row in smoothed_TxC],
    'trials': trials,
    'suggestion': suggest.suggest(rates, final_T, status_T, tolerance),
    'seconds': seconds,
  }


def _number(x) -> float | None:
  """A float for JSON; None for NaN or Inf (JSON has neither)."""
  x = float(x)
  return x if math.isfinite(x) else None


def train_command(result: dict, workdir: pathlib.Path, config_path: str, overrides) -> str | None:
  """The dnn_jax.main command that trains with the suggested rate (in workdir, if it is free)."""
  rate = result['suggestion']['learning_rate']
  if rate is None:
    return None
  kept = [o for o in overrides if not o.startswith('--config.optimizer.learning_rate')]
  args = ['python', '-m', 'dnn_jax.main', '--config', config_path]
  if not (workdir / 'checkpoints').exists():  # there, its report shows lr_find.png too
    args += ['--workdir', str(workdir)]
  args += [*kept, f'--config.optimizer.learning_rate={rate:.3g}']
  return shlex.join(args)


def _print_result(result: dict, workdir: pathlib.Path) -> None:
  best = result['suggestion']
  rows = [('learning rate', 'final train loss', 'val loss', 'val accuracy', '')]
  for i, t in enumerate(result['trials']):
    marks = []
    if t['status'] == suggest.DIVERGED:
      at = t['first_nonfinite_step']
      marks.append('diverged' + (f' (NaN/Inf at step {at})' if at else ''))
    elif t['status'] == suggest.CHANCE:
      marks.append(suggest.CHANCE)
    if i == best['lowest_index']:
      marks.append('lowest')
    if i == best['index']:
      marks.append('<- suggested')
    cells = [t['final_loss'], t['val_loss'], t['val_accuracy']]
    rows.append((f'{t["learning_rate"]:.3g}', *(_cell(c) for c in cells), ', '.join(marks)))
  widths = [max(len(r[c]) for r in rows) for c in range(4)]
  for row in rows:
    print(
      '  '.join([*(cell.rjust(w) for cell, w in zip(row, widths, strict=False)), row[4]]).rstrip()
    )
  seconds = result['seconds']
  print(
    f'{len(result["rates"])} rates x {result["steps"]} steps: {seconds["compile"]:.1f}s '
    f'compile, {seconds["train"]:.1f}s train, {seconds["evaluate"]:.1f}s evaluate'
  )
  if best['learning_rate'] is None:  # lr_find.json and .png are written: the curves are there
    raise UserError(f'{best["note"]}; the curves are in {workdir / PNG}')
  print(f'Rule: {best["rule"]}.')
  print(
    f'Suggested learning rate: {best["learning_rate"]:.3g} (lowest final loss '
    f'{best["lowest_loss"]:.4f} at {result["rates"][best["lowest_index"]]:.3g})'
  )
  if best['note']:
    print(f'note: {best["note"]}')
  print(f'Train with it: {result["train_command"]}')
  print(f'Wrote {workdir / JSON} and {workdir / PNG}')


def _cell(value) -> str:
  return '-' if value is None else f'{value:.4f}'
