"""The training loop and its one owner: state, progress, compiled calls, checkpoints, writers."""

import dataclasses
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from dnn_jax import (
  checkpoint,
  epoch_callbacks,
  experiment,
  files,
  logs,
  machine,
  metrics,
  parallel,
  profiling,
  progress,
  steps,
)
from dnn_jax.errors import CheckpointError, NonFiniteError


@dataclasses.dataclass
class Progress:
  """Where a run stands, on the host; saved in every checkpoint's meta so it resumes exactly."""

  step: int = 0  # optimizer steps taken (= batches consumed) since the run began
  history: list = dataclasses.field(default_factory=list)  # metrics.json's, per epoch
  train_seconds: list = dataclasses.field(default_factory=list)  # per finished epoch
  epoch_sums: dict | None = None  # float64 metric sums of the current epoch so far
  epoch_seconds: float = 0.0  # training time spent in the current epoch so far
  # Keras-callback states by name (callbacks.py): reduce_lr_on_plateau, early_stopping.
  callbacks: dict = dataclasses.field(default_factory=dict)
  # Each start that trained: the step it began at and where (commit, CPU, date) it ran.
  starts: list = dataclasses.field(default_factory=list)


class Trainer:
  """Trains an Experiment: the loop, where it stands, and what it saves and writes.

  `checkpoints`, `stop` (a preemption.StopRequests), `board` (logs.Sinks: TensorBoard, W&B) and
  `workdir` (for metrics.json) are optional: without them it trains in memory, as the sweep's
  reference runs and the benchmarks do.
  """

  def __init__(self, exp: experiment.Experiment, *, checkpoints=None, stop=None, workdir=None):
    self.exp, self.config = exp, exp.config
    self.checkpoints, self.stop, self.workdir = checkpoints, stop, workdir
    self.board = None  # set once the start is known: it opens at the run's step
    self.profiler = profiling.Profiler(self.config, exp.steps_per_epoch, workdir)
    self.state = exp.learner.initial_state
    self.progress = Progress()
    self.shuffle_key, self.example_key = experiment.run_keys(self.config.seed)
    self.programs: experiment.Programs | None = None
    self.start_note: str | None = None  # where the run starts, when not from scratch
    self.stream_state = None  # streaming: the train stream's state saved with the resumed step
    self.callbacks = epoch_callbacks.EpochCallbacks(self.config, exp.steps_per_epoch)

  # Setting out ---------------------------------------------------------------------------

  def restore(self) -> None:
    """Continues from the latest checkpoint, or takes config.init_from's weights, if any."""
    config, exp = self.config, self.exp
    found = self.checkpoints.restore_latest(self.state) if self.checkpoints else None
    if found:
      state, meta, step = found
      path = self.checkpoints.directory / str(step)
      _check_same_run(meta, exp, path)
      self.state = state.replace(step=parallel.put(np.int32(step), state.step.sharding))
      keys = {k: jax.random.wrap_key_data(np.array(v, np.uint32)) for k, v in meta['rng'].items()}
      self.shuffle_key, self.example_key = keys['shuffle'], keys['example']
      fields = [f.name for f in dataclasses.fields(Progress)]
      self.progress = Progress(**{k: meta[k] for k in fields if k in meta})  # older: fewer
      self.callbacks.resume(self.progress.callbacks, self.state, self.checkpoints, step)
      if exp.data.streams is not None:
        self.stream_state = self.checkpoints.read_stream_state(step)
      epoch, in_epoch = divmod(step, exp.steps_per_epoch)
      where = (
        'the run is complete'
        if self.done()
        else f'epoch {epoch + 1}/{config.num_epochs}, step {in_epoch}/{exp.steps_per_epoch}'
      )
      self.start_note = f'Resuming from {path} ({where})'
    elif config.init_from:
      try:
        source, step = checkpoint.open_source(config.init_from)
        self.state, _ = source.restore(step, self.state, items=('params', 'model_state'))
      except CheckpointError as e:
        raise CheckpointError(f'config.init_from: {e}') from None
      if self.state.ema is not None:  # the average starts from the weights taken
        self.state = self.state.replace(ema=jax.tree.map(jnp.copy, self.state.params))
      path = source.directory / str(step)
      self.start_note = f'Initialized weights from {path}; the optimizer starts afresh'

  def compile(self) -> None:
    """Compiles the training calls and evaluations ahead of time (a resumed call's length too)."""
    at = self.progress.step
    extra = self.profiler.calls_to_compile(self.exp, at)  # none when config.profile is off
    self.programs = experiment.compile_programs(self.exp, resume_at=at, extra_calls=extra)

  # The loop ------------------------------------------------------------------------------

  def fit(self) -> dict:
    """Trains to config.num_epochs (or config.stop_at_accuracy), then tests; returns the result.

    The result is metrics.json's content, written after every epoch; with 'preempted' if a
    stop request ended the run early (a checkpoint of that step is saved).
    """
    config, exp = self.config, self.exp
    device = exp.mesh.devices.flat[0]
    where = machine.describe()
    if not self.done():  # a finished run's re-test trains nothing: not a start of its own
      self.progress.starts.append({'step': self.progress.step, 'machine': where})
    result = {
      'config': json.loads(config.to_json()),
      'history': self.progress.history,
      'devices': {'platform': device.platform, 'kind': device.device_kind, 'count': exp.mesh.size},
      'machine': where,  # this start's commit, CPU, versions, date (a resume: its own)
      'starts': self.progress.starts,  # every start's, the first one's step 0
      'compile_seconds': self.programs.seconds,
      'data_seconds': exp.data.seconds,
    }
    self._summarize(result)
    try:
      while not self.done():
        stopped = self._stop_requested() or self.train_epoch()
        if stopped:
          self.save()  # a no-op when this step is saved already
          if self.checkpoints:
            self.checkpoints.wait()
          print(
            f'preempted at step {self.progress.step}; run the same command to resume', flush=True
          )
          signal = self.stop.signal or 'sent to another process'
          result['preempted'] = {'step': self.progress.step, 'signal': signal}
          self._write(result)
          return result
        record = self.end_epoch()
        self._summarize(result)
        self._write(result)
        if self.board:
          self.board.write_epoch(record)
    except NonFiniteError as e:
      if not self.checkpoints:
        raise
      self.checkpoints.wait()
      kept = self.checkpoints.latest_step()
      kept = (
        f'step {kept} in {self.checkpoints.directory}' if kept is not None else 'none (no save yet)'
      )
      raise NonFiniteError(f'{e}; last good checkpoint: {kept}') from None

    if self.progress.history:
      self.state = self.callbacks.end_training(
        self.progress.callbacks, self.state, self.progress.history[-1]['epoch'], result
      )
    if self.reached_target():
      last = self.progress.history[-1]
      result['stopped_at_accuracy'] = last['epoch']
      print(
        f'Stopped at epoch {last["epoch"]}: val_accuracy {last["val_accuracy"]:.4f} reached '
        f'config.stop_at_accuracy={config.stop_at_accuracy}',
        flush=True,
      )
    result['test'] = self.evaluate('test')
    self._write(result)
    if self.board:
      self.board.write_test(result['test'], self.progress.step)
    print(f'Test loss: {result["test"]["loss"]:.4f}')
    print(f'Test accuracy: {result["test"]["accuracy"]:.4f}')
    return result

  def done(self) -> bool:
    """Whether every epoch is trained, or the last one reached config.stop_at_accuracy."""
    total_steps = self.config.num_epochs * self.exp.steps_per_epoch
    stopped = self.callbacks.stopped(self.progress.callbacks)
    return self.progress.step >= total_steps or self.reached_target() or stopped

  def reached_target(self) -> bool:
    """Whether the last finished epoch reached config.stop_at_accuracy (0: never stop early)."""
    target = self.config.get('stop_at_accuracy', 0.0)
    history = self.progress.history
    return bool(target and history and history[-1]['val_accuracy'] >= target)

  def epoch_inputs(self, epoch: int, first_step: int = 0):
    """(the epoch's [steps, batch] example order, its key for per-example randomness).

    Streaming, it also starts reading the epoch's batches at first_step (or where the
    checkpoint this run resumed from says the stream stood).
    """
    state, self.stream_state = self.stream_state, None
    if state is not None:
      at = (state['pass'], state['first_step'] + state['steps_read'])
      if at == (epoch - 1, self.exp.steps_per_epoch):  # saved at its pass's end: start afresh
        state, at = None, (epoch, 0)
      if at != (epoch, first_step):
        raise CheckpointError(
          f'the checkpoint saved the data stream at epoch {at[0] + 1}, step {at[1]}, but the '
          f'training state at epoch {epoch + 1}, step {first_step}; resume from another one'
        )
    self.exp.data.start_epoch(self.shuffle_key, epoch, first_step, state)
    return (
      self.exp.data.epoch_order(self.shuffle_key, epoch),
      jax.random.fold_in(self.example_key, epoch),
    )

  def train_call(self, order, epoch_key):
    """One compiled call of len(order) steps on self.state; its metric sums, on the device."""
    train_call = self.programs.train_calls[len(order)]
    inputs = self.exp.data.train_inputs(len(order))
    self.state, sums = train_call(self.state, *inputs, order, epoch_key)
    return sums

  def train_epoch(self) -> bool:
    """Trains to the end of the current epoch; True if a stop request cut it short.

    Saves every config.checkpoint.every_steps steps, at the end of the compiled call that
    reaches the multiple. Each call's metrics are read while the next one runs, except where a
    save needs them at once.
    """
    config, exp, run = self.config, self.exp, self.progress
    steps_per_epoch, every = exp.steps_per_epoch, config.checkpoint.every_steps
    epoch, start = divmod(run.step, steps_per_epoch)
    first_step = epoch * steps_per_epoch
    self._bar = progress.EpochProgress(
      epoch + 1, config.num_epochs, steps_per_epoch, config.progress
    )
    order, epoch_key = self.epoch_inputs(epoch, start)
    seconds_before, began = run.epoch_seconds, time.perf_counter()
    pending = None
    for a, b in self.profiler.cut(exp.calls_from(start), first_step):
      if self._stop_requested():
        break
      self.profiler.before(first_step + a, self.state)
      sums = self.train_call(order[a:b], epoch_key)
      self.profiler.after(first_step + b, self.state)
      if pending:  # read the previous call's metrics while this one runs: no pipeline bubble
        self._absorb(*pending)
      pending = (b - a, sums)
      crossed = every and (first_step + a) // every < (first_step + b) // every
      if crossed and b < steps_per_epoch:  # the epoch's end has a checkpoint of its own
        self._absorb(*pending)
        pending = None
        run.epoch_seconds = seconds_before + time.perf_counter() - began
        self.save()
    if pending:
      self._absorb(*pending)
    run.epoch_seconds = seconds_before + time.perf_counter() - began
    return run.step % steps_per_epoch != 0

  def end_epoch(self) -> dict:
    """Validates, appends the epoch's record to the history, saves a ranked checkpoint."""
    run, start = self.progress, time.perf_counter()
    sums = run.epoch_sums or dict.fromkeys(metrics.SUMS, 0.0)
    val = self.evaluate('validation')
    eval_seconds = time.perf_counter() - start  # the line above waits for its result
    record = {
      'epoch': run.step // self.exp.steps_per_epoch,
      **metrics.epoch_metrics(sums, val),
      'seconds': run.epoch_seconds + time.perf_counter() - start,
      'train_seconds': run.epoch_seconds,
      'eval_seconds': eval_seconds,
      'learning_rate': self.learning_rate(),
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
    self.state, ranking, notes = self.callbacks.end_epoch(run.callbacks, self.state, record)
    self.save(ranking={'val_accuracy': val['accuracy'], **ranking})
    self._bar.end(record['seconds'], {k: record[k] for k in metrics.EPOCH})
    for note in notes:
      print(note, flush=True)
    return record

  def learning_rate(self) -> float:
    """The rate of the last step taken: the schedule's, times ReduceLROnPlateau's cuts."""
    scheduled = float(self.exp.learner.schedule(self.progress.step - 1))
    return self.callbacks.learning_rate(scheduled, self.state)

  def evaluate(self, split: str) -> dict:
    """{'loss', 'accuracy'} of the current state on 'validation' or 'test'."""
    return experiment.evaluate(self.exp, self.programs, self.state, split)

  def save(self, ranking: dict | None = None) -> None:
    """Checkpoints the state unless it holds NaN/Inf: a checkpoint is always a good one."""
    if not self.checkpoints:
      return
    # Without skip_step the steps do not check params (a pass per step); check them here.
    if not bool(steps.state_is_finite(self.state)):
      step = self.progress.step
      raise NonFiniteError(
        f'non-finite params at step {step} (epoch {(step - 1) // self.exp.steps_per_epoch + 1}); '
        f'lower the learning rate, or set --config.on_nonfinite=skip_step to skip such steps'
      )
    streams = self.exp.data.streams
    stream = streams['train'].state() if streams else None
    self.checkpoints.save(self.state, self.meta(), ranking, stream)

  def meta(self) -> dict:
    """The JSON half of a checkpoint: run progress, RNG keys, and what must match on resume."""
    exp = self.exp
    return {
      **dataclasses.asdict(self.progress),
      'epoch': self.progress.step // exp.steps_per_epoch,
      'steps_per_epoch': exp.steps_per_epoch,
      'num_train': exp.num_train,
      'rng': {
        'shuffle': jax.random.key_data(self.shuffle_key).tolist(),
        'example': jax.random.key_data(self.example_key).tolist(),
      },
      'config': json.loads(self.config.to_json()),
    }

  # Inside the loop -----------------------------------------------------------------------

  def _stop_requested(self) -> bool:
    # Every process asks at the same call boundaries: all stop at the same step, together.
    return parallel.any_process(bool(self.stop and self.stop.signal))

  def _absorb(self, num_steps: int, sums) -> None:
    """Adds a compiled call's fetched metric sums to the epoch's; stops on a non-finite loss."""
    run, steps_per_epoch = self.progress, self.exp.steps_per_epoch
    sums = jax.device_get(sums)
    if sums['nonfinite'] and self.config.on_nonfinite == 'stop':
      step = int(sums['first_nonfinite'])
      raise NonFiniteError(
        f'non-finite loss at step {step} (epoch {(step - 1) // steps_per_epoch + 1}); lower '
        f'the learning rate, or set --config.on_nonfinite=skip_step to skip such steps'
      )
    sums = {k: np.float64(sums[k]) for k in metrics.SUMS}
    totals = run.epoch_sums
    run.epoch_sums = sums if totals is None else {k: totals[k] + sums[k] for k in metrics.SUMS}
    run.step += num_steps
    self._bar.update((run.step - 1) % steps_per_epoch + 1, steps.means(run.epoch_sums))

  def _summarize(self, result: dict) -> None:
    run = self.progress
    if run.train_seconds:
      result['train_samples_per_sec'] = self.exp.num_train / statistics.median(run.train_seconds)
    if run.history:
      best = max(run.history, key=lambda h: h['val_accuracy'])  # first of equals
      result['best'] = {k: best[k] for k in ('epoch', 'val_accuracy', 'val_loss')}

  def _write(self, result: dict) -> None:
    if self.workdir is not None:
      write_json(self.workdir / 'metrics.json', result)
      if self.config.log.csv:
        logs.write_csv(self.workdir, result['history'])


def build(config) -> Trainer:
  """A Trainer in memory (no workdir) for config, compiled and at its initial state."""
  trainer = Trainer(experiment.setup(config))
  trainer.compile()
  return trainer


def _check_same_run(meta: dict, exp: experiment.Experiment, path) -> None:
  saved = (meta['num_train'], meta['steps_per_epoch'])
  if saved != (exp.num_train, exp.steps_per_epoch):
    raise CheckpointError(
      f'checkpoint {path} was saved with {saved[0]:,} training examples in {saved[1]} steps '
      f'per epoch, this config has {exp.num_train:,} in {exp.steps_per_epoch}; resume with the '
      f'same data.train_split and batch_size, or use another --workdir '
      f'(--config.init_from={path} starts a new run from its weights)'
    )


def write_json(path, obj) -> None:
  """Writes atomically, so a reader or a crash never sees half a file; process 0 only."""
  if jax.process_index() == 0:
    files.write_json(path, obj)
