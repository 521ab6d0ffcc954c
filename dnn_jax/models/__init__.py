"""Models, found by `config.model.name`, and the contract every model keeps.

A model is one file: `dnn_jax/models/<name>.py` (`config.model.name = '<name>'`), or any
importable module named by its dotted path (`config.model.name = 'my_project.vit'`), that
defines `Model`, a Flax NNX module which:

1. Is built as `Model(*, input_shape, num_classes, rngs, **kwargs)`: the dataset's image
   shape (H, W, C) and class count, the parameter RNGs, and every other key of `config.model`
   as a keyword argument (a key the signature lacks is refused by name before anything runs).
2. Is called as `model(x_BxHxWxC, train)` and returns float logits [B, num_classes]; `train`
   is a `layers.Train` while training and None in evaluation. It passes `train` on to every
   layer, so one graph serves both modes.
3. Lists its top-level layers in the order the input flows through them as `self.layers`
   (subclass `layers.Sequential` for that and the call). The summary, the report's
   first-layer filters and the diagram walk it; a block with a skip connection subclasses
   `layers.Residual`, whose `branches()` the diagram draws.
4. Takes randomness and batch statistics from `layers`: `layers.Dropout(rate)` (each gets its
   own mask stream at build, numbered in order, so results do not depend on device count) and
   `layers.BatchNormalization` (statistics that skip batch padding, summed over devices).
5. Declares any loss penalty where its weights live: a module with a `loss_penalty()` method
   (e.g. `layers.Conv2D(l2=...)`) adds what it returns to the training loss. Decoupled weight
   decay belongs to the optimizer instead (`config.optimizer.name = 'adamw'`).

Nothing else needs an edit: training, checkpoints, the summary, the report and the diagram take
any model that keeps this contract (tests/test_new_model.py adds one from outside the package).
"""

import importlib
import inspect
import pkgutil
import re

import ml_collections
from flax import nnx

from dnn_jax.errors import ConfigError
from dnn_jax.models import layers

NAME = re.compile(r'^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$')
BUILT_BY_CREATE = ('self', 'input_shape', 'num_classes', 'rngs')


def available() -> list[str]:
  """The built-in model names: the modules of this package that define `Model`."""
  names = []
  for info in pkgutil.iter_modules(__path__):
    if hasattr(importlib.import_module(f'{__name__}.{info.name}'), 'Model'):
      names.append(info.name)
  return sorted(names)


def model_class(name: str) -> type[nnx.Module]:
  """The `Model` of dnn_jax/models/<name>.py, or of the module a dotted name names."""
  if not isinstance(name, str) or not NAME.match(name):
    raise ConfigError(
      f'config.model.name={name!r} is not a model name; choose one of '
      f'{", ".join(available())}, or give a module path such as my_project.my_model'
    )
  path = name if '.' in name else f'{__name__}.{name}'
  try:
    module = importlib.import_module(path)
  except ModuleNotFoundError as error:
    if error.name is None or not (path == error.name or path.startswith(error.name + '.')):
      raise  # the model's module exists, and something it imports does not
    raise ConfigError(
      f'unknown model {name!r}; choose one of {", ".join(available())}, or give an importable '
      f'module path (e.g. my_project.my_model) defining Model'
    ) from None
  model = getattr(module, 'Model', None)
  if not (isinstance(model, type) and issubclass(model, nnx.Module)):
    raise ConfigError(
      f'config.model.name={name!r}: module {path} defines no `Model` (an nnx.Module class); '
      f'see the contract in dnn_jax/models/__init__.py'
    )
  return model


def check_arguments(model_config) -> type[nnx.Module]:
  """The model class, once every key of model_config is known to be one of its arguments."""
  model = model_class(model_config.name)
  accepted = set(inspect.signature(model.__init__).parameters) - set(BUILT_BY_CREATE)
  unknown = sorted(set(model_config) - {'name'} - accepted)
  if unknown:
    raise ConfigError(
      f'config.model.{unknown[0]} is not an argument of {model_config.name!r}; '
      f'it takes {", ".join(sorted(accepted)) or "none"} (to switch models, set '
      f'config.model = models.model_config(...) in an experiment file)'
    )
  return model


def model_config(name: str, **settings) -> ml_collections.ConfigDict:
  """config.model for `name`: every argument of its Model, at its default but for `settings`.

  Written out in full so that `--config.model.<argument>=v` works on the command line and
  metrics.json records the whole model.
  """
  model = model_class(name)
  section = {'name': name}
  for key, parameter in inspect.signature(model.__init__).parameters.items():
    if key in BUILT_BY_CREATE or parameter.kind in (
      parameter.VAR_KEYWORD,
      parameter.VAR_POSITIONAL,
    ):
      continue
    if key in settings:
      section[key] = settings.pop(key)
    elif parameter.default is parameter.empty:
      raise ConfigError(f'model {name!r} needs {key}=...; pass it to model_config')
    else:
      section[key] = parameter.default
  if settings:
    raise ConfigError(f'{sorted(settings)[0]!r} is not an argument of model {name!r}')
  return ml_collections.ConfigDict(section)


def create(model_config, *, input_shape, num_classes: int, seed: int) -> nnx.Module:
  """Builds the model named by model_config.name with the rest of model_config as kwargs."""
  model = check_arguments(model_config)
  kwargs = {k: v for k, v in dict(model_config).items() if k != 'name'}
  with layers.numbered_dropouts():  # each Dropout's mask its own, with no salt passed by hand
    return model(
      input_shape=tuple(input_shape), num_classes=num_classes, rngs=nnx.Rngs(params=seed), **kwargs
    )
