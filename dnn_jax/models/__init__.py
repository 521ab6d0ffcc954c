"""Model registry: `config.model.name` -> a Flax NNX module class."""

import inspect

from flax import nnx

from dnn_jax.errors import ConfigError
from dnn_jax.models import layers
from dnn_jax.models.cnn import CNN
from dnn_jax.models.mlp import MLP
from dnn_jax.models.resnet import ResNetV2

MODELS = {
  'mlp': MLP,
  'cnn': CNN,
  'resnet_v2': ResNetV2,
}


def create(model_config, *, input_shape, num_classes: int, seed: int) -> nnx.Module:
  """Builds the model named by model_config.name with the rest of model_config as kwargs."""
  kwargs = dict(model_config)
  name = kwargs.pop('name')
  if name not in MODELS:
    raise ConfigError(f'unknown model {name!r}; choose one of {", ".join(sorted(MODELS))}')
  accepted = set(inspect.signature(MODELS[name].__init__).parameters) - {
    'self',
    'input_shape',
    'num_classes',
  }
  unknown = sorted(set(kwargs) - accepted)
  if unknown:
    raise ConfigError(
      f'config.model.{unknown[0]} is not an argument of {name!r}; '
      f'it takes {", ".join(sorted(accepted - {"rngs"}))}'
    )
  with layers.numbered_dropouts():  # each Dropout's mask its own, with no salt passed by hand
    return MODELS[name](
      input_shape=tuple(input_shape), num_classes=num_classes, rngs=nnx.Rngs(params=seed), **kwargs
    )
