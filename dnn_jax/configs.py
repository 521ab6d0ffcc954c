"""Config validation: every user mistake becomes one ConfigError line, before any compilation."""

import copy
import math
import pathlib

import ml_collections

from dnn_jax import callbacks, models, optim, parallel
from dnn_jax.data import augment, catalog
from dnn_jax.errors import ConfigError

PROGRESS = ('auto', 'bar', 'lines')
ON_NONFINITE = ('stop', 'skip_step')
PARALLEL = ('sharded', 'pmap')
DTYPES = ('float32', 'bfloat16')
PIPELINES = ('device', 'grain', 'auto')
# Keys added since older runs saved their configs, with the value those runs had in effect.
ADDED = {
  'data': {'pipeline': 'device', 'device_budget_mb': 0, 'workers': 0},
  'distributed': {'cluster': 'auto'},
  'log': {'csv': False, 'wandb': False, 'wandb_project': 'dnn_jax'},
  'profile': {'start_step': -1, 'num_steps': 10},
  'ema': {'decay': 0.0, 'warmup': True},
  'reduce_lr_on_plateau': {
    'enabled': False, 'monitor': 'val_loss', 'factor': 0.1, 'patience': 10, 'min_delta': 1e-4,
    'cooldown': 0, 'min_lr': 0.0, 'mode': 'auto',
  },
  'early_stopping': {
    'enabled': False, 'monitor': 'val_loss', 'patience': 0, 'min_delta': 0.0, 'mode': 'auto',
    'restore_best_weights': False,
  },
}  # fmt: skip


def _choice(value, choices, key):
  if value not in choices:
    raise ConfigError(f'unknown {key} {value!r}; choose one of {", ".join(map(str, choices))}')


def _positive(config, key, kind=(int,), allow_zero=False):
  value = config
  for part in key.split('.'):
    value = value[part]
  number = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
  if not number or value < 0 or (value == 0 and not allow_zero):
    rule = 'a non-negative' if allow_zero else 'a positive'
    kind_name = 'integer' if kind == (int,) else 'finite number'
    raise ConfigError(f'config.{key}={value!r} must be {rule} {kind_name}')


def validated(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Returns config unchanged, or raises ConfigError naming the bad value and the fix."""
  models.check_arguments(config.model)
  catalog.get(config.data.name)
  optim.check(config.optimizer)
  _choice(config.optimizer.schedule, sorted(optim.SCHEDULES), 'schedule')
  _choice(config.progress, PROGRESS, 'progress')
  _choice(config.on_nonfinite, ON_NONFINITE, 'on_nonfinite')
  _choice(config.parallel, PARALLEL, 'parallel')
  _choice(config.dtype, DTYPES, 'dtype')
  _choice(config.data.pipeline, PIPELINES, 'data.pipeline')
  _choice(config.distributed.cluster, parallel.cluster_names(), 'distributed.cluster')
  if not isinstance(config.log.csv, bool):
    raise ConfigError(f'config.log.csv={config.log.csv!r} must be True or False')
  _check_wandb(config.log)
  _check_profile(config.profile)
  for key in ('data.device_budget_mb', 'data.workers'):
    _positive(config, key, allow_zero=True)
  _positive(config, 'optimizer.learning_rate', kind=(int, float))
  for key in ('batch_size', 'eval_batch_size', 'num_epochs', 'grad_accum_steps'):
    _positive(config, key)
  _positive(config, 'checkpoint.max_to_keep')
  for key in ('steps_per_call', 'num_devices', 'checkpoint.every_steps'):
    _positive(config, key, allow_zero=True)
  _check_callbacks(config)
  decay = config.ema.decay
  if not isinstance(decay, int | float) or isinstance(decay, bool) or not 0 <= decay < 1:
    raise ConfigError(
      f'config.ema.decay={decay!r} must be in [0, 1) (e.g. 0.999; 0 = no weight average)'
    )
  if not isinstance(config.ema.warmup, bool):
    raise ConfigError(f'config.ema.warmup={config.ema.warmup!r} must be True or False')
  target = config.get('stop_at_accuracy', 0.0)  # absent from configs saved before it existed
  if not isinstance(target, int | float) or not 0 <= target <= 1:  # NaN too
    raise ConfigError(
      f'config.stop_at_accuracy={target!r} must be in [0, 1] (a validation accuracy; 0 = off)'
    )
  dropout = config.model.get('dropout', 0.0)
  if not 0.0 <= dropout < 1.0:
    raise ConfigError(f'config.model.dropout={dropout!r} must be in [0, 1)')
  for size in config.model.get('hidden_sizes', ()):
    if not isinstance(size, int) or size <= 0:
      raise ConfigError(f'config.model.hidden_sizes={config.model.hidden_sizes!r} must be > 0')
  if config.init_from and not pathlib.Path(config.init_from).exists():
    raise ConfigError(
      f'config.init_from={config.init_from!r} does not exist; give a workdir, its '
      f'checkpoints/ directory or a checkpoints/<step> directory'
    )
  augment.make_chain(config.augment)  # raises on an unknown op or parameter
  augment.make_chain(config.eval_augment)
  return config


def _check_wandb(log) -> None:
  if not isinstance(log.wandb, bool):
    raise ConfigError(f'config.log.wandb={log.wandb!r} must be True or False')
  if not isinstance(log.wandb_project, str) or not log.wandb_project:
    raise ConfigError(f'config.log.wandb_project={log.wandb_project!r} must be a project name')


def _check_profile(profile) -> None:
  start, num_steps = profile.start_step, profile.num_steps
  if not isinstance(start, int) or isinstance(start, bool) or start < -1:
    raise ConfigError(
      f'config.profile.start_step={start!r} must be the first step to trace (>= 0), or -1 for '
      f'no profile'
    )
  if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
    raise ConfigError(f'config.profile.num_steps={num_steps!r} must be a positive integer')


def _check_callbacks(config) -> None:
  """Keras's ReduceLROnPlateau and EarlyStopping arguments, as Keras checks them and more."""
  for name in ('reduce_lr_on_plateau', 'early_stopping'):
    section = config[name]
    for key in ('enabled',) + (('restore_best_weights',) if name == 'early_stopping' else ()):
      if not isinstance(section[key], bool):
        raise ConfigError(f'config.{name}.{key}={section[key]!r} must be True or False')
    _choice(section.monitor, callbacks.MONITORS, f'{name}.monitor')
    _choice(section.mode, callbacks.MODES, f'{name}.mode')
    _positive(config, f'{name}.patience', allow_zero=True)
    _positive(config, f'{name}.min_delta', kind=(int, float), allow_zero=True)
  plateau = config.reduce_lr_on_plateau
  _positive(config, 'reduce_lr_on_plateau.cooldown', allow_zero=True)
  _positive(config, 'reduce_lr_on_plateau.min_lr', kind=(int, float), allow_zero=True)
  if not isinstance(plateau.factor, int | float) or not 0 < plateau.factor < 1:
    raise ConfigError(
      f'config.reduce_lr_on_plateau.factor={plateau.factor!r} must be in (0, 1): the new '
      f'learning rate is the old one times it'
    )


def check_vmappable(config, command: str) -> None:
  """Raises ConfigError for what trials trained side by side in one program cannot do."""
  if config.grad_accum_steps != 1:  # the trials' optimizer is vmapped.scaled_optimizer
    raise ConfigError(
      f'config.grad_accum_steps={config.grad_accum_steps} is not supported by {command}; use 1'
    )
  if config.data.pipeline != 'device':  # the trials share one device-resident copy
    raise ConfigError(
      f'{command} keeps its data on the device; config.data.pipeline={config.data.pipeline!r} '
      f"is not supported here, use 'device'"
    )
  if config.ema.decay:
    raise ConfigError(f'config.ema.decay is not supported by {command}; use 0')
  for name in ('reduce_lr_on_plateau', 'early_stopping'):
    if config[name].enabled:
      raise ConfigError(
        f'config.{name} is not supported by {command} (its trials share one program); '
        f'set --config.{name}.enabled=False'
      )


def from_saved(saved: dict) -> ml_collections.ConfigDict:
  """A config as a checkpoint or metrics.json saved it, validated.

  Keys that older dnn_jax versions wrote but never read are dropped, so their runs still
  evaluate and report: `loss`, and every optimizer's arguments beside the one it named; keys
  added since are filled in with the values those runs had in effect.
  """
  saved = copy.deepcopy(dict(saved))
  saved.pop('loss', None)
  for section, added in ADDED.items():
    saved[section] = {**added, **saved.get(section, {})}
  saved.setdefault('grad_accum_steps', 1)  # added since, too
  optimizer = saved.get('optimizer', {})
  taken = {*optim.SHARED_KEYS, *optim.arguments(optimizer.get('name', ''))}
  saved['optimizer'] = {k: v for k, v in optimizer.items() if k in taken}
  return validated(ml_collections.ConfigDict(saved))


def create_model(config: ml_collections.ConfigDict, seed: int | None = None):
  """config.model built for config.data's image shape and class count (seed: config.seed)."""
  dataset = catalog.get(config.data.name)
  return models.create(
    config.model,
    input_shape=dataset.image_shape,
    num_classes=dataset.num_classes,
    seed=config.seed if seed is None else seed,
  )
