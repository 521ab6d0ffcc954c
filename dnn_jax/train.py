"""train_and_evaluate(config, workdir): build, compile, run scanned epochs, evaluate, log."""

import functools
import json
import os
import pathlib
import statistics
import time

import jax
import numpy as np

from dnn_jax import configs, data, models, optim, parallel, steps, summary
from dnn_jax.errors import ConfigError, UserError
from dnn_jax.progress import EpochProgress


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


def _chunks(steps_per_epoch: int, steps_per_call: int) -> list[tuple[int, int]]:
  size = steps_per_call or steps_per_epoch
  return [(a, min(a + size, steps_per_epoch)) for a in range(0, steps_per_epoch, size)]


def _devices(mesh) -> dict:
  device = mesh.devices.flat[0]
  return {'platform': device.platform, 'kind': device.device_kind, 'count': mesh.size}


def train_and_evaluate(config, workdir) -> dict:
  """Trains config's experiment into workdir; returns what it writes to metrics.json.

  Args:
    config: an experiment ConfigDict (see experiments/base.py).
    workdir: where metrics.json goes; created if missing.
  """
  config = configs.validated(config)
  mesh = parallel.make_mesh(config.num_devices)
  parallel.check_divisible(config.batch_size, mesh)
  workdir = _prepare_workdir(workdir)
  splits = data.load(config.data)
  num_train = len(splits.train['label'])
  if config.batch_size > num_train:
    raise ConfigError(
      f'config.batch_size={config.batch_size} is larger than the {num_train:,} training '
      f'examples of {config.data.name}; use at most {num_train}'
    )

  model = models.create(
    config.model,
    input_shape=splits.image_shape,
    num_classes=splits.num_classes,
    seed=config.seed,
  )
  print(summary.format_summary(model, splits.image_shape, title=config.model.name))
  tx = optim.create(config.optimizer)
  schedule = optim.learning_rate_schedule(config.optimizer)
  graphdef, state = steps.init_state(model, tx)
  del model  # from here on the model lives as (graphdef, state) on the mesh

  replicated = parallel.replicated(mesh)
  state = jax.device_put(state, replicated)
  on_device = {
    name: jax.device_put((split['image'], split['label']), replicated)
    for name, split in (('train', splits.train), ('validation', splits.validation))
  }
  if not splits.validation_is_test:
    on_device['test'] = jax.device_put((splits.test['image'], splits.test['label']), replicated)

  # Compiled functions: a chunk of scanned train steps, a whole-split evaluation, the order.
  train_chunk = parallel.shard_train_chunk(steps.make_train_chunk(graphdef, tx), mesh)
  evaluate = parallel.shard_evaluate(steps.make_evaluate(graphdef), mesh)
  order_sharding = parallel.batch_sharded(mesh, batch_axis=1)
  epoch_order = jax.jit(
    functools.partial(steps.epoch_order, num_examples=num_train, batch_size=config.batch_size),
    out_shardings=order_sharding,
  )
  eval_batch = -(-config.eval_batch_size // mesh.size) * mesh.size  # padded, so any size works
  eval_orders = {
    name: jax.device_put(steps.batch_order(len(arrays[1]), eval_batch), order_sharding)
    for name, arrays in on_device.items()
    if name != 'train'
  }

  root_key = jax.random.key(config.seed)
  shuffle_key, dropout_key = jax.random.fold_in(root_key, 1), jax.random.fold_in(root_key, 2)
  steps_per_epoch = -(-num_train // config.batch_size)
  chunks = _chunks(steps_per_epoch, config.steps_per_call)

  compile_start = time.perf_counter()
  order = epoch_order(shuffle_key, 0)
  compiled = {}
  for a, b in chunks:
    if b - a not in compiled:
      args = (state, *on_device['train'], order[a:b], dropout_key)
      compiled[b - a] = train_chunk.lower(*args).compile()
  evaluate_validation = evaluate.lower(
    state, *on_device['validation'], eval_orders['validation']
  ).compile()
  compile_seconds = time.perf_counter() - compile_start

  per_device = config.batch_size // mesh.size
  print(
    f'Train on {num_train:,} samples, validate on {len(splits.validation["label"]):,} samples; '
    f'{mesh.size} {mesh.devices.flat[0].platform} device(s), batch {config.batch_size} '
    f'({per_device} per device), {steps_per_epoch} steps per epoch in {len(chunks)} '
    f'compiled call(s); compiled in {compile_seconds:.1f}s',
    flush=True,
  )

  history, train_seconds = [], []
  result = {
    'config': json.loads(config.to_json()),
    'history': history,
    'devices': _devices(mesh),
    'compile_seconds': compile_seconds,
  }
  for epoch in range(config.num_epochs):
    progress = EpochProgress(epoch + 1, config.num_epochs, steps_per_epoch, config.progress)
    start = time.perf_counter()
    order = epoch_order(shuffle_key, epoch)
    epoch_key = jax.random.fold_in(dropout_key, epoch)
    totals, pending = None, []
    for a, b in chunks:
      state, sums = compiled[b - a](state, *on_device['train'], order[a:b], epoch_key)
      pending.append((b, sums))
      if len(pending) > 1:  # read the previous chunk while this one runs: no pipeline bubble
        totals = _consume(pending.pop(0), totals, progress)
    totals = _consume(pending.pop(0), totals, progress)
    train_seconds.append(time.perf_counter() - start)
    val_sums = evaluate_validation(state, *on_device['validation'], eval_orders['validation'])
    val = steps.means(jax.device_get(val_sums))
    seconds = time.perf_counter() - start
    train = steps.means(totals)
    record = {
      'epoch': epoch + 1,
      'loss': train['loss'],
      'accuracy': train['accuracy'],
      'val_loss': val['loss'],
      'val_accuracy': val['accuracy'],
      'seconds': seconds,
      'learning_rate': float(schedule(int(state.step) - 1)),
    }
    history.append(record)
    shown = {k: record[k] for k in ('loss', 'accuracy', 'val_loss', 'val_accuracy')}
    progress.end(seconds, shown)
    result['train_samples_per_sec'] = num_train / statistics.median(train_seconds)
    write_json(workdir / 'metrics.json', result)

  if splits.validation_is_test:
    test = {'loss': history[-1]['val_loss'], 'accuracy': history[-1]['val_accuracy']}
  else:
    test_sums = evaluate(state, *on_device['test'], eval_orders['test'])
    test = steps.means(jax.device_get(test_sums))
  result['test'] = test
  write_json(workdir / 'metrics.json', result)
  print(f'Test loss: {test["loss"]:.4f}')
  print(f'Test accuracy: {test["accuracy"]:.4f}')
  return result


def _consume(item, totals, progress):
  """Adds one chunk's fetched metric sums to the epoch totals and redraws the progress bar."""
  step, sums = item
  sums = jax.device_get(sums)
  totals = sums if totals is None else {k: totals[k] + sums[k] for k in sums}
  progress.update(step, steps.means(totals))
  return {k: np.float64(v) for k, v in totals.items()}
