"""What the peers' twins of a dnn_jax config can build: the Keras and torch sides alike."""

from dnn_jax.errors import UserError

MODELS = ('mlp', 'cnn', 'resnet_v2')
OPTIMIZERS = ('adam', 'rmsprop', 'adadelta', 'sgd')


def check(config) -> None:
  """One line naming what the peers cannot build, before any peer process starts."""
  if config.model.name not in MODELS:
    raise UserError(
      f'the peers have no twin of model {config.model.name!r} (they build {", ".join(MODELS)}); '
      'time dnn_jax alone: leave out --peers'
    )
  if config.optimizer.name not in OPTIMIZERS:
    raise UserError(
      f'the peers have no twin of optimizer {config.optimizer.name!r} (they use '
      f'{", ".join(OPTIMIZERS)}); time dnn_jax alone: leave out --peers'
    )


# What the Keras twin of a training recipe (benchmarks/tta_keras.py) reproduces beyond the
# model and optimizer: these learning-rate schedules, and these augmentation ops with these
# probabilities (Keras's RandomTranslation always shifts; RandomFlip flips half the images).
SCHEDULES = ('constant', 'inverse_time', 'piecewise', 'cosine')
AUGMENT_OPS = {'random_shift': 1.0, 'flip_left_right': 0.5}


def check_fit_recipe(config) -> None:
  """One line naming what of config's schedule or augmentation the Keras twin cannot match."""
  hint = "run dnn_jax alone with --peers=''"
  if config.optimizer.schedule not in SCHEDULES:
    raise UserError(
      f'the Keras twin has no {config.optimizer.schedule!r} learning-rate schedule (it has '
      f'{", ".join(SCHEDULES)}); {hint}'
    )
  if config.eval_augment:
    raise UserError(f'the Keras twin augments no evaluation images (config.eval_augment); {hint}')
  for name, op in (config.augment or {}).items():
    if AUGMENT_OPS.get(name) != op.get('p'):
      wanted = ', '.join(f'{n} (p={p})' for n, p in AUGMENT_OPS.items())
      raise UserError(
        f'the Keras twin cannot augment with {name} (p={op.get("p")}); it has {wanted}; {hint}'
      )
