"""run_sweep(config, workdir): ask optuna for trials in batches, train each batch's trials of
one shape together (vmapped), tell the results, and rewrite the tables and plots."""

import json
import math
import pathlib
import time

import optuna
from optuna.trial import TrialState

from dnn_jax import configs, experiment, files, machine, parallel
from dnn_jax import workdir as workdir_lib
from dnn_jax.sweep import plots, space, study, tables, vmapped


def run_sweep(config, workdir) -> list[dict]:
  """Runs config's sweep into workdir, continuing the trials already there.

  Args:
    config: an experiment config with a `sweep` section (see experiments/sweeps/).
    workdir: the optuna journal, trials.csv, trials.md and the plots go here.

  Returns:
    The table's rows, by trial number; the best has 'best' True.
  """
  config = space.validated(config)
  workdir = workdir_lib.prepare(workdir)
  parallel.initialize_distributed(config.distributed)  # before the lock: process 0 holds it
  with workdir_lib.locked(workdir):
    return _run_sweep(config, workdir)


def _run_sweep(config, workdir: pathlib.Path) -> list[dict]:
  sweep = config.sweep
  configs.check_vmappable(config, 'a sweep')
  the_study = study.open_study(config, workdir)
  retried = study.requeue_interrupted(the_study)
  done = len(study.finished(the_study))
  if done or retried:
    note = f'Continuing the sweep in {workdir}: {done}/{sweep.num_trials} trials done'
    if retried:
      note += f'; interrupted trial(s) {", ".join(map(str, retried))} run again first'
    print(note, flush=True)
  if done < sweep.num_trials:  # a start that trains: its step (trials done) and machine, kept
    starts = the_study.user_attrs.get('starts', [])
    the_study.set_user_attr('starts', [*starts, {'trials': done, 'machine': machine.describe()}])
  # One setup serves every trial: the data and the mesh; each group builds its own model.
  exp = experiment.setup(space.trial_config(config, {}))
  print(
    f'Sweep of {sweep.num_trials} trials ({sweep.sampler}, seed {sweep.seed}) over '
    f'{", ".join(sorted(sweep.params))}; {sweep.epochs_per_trial} epoch(s) of '
    f'{exp.num_train:,} samples per trial; {sweep.trials_per_batch} trials asked at a time',
    flush=True,
  )
  distributions = space.distributions(sweep)
  cache, began, trained = {}, time.perf_counter(), 0
  while (left := sweep.num_trials - len(study.finished(the_study))) > 0:
    batch = [the_study.ask(distributions) for _ in range(min(sweep.trials_per_batch, left))]
    trained += _train_batch(config, exp, the_study, batch, cache)
    _write_outputs(config, the_study, workdir)  # the tables so far; the slower plots at the end
  table = _write_outputs(config, the_study, workdir, with_plots=True)
  _write_summary(config, table, workdir, the_study.user_attrs.get('starts', []))
  _print_summary(config, table, trained, time.perf_counter() - began, workdir)
  return table


def _train_batch(config, exp, the_study, batch, cache) -> int:
  """Trains the batch's trials, those of one shape together, and tells optuna each result."""
  sweep = config.sweep
  groups = {}
  for trial in batch:
    trial_config = space.trial_config(config, trial.params)
    groups.setdefault(vmapped.shape_key(trial_config), []).append((trial, trial_config))
  for members in groups.values():
    results = vmapped.run_group(exp, [c for _, c in members], cache)
    for (trial, _), result in zip(members, results, strict=True):
      for key, value in result.items():
        trial.set_user_attr(key, value)
      value = result[sweep.objective]
      if result['nonfinite_steps'] or not math.isfinite(value):
        the_study.tell(trial, state=TrialState.FAIL)
      else:
        the_study.tell(trial, value)
      _print_trial(config, trial, result)
  return len(batch)


def _print_trial(config, trial: optuna.Trial, result: dict) -> None:
  names = sorted(config.sweep.params)
  row = {'trial': trial.number, **trial.params}
  shared = f', {result["group_size"]} trials vmapped' if result['group_size'] > 1 else ''
  status = ' - non-finite loss: failed' if result['nonfinite_steps'] else ''
  print(
    f'Trial {trial.number}: {tables.describe(row, names)} - '
    f'val_accuracy: {result["val_accuracy"]:.4f} - val_loss: {result["val_loss"]:.4f} - '
    f'{result["train_seconds"]:.1f}s train, {result["compile_seconds"]:.1f}s compile '
    f'(per trial{shared}){status}',
    flush=True,
  )


def _write_outputs(config, the_study, workdir: pathlib.Path, with_plots=False) -> list[dict]:
  sweep = config.sweep
  names = sorted(sweep.params)
  table = tables.rows(study.finished(the_study), names, sweep.objective, sweep.direction)
  files.write_text(workdir / 'trials.csv', tables.to_csv(table, names))
  files.write_text(workdir / 'trials.md', tables.markdown(table, names))
  if with_plots:
    plots.write(table, names, sweep.objective, sweep.direction, workdir)
  return table


def _write_summary(config, table: list[dict], workdir: pathlib.Path, starts: list) -> None:
  """sweep.json: the finished sweep's best trial, budget, starts and machine (for record_run)."""
  sweep = config.sweep
  summary = {
    'config': json.loads(config.to_json()),
    'num_trials': len(table),
    'epochs_per_trial': sweep.epochs_per_trial,
    'objective': sweep.objective,
    'best': next((r for r in table if r['best']), None),
    'train_seconds': sum(r.get('train_seconds', 0.0) for r in table),
    'starts': starts,  # each start that trained: trials done before it, commit, CPU, date
    'machine': machine.describe(),  # the finishing start's
  }
  files.write_json(workdir / 'sweep.json', summary)


def _print_summary(config, table, trained: int, seconds: float, workdir) -> None:
  sweep = config.sweep
  names = sorted(sweep.params)
  ranked = tables.ranking(table, sweep.objective, sweep.direction)
  print(f'{trained} trial(s) trained in {seconds:.1f}s; {len(table)} in {workdir}/trials.csv')
  if not ranked:
    print('No trial completed with a finite loss.')
    return
  best = ranked[0]
  print(
    f'Best trial {best["trial"]}: {tables.describe(best, names)} - '
    f'{sweep.objective}: {best[sweep.objective]:.4f}'
  )
  print(f'Top {min(5, len(ranked))} by {sweep.objective}:')
  print(tables.markdown(ranked[:5], names), end='')
