"""A trained run read back from its workdir: metrics.json, a checkpoint's weights, its data."""

import dataclasses
import json
import pathlib

import ml_collections
from flax import nnx

from dnn_jax import checkpoint, inference, lr_find
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
    found = ''
    if (workdir / lr_find.JSON).is_file():  # a range test's workdir, before its training run
      found = f'it holds a learning-rate range test only ({workdir / lr_find.PNG}); '
    raise UserError(
      f'no metrics.json in {workdir}; {found}' + checkpoint.TRAIN_HINT.format(workdir)
    )
  restored = inference.load(workdir, which)
  splits = data_splits.load(restored.config.data)
  return Run(
    workdir=workdir,
    config=restored.config,
    metrics=json.loads(metrics_path.read_text()),
    step=restored.step,
    steps_per_epoch=restored.steps_per_epoch,
    which=restored.which,
    note=restored.note,
    splits=splits,
    model=restored.model,
  )
