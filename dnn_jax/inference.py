"""A run's model restored from one checkpoint for inference: its weights only, no data read."""

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from dnn_jax import checkpoint, configs, steps


@dataclasses.dataclass(frozen=True)
class Restored:
  """A checkpoint's model, called as model(x_BxHxWxC) (evaluation mode), and where it came from."""

  model: nnx.Module
  config: ml_collections.ConfigDict  # as the checkpoint saved it (but conv_implementation)
  step: int
  path: pathlib.Path  # <workdir>/checkpoints/<step>
  which: str  # how the checkpoint was chosen: 'best', 'latest' or 'step'
  note: str | None  # why another checkpoint than the one asked for was taken
  steps_per_epoch: int
  weights: str  # the saved item the params came from: 'params', or 'ema' (their average)

  @property
  def epochs_done(self) -> float:
    return self.step / self.steps_per_epoch


def load(workdir, which: str = 'best', *, conv_implementation: str | None = None) -> Restored:
  """Rebuilds workdir's model at checkpoint `which` (best, latest or a step number).

  conv_implementation: build the convolutions this way instead of as the run did ('xla' for
  export); every implementation holds the same weights (layers.Conv2D), so any one fits.
  """
  workdir = pathlib.Path(workdir)
  source = checkpoint.open_saved(workdir)
  try:
    step, chosen, note = checkpoint.choose_step(source, which)
    meta = source.read_meta(step)
    config = configs.from_saved(meta['config'])
    if conv_implementation and 'conv_implementation' in config.model:
      config.model.conv_implementation = conv_implementation
    # Shapes only: initializing the weights that the checkpoint replaces would compile and run
    # every initializer (seconds on a CPU).
    model = nnx.eval_shape(lambda: configs.create_model(config))
    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
    weights, params, model_state = inference_params(source, step, config, params, model_state)
  finally:
    source.close()
  return Restored(
    model=nnx.merge(graphdef, params, model_state),
    config=config,
    step=step,
    path=source.directory / str(step),
    which=chosen,
    note=note,
    steps_per_epoch=meta['steps_per_epoch'],
    weights=weights,
  )


def inference_params(source: checkpoint.Checkpoints, step: int, config, params, model_state):
  """(item, params, model_state) that inference uses, from checkpoint step, on these shapes.

  The one place that chooses which saved weights serve evaluation-mode inference (export,
  predict, the report): the exponential moving average of the params where the run kept one
  (config.ema.decay > 0), as its evaluation used, else the trained params; with the BatchNorm
  statistics, on the first device.
  """
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  on_device = lambda tree: jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree
  )
  use_ema = (
    config.get('ema', {}).get('decay', 0) > 0 and (source.directory / str(step) / 'ema').is_dir()
  )
  weights = 'ema' if use_ema else 'params'
  target = steps.TrainState(
    jnp.zeros([], jnp.int32), on_device(params), on_device(model_state), opt_state=None
  )
  if use_ema:  # the average has the params' shapes; the params themselves are not read
    target = target.replace(ema=target.params)
  state, _ = source.restore(step, target, items=(weights, 'model_state'))
  return weights, getattr(state, weights), state.model_state
