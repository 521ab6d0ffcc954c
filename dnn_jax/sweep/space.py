"""The search space: config.sweep checked, turned into optuna distributions and trial configs."""

import math

import ml_collections
from optuna import distributions as D

from dnn_jax import configs
from dnn_jax.errors import ConfigError

# Swept name -> the config key it sets. Every hidden layer gets `units`, as in the tutorial's
# hyperopt notebook; trials that differ only in the last three train vmapped together.
PARAMS = {
  'units': 'model.hidden_sizes',
  'dropout': 'model.dropout',
  'learning_rate': 'optimizer.learning_rate',
  'seed': 'seed',
}
INTEGER_PARAMS = ('units', 'seed')
SPEC_KEYS = ('low', 'high', 'step', 'log', 'values')
SAMPLERS = ('tpe', 'random', 'grid')
OBJECTIVES = ('val_accuracy', 'val_loss')
DIRECTIONS = ('maximize', 'minimize')


def validated(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Returns config unchanged, or raises ConfigError naming the bad sweep value and the fix."""
  if 'sweep' not in config:
    raise ConfigError(
      'the config has no `sweep` section; use a file from experiments/sweeps/ or add one'
    )
  configs.validated(config)
  sweep = config.sweep
  if sweep.sampler not in SAMPLERS:
    raise ConfigError(
      f'unknown config.sweep.sampler {sweep.sampler!r}; choose one of {", ".join(SAMPLERS)}'
    )
  if sweep.objective not in OBJECTIVES:
    raise ConfigError(
      f'unknown config.sweep.objective {sweep.objective!r}; choose one of {", ".join(OBJECTIVES)}'
    )
  if sweep.direction not in DIRECTIONS:
    raise ConfigError(
      f'unknown config.sweep.direction {sweep.direction!r}; choose maximize or minimize'
    )
  positive = ('num_trials', 'trials_per_batch', 'epochs_per_trial')
  for key in (*positive, 'startup_trials', 'seed'):
    value, least = sweep[key], 1 if key in positive else 0
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
      rule = 'a positive' if least else 'a non-negative'
      raise ConfigError(f'config.sweep.{key}={value!r} must be {rule} integer')
  if not sweep.params:
    raise ConfigError('config.sweep.params is empty; name at least one of ' + ', '.join(PARAMS))
  for name, spec in sweep.params.items():
    _check_param(config, name, spec)
  if sweep.sampler == 'grid':
    size = math.prod(len(v) for v in grid(sweep).values())
    if sweep.num_trials > size:
      raise ConfigError(
        f"config.sweep.num_trials={sweep.num_trials} is more than the grid's {size} points; "
        f'use at most {size}'
      )
  return config


def _check_param(config, name: str, spec) -> None:
  where = f'config.sweep.params.{name}'
  if name not in PARAMS:
    raise ConfigError(
      f'{where}: the sweep knows no parameter {name!r}; choose one of {", ".join(sorted(PARAMS))}'
    )
  if name == 'units' and not config.model.get('hidden_sizes'):
    raise ConfigError(f'{where} needs a model with config.model.hidden_sizes (an MLP)')
  if name == 'dropout' and 'dropout' not in config.model:
    raise ConfigError(f'{where} needs a model with config.model.dropout (an MLP)')
  unknown = sorted(set(spec) - set(SPEC_KEYS))
  if unknown:
    raise ConfigError(f'{where}.{unknown[0]} is not a spec key; use low, high, step, log or values')
  if 'values' in spec:
    if set(spec) - {'values'}:
      raise ConfigError(f'{where}: give either values or low/high(/step/log), not both')
    values = tuple(spec['values']) if isinstance(spec['values'], tuple | list) else ()
    if not values:
      raise ConfigError(f'{where}.values must be a non-empty tuple, e.g. (0.1, 0.2)')
    for value in values:
      _check_value(where, name, value)
    return
  if 'low' not in spec or 'high' not in spec:
    raise ConfigError(f'{where} needs low and high (and optionally step or log), or values')
  low, high, step, log = spec['low'], spec['high'], spec.get('step'), spec.get('log', False)
  for value in (low, high):
    _check_value(where, name, value)
  if low > high:
    raise ConfigError(f'{where}: low={low} is above high={high}')
  if log and step:
    raise ConfigError(f'{where}: a log range takes no step; drop step or set log=False')
  if log and low <= 0:
    raise ConfigError(f'{where}: a log range needs low > 0, got {low}')
  if step is not None:
    _check_step(where, name, low, high, step)


def _check_value(where: str, name: str, value) -> None:
  integer = name in INTEGER_PARAMS
  if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
    kind = 'an integer' if integer else 'a number'
    raise ConfigError(f'{where}: {value!r} is not {kind}')
  limits = {
    'units': (value >= 1, 'must be at least 1'),
    'seed': (value >= 0, 'must be non-negative'),
    'dropout': (0 <= value < 1, 'must be in [0, 1)'),
    'learning_rate': (math.isfinite(value) and value > 0, 'must be a positive number'),
  }
  ok, rule = limits[name]
  if not ok:
    raise ConfigError(f'{where}: {value!r} {rule}')


def _check_step(where: str, name: str, low, high, step) -> None:
  integer = name in INTEGER_PARAMS
  if isinstance(step, bool) or not isinstance(step, int if integer else int | float) or step <= 0:
    kind = 'integer' if integer else 'number'
    raise ConfigError(f'{where}.step={step!r} must be a positive {kind}')
  count = (high - low) / step
  if abs(count - round(count)) > 1e-9 * max(1.0, count):
    hint = ''
    if integer:  # the divisor of the range nearest to the step asked for
      fits = [d for d in range(1, high - low + 1) if (high - low) % d == 0]
      hint = f' (e.g. {min(fits, key=lambda d: (abs(d - step), -d))})'
    raise ConfigError(
      f'{where}.step={step} does not divide high - low = {high - low:g} ({low:g}..{high:g}); '
      f'pick a step that does{hint} or another high'
    )


def grid_values(spec) -> list:
  """Every value of a spec: its values, or its range with step."""
  if 'values' in spec:
    return list(spec['values'])
  low, high, step = spec['low'], spec['high'], spec.get('step')
  if not step:
    return [low] if low == high else None
  count = round((high - low) / step)
  values = [low + i * step for i in range(count + 1)]
  if isinstance(low, int) and isinstance(step, int):
    return values
  return [round(v, 10) for v in values]


def grid(sweep) -> dict:
  """name -> the values a grid sweep tries."""
  out = {}
  for name, spec in sweep.params.items():
    values = grid_values(spec)
    if values is None:
      raise ConfigError(
        f'config.sweep.params.{name}: a grid sweep needs values or a step, not a continuous range'
      )
    out[name] = values
  return out


def distributions(sweep) -> dict:
  """name -> the optuna distribution the sampler draws it from."""
  out = {}
  for name, spec in sweep.params.items():
    log, step = spec.get('log', False), spec.get('step')
    if 'values' in spec or sweep.sampler == 'grid':
      out[name] = D.CategoricalDistribution(grid_values(spec))
    elif name in INTEGER_PARAMS:
      out[name] = D.IntDistribution(spec['low'], spec['high'], log=log, step=step or 1)
    else:
      out[name] = D.FloatDistribution(float(spec['low']), float(spec['high']), log=log, step=step)
  return out


def trial_config(config: ml_collections.ConfigDict, params: dict) -> ml_collections.ConfigDict:
  """The experiment config of one trial: config with its swept values, trained epochs_per_trial."""
  trial = ml_collections.ConfigDict(config.to_dict())
  del trial['sweep']
  trial.num_epochs = config.sweep.epochs_per_trial
  trial.progress = 'lines'  # one compiled call per epoch; a sweep shows no progress bars
  for name, value in params.items():
    if name == 'units':
      trial.model.hidden_sizes = (int(value),) * len(config.model.hidden_sizes)
    elif name == 'seed':
      trial.seed = int(value)
    elif name == 'dropout':
      trial.model.dropout = _clean(value)
    else:
      trial.optimizer.learning_rate = _clean(value)
  return trial


def _clean(value) -> float:
  """A stepped float as written: optuna's 0.15000000000000002 trains as 0.15."""
  return float(f'{float(value):.12g}')
