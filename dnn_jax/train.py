"""train_and_evaluate(config, workdir): build, compile, run scanned epochs, evaluate, log."""

import dataclasses
import functools
import json
import os
import pathlib
import statistics
import time
from typing import Any

import jax
import numpy as np

from dnn_jax import configs, models, optim, parallel, progress, steps, summary
from dnn_jax.data import augment
from dnn_jax.data import splits as data_splits
from dnn_jax.errors import ConfigError, UserError


@dataclasses.dataclass
class Experiment:
  """A config turned into device-resident data and compiled functions, ready to train."""

  config: Any
  mesh: jax.sharding.Mesh
  splits: data_splits.Splits
  model_summary: str
  schedule: Any
  state: steps.TrainState  # the initial state, replicated on the mesh
  arrays: dict  # split name -> (images_N, labels_N) replicated on the mesh
  eval_orders: dict  # split name -> [steps, batch] indices, sharded over the data axis
  epoch_order: Any  # jitted (shuffle_key, epoch) -> [steps, batch] indices
  train_chunk: Any  # jitted fn(state, images, labels, order, key) -> (state, metric sums)
  train_chunks: dict  # chunk length -> train_chunk compiled for it
  evaluators: dict  # split name -> compiled fn(state, images, labels, order) -> metric sums
  shuffle_key: jax.Array
  example_key: jax.Array  # per epoch and example: dropout masks and augmentations
  chunks: list  # (first step, end step) of each compiled call in an epoch
  compile_seconds: float

  @property
  def num_train(self) -> int:
    return len(self.splits.train['label'])

  @property
  def steps_per_epoch(self) -> int:
    return self.chunks[-1][1]


def build(config) -> Experiment:
  """Validates config, loads the data onto the mesh, builds the model and compiles its steps."""
  config = configs.validated(config)
  mesh = parallel.make_mesh(config.num_devices)
  parallel.check_divisible(config.batch_size, mesh)
  splits = data_splits.load(config.data)
  num_train = len(splits.train['label'])
  if config.batch_size > num_train:
    raise ConfigError(
      f'config.batch_size={config.batch_size} is larger than the {num_train:,} training '
      f'examples of {config.data.name}; use at most {num_train}'
    )
  model = models.create(
    config.model, input_shape=splits.image_shape, num_classes=splits.num_classes, seed=config.seed
  )
  model_summary = summary.format_summary(model, splits.image_shape, title=config.model.name)
  steps_per_epoch = -(-num_train // config.batch_size)
  tx = optim.create(config.optimizer, steps_per_epoch, config.num_epochs)
  graphdef, state = steps.init_state(model, tx)
  del model  # from here on the model lives as (graphdef, state) on the mesh

  replicated = parallel.replicated(mesh)
  state = jax.device_put(state, replicated)
  named = {'train': splits.train, 'validation': splits.validation}
  if not splits.validation_is_test:
    named['test'] = splits.test
  arrays = {k: jax.device_put((v['image'], v['label']), replicated) for k, v in named.items()}
  order_sharding = parallel.batch_sharded(mesh, batch_axis=1)
  eval_batch = -(-config.eval_batch_size // mesh.size) * mesh.size  # padded: any size works
  eval_orders = {
    k: jax.device_put(steps.batch_order(len(v['label']), eval_batch), order_sharding)
    for k, v in named.items()
    if k != 'train'
  }
  epoch_order = jax.jit(
    functools.partial(steps.epoch_order, num_examples=num_train, batch_size=config.batch_size),
    out_shardings=order_sharding,
  )
  root_key = jax.random.key(config.seed)
  shuffle_key, example_key = jax.random.fold_in(root_key, 1), jax.random.fold_in(root_key, 2)
  size = config.steps_per_call or steps_per_epoch
  if not config.steps_per_call and progress.shows_bar(config.progress):
    size = -(-steps_per_epoch // progress.BAR_UPDATES_PER_EPOCH)  # a bar that moves
  chunks = [(a, min(a + size, steps_per_epoch)) for a in range(0, steps_per_epoch, size)]

  # Compile ahead of time: compile time is reported apart from training time.
  start = time.perf_counter()
  train_augment, eval_augment = _augmenter(config.augment), _augmenter(config.eval_augment)
  train_chunk = parallel.shard_train_chunk(
    steps.make_train_chunk(graphdef, tx, train_augment), mesh
  )
  order = epoch_order(shuffle_key, 0)
  train_chunks = {}
  for a, b in chunks:
    if b - a not in train_chunks:
      args = (state, *arrays['train'], order[a:b], example_key)
      train_chunks[b - a] = train_chunk.lower(*args).compile()
  evaluate = parallel.shard_evaluate(steps.make_evaluate(graphdef, eval_augment), mesh)
  evaluators, by_shape = {}, {}
  for name, order in eval_orders.items():
    shapes = (arrays[name][0].shape, order.shape)  # equal-sized splits share one executable
    if shapes not in by_shape:
      by_shape[shapes] = evaluate.lower(state, *arrays[name], order).compile()
    evaluators[name] = by_shape[shapes]
  compile_seconds = time.perf_counter() - start

  return Experiment(
    config=config,
    mesh=mesh,
    splits=splits,
    model_summary=model_summary,
    schedule=optim.learning_rate_schedule(config.optimizer, steps_per_epoch, config.num_epochs),
    state=state,
    arrays=arrays,
    eval_orders=eval_orders,
    epoch_order=epoch_order,
    train_chunk=train_chunk,
    train_chunks=train_chunks,
    evaluators=evaluators,
    shuffle_key=shuffle_key,
    example_key=example_key,
    chunks=chunks,
    compile_seconds=compile_seconds,
  )


def _augmenter(chain_config):
  """fn(keys_B, images_BxHxWxC) -> images for a chain config; None when it is empty."""
  if not chain_config:
    return None
  chain = augment.make_chain(chain_config)
  return lambda keys_B, images: augment.augment_batch(chain, keys_B, images)


def train_epoch(exp: Experiment, state, epoch: int, bar: progress.EpochProgress | None = None):
  """One epoch (0-based) of compiled calls; returns (state, metric sums fetched to the host)."""
  order = exp.epoch_order(exp.shuffle_key, epoch)
  epoch_key = jax.random.fold_in(exp.example_key, epoch)
  totals, pending = None, []
  for a, b in exp.chunks:
    state, sums = exp.train_chunks[b - a](state, *exp.arrays['train'], order[a:b], epoch_key)
    pending.append((b, sums))
    if len(pending) > 1:  # read the previous chunk while this one runs: no pipeline bubble
      totals = _add_chunk(pending.pop(0), totals, bar)
  return state, _add_chunk(pending.pop(0), totals, bar)


def _add_chunk(item, totals, bar):
  end_step, sums = item
  sums = {k: np.float64(v) for k, v in jax.device_get(sums).items()}
  totals = sums if totals is None else {k: totals[k] + sums[k] for k in sums}
  if bar:
    bar.update(end_step, steps.means(totals))
  return totals


def evaluate(exp: Experiment, state, split: str) -> dict:
  """{'loss', 'accuracy'} over the whole split ('validation' or 'test')."""
  if split == 'test' and exp.splits.validation_is_test:
    split = 'validation'
  sums = exp.evaluators[split](state, *exp.arrays[split], exp.eval_orders[split])
  return steps.means(jax.device_get(sums))


def train_and_evaluate(config, workdir) -> dict:
  """Trains config's experiment into workdir; returns what it writes to metrics.json.

  Args:
    config: an experiment ConfigDict (see experiments/base.py).
    workdir: where metrics.json goes; created if missing.
  """
  configs.validated(config)  # a bad value must not leave an empty workdir behind
  workdir = _prepare_workdir(workdir)
  exp = build(config)
  config, mesh = exp.config, exp.mesh
  print(exp.model_summary)
  print(
    f'Train on {exp.num_train:,} samples, validate on '
    f'{len(exp.splits.validation["label"]):,} samples; {mesh.size} '
    f'{mesh.devices.flat[0].platform} device(s), batch {config.batch_size} '
    f'({config.batch_size // mesh.size} per device), {exp.steps_per_epoch} steps per epoch in '
    f'{len(exp.chunks)} compiled call(s); compiled in {exp.compile_seconds:.1f}s',
    flush=True,
  )
  device = mesh.devices.flat[0]
  result = {
    'config': json.loads(config.to_json()),
    'history': [],
    'devices': {'platform': device.platform, 'kind': device.device_kind, 'count': mesh.size},
    'compile_seconds': exp.compile_seconds,
  }
  state, train_seconds = exp.state, []
  for epoch in range(config.num_epochs):
    bar = progress.EpochProgress(epoch + 1, config.num_epochs, exp.steps_per_epoch, config.progress)
    start = time.perf_counter()
    state, sums = train_epoch(exp, state, epoch, bar)
    train_seconds.append(time.perf_counter() - start)
    train, val = steps.means(sums), evaluate(exp, state, 'validation')
    record = {
      'epoch': epoch + 1,
      'loss': train['loss'],
      'accuracy': train['accuracy'],
      'val_loss': val['loss'],
      'val_accuracy': val['accuracy'],
      'seconds': time.perf_counter() - start,
      'train_seconds': train_seconds[-1],
      'learning_rate': float(exp.schedule(int(state.step) - 1)),
    }
    result['history'].append(record)
    result['train_samples_per_sec'] = exp.num_train / statistics.median(train_seconds)
    best = max(result['history'], key=lambda h: h['val_accuracy'])  # first of equals
    result['best'] = {k: best[k] for k in ('epoch', 'val_accuracy', 'val_loss')}
    bar.end(record['seconds'], {k: record[k] for k in list(record)[1:5]})
    write_json(workdir / 'metrics.json', result)

  result['test'] = evaluate(exp, state, 'test')
  write_json(workdir / 'metrics.json', result)
  print(f'Test loss: {result["test"]["loss"]:.4f}')
  print(f'Test accuracy: {result["test"]["accuracy"]:.4f}')
  return result


def _prepare_workdir(workdir) -> pathlib.Path:
  workdir = pathlib.Path(workdir)
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / f'.write-test-{os.getpid()}'
    probe.write_text('')
    probe.unlink()
  except OSError as e:
    raise UserError(
      f'workdir {workdir} is not writable ({e.strerror}); pass another --workdir'
    ) from e
  return workdir


def write_json(path: pathlib.Path, obj) -> None:
  """Writes atomically, so a reader or a crash never sees half a file."""
  tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
  tmp.write_text(json.dumps(obj, indent=2) + '\n')
  os.replace(tmp, path)
