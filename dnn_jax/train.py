"""train_and_evaluate(config, workdir): start or resume, train, checkpoint, evaluate, log."""

import contextlib
import dataclasses
import io
import json
import pathlib
import shutil
import statistics
import sys
import time

import jax
import numpy as np

from dnn_jax import (
  checkpoint,
  configs,
  experiment,
  files,
  parallel,
  preemption,
  progress,
  steps,
  tensorboard,
)
from dnn_jax import workdir as workdir_lib
from dnn_jax.errors import CheckpointError, DiskFullError, NonFiniteError, UserError

METRIC_SUMS = ('loss', 'correct', 'count', 'nonfinite')


@dataclasses.dataclass
class Progress:
  """Where a run stands, on the host; saved in every checkpoint's meta so it resumes exactly."""

  step: int = 0  # optimizer steps taken (= batches consumed) since the run began
  history: list = dataclasses.field(default_factory=list)  # metrics.json's, per epoch
  train_seconds: list = dataclasses.field(default_factory=list)  # per finished epoch
  epoch_sums: dict | None = None  # float64 metric sums of the current epoch so far
  epoch_seconds: float = 0.0  # training time spent in the current epoch so far


def train_and_evaluate(config, workdir) -> dict:
  """Trains config's experiment into workdir, resuming from its latest checkpoint if any.

  Args:
    config: an experiment ConfigDict (see experiments/base.py).
    workdir: metrics.json and checkpoints/ go here; created if missing.

  Returns:
    What it writes to metrics.json; with 'preempted' if a SIGTERM/SIGINT stopped it.
  """
  configs.validated(config)  # a bad value must not leave an empty workdir behind
  created = not pathlib.Path(workdir).exists()
  workdir = workdir_lib.prepare(workdir)
  try:
    parallel.initialize_distributed(config.distributed)  # before the lock: process 0 holds it
    with workdir_lib.locked(workdir), preemption.StopRequests() as stop:
      exp = experiment.setup(config)
      ckpts = checkpoint.Checkpoints(
        workdir / 'checkpoints', config.checkpoint.max_to_keep, config.checkpoint.async_save
      )
      try:
        result = _run(exp, ckpts, workdir, stop)
      except BaseException:
        ckpts.close(raise_errors=False)  # the first error is the one to report
        raise
      ckpts.close()  # waits for the saves in flight
      return result
  except DiskFullError as e:
    raise DiskFullError(e.activity, e.detail, _last_complete(workdir)) from e
  except UserError:
    if created and not any(p.name.isdigit() for p in workdir.glob('checkpoints/*')):
      shutil.rmtree(workdir, ignore_errors=True)  # nothing worth keeping: leave no trace
    raise


def _run(exp, ckpts, workdir: pathlib.Path, stop) -> dict:
  """Starts or resumes, compiles, and trains; in a multi-process run process 0 speaks."""
  quiet = jax.process_index() != 0
  state, run, start_note = _start(exp, ckpts)  # before compiling: a misfit fails fast
  experiment.compile_training(exp)
  board = tensorboard.Writer(workdir, exp, run)  # process 0 writes
  with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
    _print_header(exp, start_note)
    return _train(exp, ckpts, state, run, workdir, stop, board)


def _last_complete(workdir: pathlib.Path) -> str:
  """Where a run that stopped for a full disk can resume from, for its error line."""
  step = checkpoint.last_complete_step(workdir / 'checkpoints')
  if step is None:
    return 'no checkpoint is complete yet'
  return f'the last complete checkpoint is {workdir / "checkpoints" / str(step)}'


def _start(exp: experiment.Experiment, ckpts: checkpoint.Checkpoints):
  """(state, Progress, a line saying where the run starts) from a checkpoint or from scratch."""
  config = exp.config
  found = ckpts.restore_latest(exp.state)
  if found:
    state, meta, step = found
    path = ckpts.directory / str(step)
    _check_same_run(meta, exp, path)
    state = state.replace(step=parallel.put(np.int32(step), exp.state.step.sharding))
    keys = {k: jax.random.wrap_key_data(np.array(v, np.uint32)) for k, v in meta['rng'].items()}
    exp.shuffle_key, exp.example_key = keys['shuffle'], keys['example']
    run = Progress(**{f.name: meta[f.name] for f in dataclasses.fields(Progress)})
    epoch, in_epoch = divmod(step, exp.steps_per_epoch)
    where = (
      'the run is complete'
      if step >= config.num_epochs * exp.steps_per_epoch or _reached_target(config, run)
      else f'epoch {epoch + 1}/{config.num_epochs}, step {in_epoch}/{exp.steps_per_epoch}'
    )
    return state, run, f'Resuming from {path} ({where})'
  if config.init_from:
    try:
      source, step = checkpoint.open_source(config.init_from)
    except CheckpointError as e:
      raise CheckpointError(f'config.init_from: {e}') from None
    try:
      state, _ = source.restore(step, exp.state, items=('params', 'model_state'))
    except CheckpointError as e:
      raise CheckpointError(f'config.init_from: {e}') from None
    path = source.directory / str(step)
    return state, Progress(), f'Initialized weights from {path}; the optimizer starts afresh'
  return exp.state, Progress(), None


def _check_same_run(meta: dict, exp: experiment.Experiment, path) -> None:
  saved = (meta['num_train'], meta['steps_per_epoch'])
  if saved != (exp.num_train, exp.steps_per_epoch):
    raise CheckpointError(
      f'checkpoint {path} was saved with {saved[0]:,} training examples in {saved[1]} steps '
      f'per epoch, this config has {exp.num_train:,} in {exp.steps_per_epoch}; resume with the '
      f'same data.train_split and batch_size, or use another --workdir '
      f'(--config.init_from={path} starts a new run from its weights)'
    )


def _print_header(exp: experiment.Experiment, start_note: str | None) -> None:
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
  if start_note:
    print(start_note, flush=True)


def _train(exp, ckpts, state, run: Progress, workdir: pathlib.Path, stop, board) -> dict:
  config = exp.config
  device = exp.mesh.devices.flat[0]
  result = {
    'config': json.loads(config.to_json()),
    'history': run.history,
    'devices': {'platform': device.platform, 'kind': device.device_kind, 'count': exp.mesh.size},
    'compile_seconds': exp.compile_seconds,
    'data_seconds': exp.data_seconds,
  }
  _summarize(result, run, exp)
  total_steps = config.num_epochs * exp.steps_per_epoch
  try:
    while run.step < total_steps and not _reached_target(config, run):
      stopped = bool(stop.signal)
      if not stopped:
        state, stopped, bar = _train_epoch(exp, ckpts, state, run, stop)
      if stopped:
        _save(exp, ckpts, state, run)  # a no-op when this step is saved already
        ckpts.wait()
        print(f'preempted at step {run.step}; run the same command to resume', flush=True)
        result['preempted'] = {'step': run.step, 'signal': stop.signal}
        write_json(workdir / 'metrics.json', result)
        return result
      _end_epoch(exp, ckpts, state, run, bar)
      _summarize(result, run, exp)
      write_json(workdir / 'metrics.json', result)
      board.write_epoch(run.history[-1])
  except NonFiniteError as e:
    ckpts.wait()
    kept = ckpts.latest_step()
    kept = f'step {kept} in {ckpts.directory}' if kept is not None else 'none (no save yet)'
    raise NonFiniteError(f'{e}; last good checkpoint: {kept}') from None

  if _reached_target(config, run):
    last = run.history[-1]
    result['stopped_at_accuracy'] = last['epoch']
    print(
      f'Stopped at epoch {last["epoch"]}: val_accuracy {last["val_accuracy"]:.4f} reached '
      f'config.stop_at_accuracy={config.stop_at_accuracy}',
      flush=True,
    )
  result['test'] = experiment.evaluate(exp, state, 'test')
  write_json(workdir / 'metrics.json', result)
  board.write_test(result['test'], run.step)
  print(f'Test loss: {result["test"]["loss"]:.4f}')
  print(f'Test accuracy: {result["test"]["accuracy"]:.4f}')
  return result


def _train_epoch(exp, ckpts, state, run: Progress, stop):
  """Trains to the end of the current epoch: (state, stopped early by a signal?, its bar).

  Saves every config.checkpoint.every_steps steps, at the end of the compiled call that reaches
  the multiple. Each call's metrics are read while the next one runs, except where a save
  needs them at once.
  """
  config, steps_per_epoch = exp.config, exp.steps_per_epoch
  every = config.checkpoint.every_steps
  epoch, start = divmod(run.step, steps_per_epoch)
  first_step = epoch * steps_per_epoch
  bar = progress.EpochProgress(epoch + 1, config.num_epochs, steps_per_epoch, config.progress)
  order = exp.epoch_order(exp.shuffle_key, epoch)
  epoch_key = jax.random.fold_in(exp.example_key, epoch)
  seconds_before, began = run.epoch_seconds, time.perf_counter()
  pending = None
  for a, b in exp.chunks_from(start):
    if stop.signal:
      break
    train_chunk = exp.compiled_chunk(b - a)
    state, sums = train_chunk(state, *exp.arrays['train'], order[a:b], epoch_key)
    if pending:  # read the previous call's metrics while this one runs: no pipeline bubble
      _absorb(exp, run, *pending, bar)
    pending = (b - a, sums)
    crossed = every and (first_step + a) // every < (first_step + b) // every
    if crossed and b < steps_per_epoch:  # the epoch's end has a checkpoint of its own
      _absorb(exp, run, *pending, bar)
      pending = None
      run.epoch_seconds = seconds_before + time.perf_counter() - began
      _save(exp, ckpts, state, run)
  if pending:
    _absorb(exp, run, *pending, bar)
  run.epoch_seconds = seconds_before + time.perf_counter() - began
  return state, run.step % steps_per_epoch != 0, bar


def _reached_target(config, run: Progress) -> bool:
  """Whether the last finished epoch reached config.stop_at_accuracy (0: never stop early)."""
  target = config.get('stop_at_accuracy', 0.0)
  return bool(target and run.history and run.history[-1]['val_accuracy'] >= target)


def _absorb(exp, run: Progress, num_steps: int, sums, bar) -> None:
  """Adds a compiled call's fetched metric sums to the epoch's; stops on a non-finite loss."""
  sums = jax.device_get(sums)
  if sums['nonfinite'] and exp.config.on_nonfinite == 'stop':
    step = int(sums['first_nonfinite'])
    raise NonFiniteError(
      f'non-finite loss at step {step} (epoch {(step - 1) // exp.steps_per_epoch + 1}); lower '
      f'the learning rate, or set --config.on_nonfinite=skip_step to skip such steps'
    )
  sums = {k: np.float64(sums[k]) for k in METRIC_SUMS}
  totals = run.epoch_sums
  run.epoch_sums = sums if totals is None else {k: totals[k] + sums[k] for k in METRIC_SUMS}
  run.step += num_steps
  bar.update((run.step - 1) % exp.steps_per_epoch + 1, steps.means(run.epoch_sums))


def _end_epoch(exp, ckpts, state, run: Progress, bar) -> None:
  """Validates, appends the epoch to the history, saves a ranked checkpoint, prints the line."""
  start = time.perf_counter()
  sums = run.epoch_sums or dict.fromkeys(METRIC_SUMS, 0.0)
  train = steps.means(sums)
  val = experiment.evaluate(exp, state, 'validation')
  eval_seconds = time.perf_counter() - start  # the line above waits for its result
  record = {
    'epoch': run.step // exp.steps_per_epoch,
    'loss': train['loss'],
    'accuracy': train['accuracy'],
    'val_loss': val['loss'],
    'val_accuracy': val['accuracy'],
    'seconds': run.epoch_seconds + time.perf_counter() - start,
    'train_seconds': run.epoch_seconds,
    'eval_seconds': eval_seconds,
    'learning_rate': float(exp.schedule(run.step - 1)),
    'nonfinite_steps': int(sums['nonfinite']),
  }
  if record['nonfinite_steps']:
    print(
      f'warning: skipped {record["nonfinite_steps"]} step(s) with a non-finite loss in epoch '
      f'{record["epoch"]}',
      file=sys.stderr,
    )
  run.history.append(record)
  run.train_seconds.append(run.epoch_seconds)
  run.epoch_sums, run.epoch_seconds = None, 0.0
  _save(exp, ckpts, state, run, metrics={'val_accuracy': val['accuracy']})
  bar.end(
    record['seconds'], {k: record[k] for k in ('loss', 'accuracy', 'val_loss', 'val_accuracy')}
  )


def _save(exp, ckpts, state, run: Progress, metrics=None) -> None:
  """Checkpoints state unless it holds NaN/Inf: a checkpoint is always a good one."""
  # Without skip_step the steps do not check params (a pass per step); check them here.
  if not bool(steps.state_is_finite(state)):
    epoch = (run.step - 1) // exp.steps_per_epoch + 1
    raise NonFiniteError(
      f'non-finite params at step {run.step} (epoch {epoch}); lower the learning rate, or '
      f'set --config.on_nonfinite=skip_step to skip such steps'
    )
  ckpts.save(state, _meta(exp, run), metrics)


def _summarize(result: dict, run: Progress, exp) -> None:
  if run.train_seconds:
    result['train_samples_per_sec'] = exp.num_train / statistics.median(run.train_seconds)
  if run.history:
    best = max(run.history, key=lambda h: h['val_accuracy'])  # first of equals
    result['best'] = {k: best[k] for k in ('epoch', 'val_accuracy', 'val_loss')}


def _meta(exp: experiment.Experiment, run: Progress) -> dict:
  """The JSON half of a checkpoint: run progress, RNG keys, and what must match on resume."""
  return {
    **dataclasses.asdict(run),
    'epoch': run.step // exp.steps_per_epoch,
    'steps_per_epoch': exp.steps_per_epoch,
    'num_train': exp.num_train,
    'rng': {
      'shuffle': jax.random.key_data(exp.shuffle_key).tolist(),
      'example': jax.random.key_data(exp.example_key).tolist(),
    },
    'config': json.loads(exp.config.to_json()),
  }


def write_json(path: pathlib.Path, obj) -> None:
  """Writes atomically, so a reader or a crash never sees half a file; process 0 only."""
  if jax.process_index() == 0:
    files.write_json(path, obj)
