"""A trained run read back from its workdir: metrics.json, a checkpoint's weights, its data."""

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from dnn_jax import checkpoint, configs, steps
from dnn_jax.data import splits as data_splits
from dnn_jax.errors import UserError


@dataclasses.dataclass
class Run:
  """What the report draws from: the run's record, its data and its model at one checkpoint."""

  workdir: pathlib.Path
  config: ml_collections.ConfigDict  # the config the checkpoint was saved with
  metrics: dict  # metrics.json
  step: int
  steps_per_epoch: int
  which: str  # how the checkpoint was chosen: 'best', 'latest' or 'step'
  note: str | None  # why another checkpoint than the one asked for was taken
  splits: data_splits.Splits
  model: nnx.Module  # with the checkpoint's params and BatchNorm statistics

  @property
  def epochs_done(self) -> float:
    return self.step / self.steps_per_epoch


def load(workdir, which: str = 'best') -> Run:
  """Reads workdir's metrics.json and checkpoint `which`, its dataset, and rebuilds its model."""
  workdir = pathlib.Path(workdir)
  metrics_path = workdir / 'metrics.json'
  if not metrics_path.is_file():
    raise UserError(f'no metrics.json in {workdir}; ' + checkpoint.TRAIN_HINT.format(workdir))
  source = checkpoint.open_saved(workdir)
  step, chosen, note = checkpoint.choose_step(source, which)
  meta = source.read_meta(step)
  config = configs.from_saved(meta['config'])
  splits = data_splits.load(config.data)
  # Shapes only: initializing the weights that the checkpoint replaces would compile and run
  # every initializer (seconds on a CPU).
  model = nnx.eval_shape(lambda: configs.create_model(config))
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  on_device = lambda tree: jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree
  )
  target = steps.TrainState(
    jnp.zeros([], jnp.int32), on_device(params), on_device(model_state), opt_state=None
  )
  state, _ = source.restore(step, target, items=('params', 'model_state'))
  source.close()
  return Run(
    workdir=workdir,
    config=config,
    metrics=json.loads(metrics_path.read_text()),
    step=step,
    steps_per_epoch=meta['steps_per_epoch'],
    which=chosen,
    note=note,
    splits=splits,
    model=nnx.merge(graphdef, state.params, state.model_state),
  )
