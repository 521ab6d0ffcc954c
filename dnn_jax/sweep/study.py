"""The optuna study of a sweep: kept in <workdir>/optuna_journal.log, so a re-run continues it."""

import json
import pathlib

import numpy as np
import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from dnn_jax.errors import ConfigError
from dnn_jax.sweep import space

JOURNAL = 'optuna_journal.log'
STUDY_NAME = 'sweep'
# Changing these on a re-run continues the sweep; any other change needs a new workdir.
RESUMABLE_KEYS = ('num_trials', 'trials_per_batch')


class AskTellGridSampler(optuna.samplers.GridSampler):
  """optuna's GridSampler without its stop after the grid's last trial.

  That stop raises a RuntimeError from tell() outside study.optimize (optuna issue #5141,
  documented in the GridSampler's notes); the sweep stops at num_trials on its own.
  """

  def after_trial(self, study, trial, state, values) -> None:
    del study, trial, state, values


def make_sampler(sweep, trials_so_far: int = 0) -> optuna.samplers.BaseSampler:
  """The configured sampler, seeded: the same config proposes the same trials.

  A sweep continued after trials_so_far trials reseeds TPE and random sampling from (seed,
  trials_so_far), so they do not replay the first run's proposals. The grid keeps its seed:
  it fixes the grid's order, which a continued sweep must share.
  """
  if sweep.sampler == 'grid':
    return AskTellGridSampler(space.grid(sweep), seed=sweep.seed)
  seed = sweep.seed
  if trials_so_far:
    seed = int(np.random.SeedSequence([sweep.seed, trials_so_far]).generate_state(1)[0])
  if sweep.sampler == 'random':
    return optuna.samplers.RandomSampler(seed=seed)
  # Trials asked as a batch before any is told: the constant liar (optuna's default) keeps
  # them apart instead of proposing the same point several times.
  return optuna.samplers.TPESampler(seed=seed, n_startup_trials=sweep.startup_trials)


def _fingerprint(config) -> dict:
  plain = config.to_dict()
  for key in RESUMABLE_KEYS:
    del plain['sweep'][key]
  return json.loads(json.dumps(plain, default=str))


def _first_difference(a, b, prefix='config') -> str:
  if isinstance(a, dict) and isinstance(b, dict):
    for key in sorted(set(a) | set(b)):
      if a.get(key) != b.get(key):
        return _first_difference(a.get(key), b.get(key), f'{prefix}.{key}')
  return f'{prefix} ({a!r} there, {b!r} here)'


def open_study(config, workdir: pathlib.Path) -> optuna.Study:
  """The workdir's study (created on the first run); refuses a workdir of another sweep."""
  optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep prints its own lines
  # An append-only file of operations: a kill at any moment leaves the trials told so far.
  storage = JournalStorage(JournalFileBackend(str(workdir / JOURNAL)))
  study = optuna.create_study(
    storage=storage,
    study_name=STUDY_NAME,
    direction=config.sweep.direction,
    sampler=make_sampler(config.sweep),
    load_if_exists=True,
  )
  if trials_so_far := len(study.get_trials(deepcopy=False)):
    study.sampler = make_sampler(config.sweep, trials_so_far)
  fingerprint = _fingerprint(config)
  saved = study.user_attrs.get('config')
  if saved is None:
    study.set_user_attr('config', fingerprint)
  elif saved != fingerprint:
    raise ConfigError(
      f'{workdir} holds a sweep of another config: {_first_difference(saved, fingerprint)}; '
      f'use another --workdir, or that config to continue it'
    )
  return study


def finished(study: optuna.Study) -> list:
  """Trials that were trained to the end (complete, or failed with a non-finite loss)."""
  return [
    t
    for t in study.get_trials(deepcopy=False)
    if t.state.is_finished() and 'train_seconds' in t.user_attrs
  ]


def requeue_interrupted(study: optuna.Study) -> list:
  """Trials a stopped run asked but never told: failed, and asked again first, same params.

  Returns their numbers. Their retries get new numbers (optuna numbers every trial it asks).
  """
  interrupted = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
  for trial in interrupted:
    study.tell(trial.number, state=TrialState.FAIL)
    study.enqueue_trial(trial.params, user_attrs={'retry_of': trial.number})
  return [t.number for t in interrupted]
