"""Model registry: `config.model.name` -> a Flax NNX module class."""

from flax import nnx

from dnn_jax.errors import ConfigError
from dnn_jax.models.mlp import MLP

MODELS = {
  'mlp': MLP,
}


def create(model_config, *, input_shape, num_classes: int, seed: int) -> nnx.Module:
  """Builds the model named by model_config.name with the rest of model_config as kwargs."""
  kwargs = dict(model_config)
  name = kwargs.pop('name')
  if name not in MODELS:
    raise ConfigError(f'unknown model {name!r}; choose one of {", ".join(sorted(MODELS))}')
  return MODELS[name](
    input_shape=tuple(input_shape), num_classes=num_classes, rngs=nnx.Rngs(params=seed), **kwargs
  )
