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
