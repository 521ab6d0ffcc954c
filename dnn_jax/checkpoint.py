"""Orbax checkpoints of a run: everything needed to continue it exactly, kept safely.

A checkpoint `<workdir>/checkpoints/<step>/` holds the TrainState fields as arrays (params,
opt_state, model_state: BatchNorm statistics) and `meta`, a JSON document with the step, the
position in the epoch, the RNG keys, the metric history and the config. Orbax writes each one
into a temporary directory and renames it when complete, so a kill during a save leaves the
previous checkpoints as they were. Nothing is pickled: arrays are tensorstore files, the rest
JSON, so loading a checkpoint never runs code from it.
"""

import logging
import pathlib
import shutil
import sys

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as policies

from dnn_jax import files, parallel, steps
from dnn_jax.errors import CheckpointError, DiskFullError

# TrainState fields saved as arrays (ema: only where config.ema.decay keeps one)
ARRAY_ITEMS = ('params', 'model_state', 'opt_state', 'ema')
WEIGHTS = ('params', 'model_state', 'ema')  # what evaluation reads: no optimizer state
# Free space a save needs beyond its arrays' bytes: orbax's metadata files and the meta JSON.
SAVE_OVERHEAD_BYTES = 256 * 1024
UNREADABLE_DIR = 'checkpoints_unreadable'  # beside checkpoints/: where broken ones are moved


class _QuietExpectedWarnings(logging.Filter):
  """Orbax warns on what dnn_jax does by design (saves without metrics, read-only managers),
  and logs a full disk from each of its save threads, which dnn_jax reports in one line."""

  EXPECTED = ('did not provide metrics', 'Given directory is read only')

  def filter(self, record: logging.LogRecord) -> bool:
    if any(text in record.getMessage() for text in self.EXPECTED):
      return False
    error = record.exc_info[1] if record.exc_info else None
    return not (files.is_disk_full(error) or files.says_disk_full(record.getMessage()))


logging.getLogger('absl').addFilter(_QuietExpectedWarnings())


def _rank(metrics) -> tuple:
  """Best = highest val_accuracy; among equals the earliest (Keras's save_best_only)."""
  return (metrics['val_accuracy'], -metrics['step'])


class Checkpoints:
  """The checkpoints of one workdir: save, list, restore (falling back past broken ones)."""

  def __init__(
    self,
    directory,
    max_to_keep: int = 3,
    async_save: bool = True,
    read_only: bool = False,
    stream: bool = False,
    keep_improvement: bool = False,
  ):
    """stream: also save and restore a streaming run's data iterator (the item 'data').

    keep_improvement: also keep the last epoch's checkpoint whose metrics counted an
    'improvement' (early_stopping.restore_best_weights: a resumed run reads its weights).
    """
    self.directory = pathlib.Path(directory).absolute()
    kept = [
      policies.LatestN(n=max_to_keep),
      policies.BestN(get_metric_fn=_rank, n=1, keep_checkpoints_without_metrics=False),
    ]
    if keep_improvement:  # improvements count up: the latest one's first epoch ranks highest
      last_improvement = lambda m: (m.get('improvements', 0), -m['step'])
      kept.append(
        policies.BestN(get_metric_fn=last_improvement, n=1, keep_checkpoints_without_metrics=False)
      )
    keep = policies.AnyPreservationPolicy(kept)
    options = ocp.CheckpointManagerOptions(
      preservation_policy=keep,
      enable_async_checkpointing=async_save,
      cleanup_tmp_directories=not read_only,  # what a kill during a save left behind
      read_only=read_only,  # another run's checkpoints (init_from, evaluate): touch nothing
      create=not read_only,
      save_interval_steps=0 if read_only else 1,
      best_fn=_rank,
      best_mode='max',
    )
    handlers = {k: ocp.StandardCheckpointHandler() for k in ARRAY_ITEMS}
    handlers['meta'] = ocp.JsonCheckpointHandler()
    if stream:  # grain's handler: one JSON file per process, as maxtext saves its iterators
      from grain import checkpoint as grain_checkpoint

      handlers['data'] = grain_checkpoint.CheckpointHandler()
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
    self._saving = None  # the step of the last save started
    self._unraisablehook = None
    if not read_only:  # until close(): see _quiet_closed_loop_callbacks
      self._unraisablehook = sys.unraisablehook
      sys.unraisablehook = _quiet_closed_loop_callbacks(self._unraisablehook)

  def all_steps(self) -> list:
    return list(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    """The kept step with the best validation accuracy (None before any epoch ended)."""
    best = self.manager.best_step()  # ranked by _rank; the latest when none has metrics
    return best if best is not None and self.manager.metrics(best) else None

  def save(
    self, state: steps.TrainState, meta: dict, metrics: dict | None = None, stream=None
  ) -> bool:
    """Starts saving state and meta at meta['step']; False if that step is already saved.

    stream: a streaming run's train stream state (JSON), saved per process by grain's handler.

    metrics (epoch ends only): {'val_accuracy'} ranks the checkpoint for `best`. Raises
    DiskFullError, before writing anything, when the disk cannot hold it (and when a save
    still fails for want of space: orbax then leaves only a temporary directory, which the
    next start removes).
    """
    step = meta['step']
    if step in self.all_steps():
      return False
    self.wait()  # the previous save first: a failure is reported against its own step
    self._check_space(state, step)
    # Copies: the next compiled call donates (overwrites) state's buffers while orbax writes.
    state = jax.tree.map(jnp.copy, state)
    items = {  # orbax refuses empty trees: a model without BatchNorm has no model_state
      k: ocp.args.StandardSave(getattr(state, k))
      for k in ARRAY_ITEMS
      if jax.tree.leaves(getattr(state, k))
    }
    if metrics is not None:
      metrics = {**metrics, 'step': step}
    if stream is not None:
      from grain import checkpoint as grain_checkpoint  # streaming runs only

      from dnn_jax.data import stream as data_stream

      items['data'] = grain_checkpoint.CheckpointSave(data_stream.SavedState(stream))
    self._saving = step
    with files.writing(self._activity()):
      self.manager.save(
        step, args=ocp.args.Composite(**items, meta=ocp.args.JsonSave(meta)), metrics=metrics
      )
    return True

  def _activity(self) -> str:
    return f'saving checkpoint {self._saving} in {self.directory}'

  def _check_space(self, state: steps.TrainState, step: int) -> None:
    """Raises DiskFullError when the disk has less free space than the save needs."""
    need = SAVE_OVERHEAD_BYTES + sum(
      x.nbytes for k in ARRAY_ITEMS for x in jax.tree.leaves(getattr(state, k))
    )
    free = shutil.disk_usage(self.directory).free
    if parallel.all_processes_agree(free >= need):
      return
    raise DiskFullError(
      f'saving checkpoint {step} in {self.directory}',
      f'it needs about {_kib(need)}, {_kib(free)} are free',
    )

  def read_stream_state(self, step: int) -> dict | None:
    """The data stream's state saved at step (this process's), or None if none was saved.

    None too where the device pipeline saved it, or another number of processes: the stream
    then starts at the step itself (its order is a function of the step alone).
    """
    mine = f'process_{jax.process_index()}-of-{jax.process_count()}.json'  # grain's name for it
    if not (self.directory / str(step) / 'data' / mine).is_file():
      return None
    from grain import checkpoint as grain_checkpoint

    from dnn_jax.data import stream as data_stream

    restored = self.manager.restore(
      step,
      args=ocp.args.Composite(data=grain_checkpoint.CheckpointRestore(data_stream.SavedState())),
    )
    return restored['data'].value

  def read_meta(self, step: int) -> dict:
    """The JSON half of a checkpoint: progress, history and config."""
    restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return restored['meta']

  def restore(self, step: int, target: steps.TrainState, items=ARRAY_ITEMS):
    """(state, meta) of one step onto target's shapes and shardings; only `items` are read.

    Fields not in items keep target's values. Raises CheckpointError if shapes differ.
    """
    path = self.directory / str(step)
    saved = self.manager.item_metadata(step)
    meta = self.read_meta(step)  # read once: it names the optimizer for a misfit's message
    optimizer = meta.get('config', {}).get('optimizer', {}).get('name')
    for item in items:
      check_fits(saved.get(item) or {}, getattr(target, item), item, path, optimizer)
    items = [k for k in items if jax.tree.leaves(getattr(target, k))]
    args = {k: ocp.args.StandardRestore(_abstract(getattr(target, k))) for k in items}
    restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    return target.replace(**{k: restored[k] for k in items}), meta

  def restore_latest(self, target: steps.TrainState, items=ARRAY_ITEMS):
    """(state, meta, step) of the newest readable checkpoint, or None if there is none.

    A checkpoint that cannot be read (truncated, corrupt) is moved to checkpoints_unreadable/
    and the one before it is used; a checkpoint of another model is an error, not skipped.
    """
    for step in reversed(self.all_steps()):
      try:
        restored, error = self.restore(step, target, items), None
      except CheckpointError:
        raise
      except Exception as e:  # any failure to read means this one is broken
        restored, error = None, e
      # Processes agree before anyone moves a checkpoint, so all fall back to the same one.
      if parallel.all_processes_agree(error is None):
        return (*restored, step)
      moved = self._move_aside(step)  # every process calls it: it waits for process 0's move
      earlier = [s for s in self.all_steps() if s < step]
      then = f'using step {earlier[-1]}' if earlier else 'no earlier checkpoint'
      if error is None:
        reason = 'another process could not read it'
      else:
        detail = (str(error).splitlines() or [''])[0].split('. See ')[0][:160]
        reason = f'{type(error).__name__}: {detail}'
      print(
        f'warning: checkpoint {self.directory / str(step)} is unreadable ({reason}); '
        f'moved it to {moved}; {then}',
        file=sys.stderr,
      )
    return None

  def _move_aside(self, step: int) -> pathlib.Path:
    """Moves the checkpoint into UNREADABLE_DIR: process 0 moves, the others wait for it."""
    target = self.directory.parent / UNREADABLE_DIR / str(step)
    if jax.process_index() == 0:
      if target.exists():
        shutil.rmtree(target)
      target.parent.mkdir(parents=True, exist_ok=True)
      shutil.move(self.directory / str(step), target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'dnn_jax: checkpoint {step} moved aside')
    self.manager.reload()
    return target

  def wait(self) -> None:
    """Blocks until every started save is complete on disk."""
    with files.writing(self._activity()):
      self.manager.wait_until_finished()

  def close(self, raise_errors: bool = True) -> None:
    """Waits for the saves in flight and closes; raise_errors=False while another error is
    on its way out (a failed save then stays a temporary directory, removed at next start)."""
    try:
      self.wait()
      self.manager.close()
    except Exception:
      if raise_errors:
        raise
    finally:
      if self._unraisablehook is not None:
        sys.unraisablehook, self._unraisablehook = self._unraisablehook, None


def _quiet_closed_loop_callbacks(previous):
  """An unraisable-exception hook that drops 'Event loop is closed' and passes the rest on.

  When one write of an async save fails (a full disk), orbax closes that save's event loop;
  tensorstore then completes the save's other writes into the closed loop, and each prints a
  traceback. The failure itself reaches the main thread and is reported there in one line.
  """

  def hook(unraisable):
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and str(error) == 'Event loop is closed':
      return
    previous(unraisable)

  return hook


def last_complete_step(directory) -> int | None:
  """The newest step whose save finished (orbax renames a checkpoint into place when done)."""
  directory = pathlib.Path(directory)
  done = [int(p.name) for p in directory.glob('*') if p.name.isdigit() and p.is_dir()]
  return max(done, default=None)


def _kib(size: int) -> str:
  return f'{size / 1024:,.0f} KiB'


def _abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _name(path) -> str:
  parts = []
  for key in path:
    part = getattr(key, 'key', getattr(key, 'name', getattr(key, 'idx', key)))
    parts.append(str(part))
  if parts and parts[-1] == 'value':  # nnx Variables store their array under .value
    parts.pop()
  return '.'.join(parts)


def check_fits(saved_metadata, target, item: str, path, optimizer: str | None = None) -> None:
  """Raises CheckpointError naming the first array whose shape differs or is missing.

  optimizer: the name of the optimizer the checkpoint was saved with, for the message.
  """
  saved = {
    _name(p): tuple(m.shape) for p, m in jax.tree_util.tree_flatten_with_path(saved_metadata)[0]
  }
  wanted = {_name(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(target)[0]}
  fix = 'use the config it was saved with, or another --workdir'
  what = 'this model'
  if item == 'opt_state':
    what = f'this optimizer (it was saved with {optimizer!r})' if optimizer else 'this optimizer'
  for name, shape in wanted.items():
    if name not in saved:
      raise CheckpointError(
        f'checkpoint {path} does not fit {what}: it has no {item} {name}; {fix}'
      )
    if saved[name] != shape:
      raise CheckpointError(
        f'checkpoint {path} does not fit {what}: {item} {name} has shape {saved[name]} there '
        f'and {shape} here; {fix}'
      )
  extra = sorted(set(saved) - set(wanted))
  if extra:
    raise CheckpointError(
      f'checkpoint {path} does not fit {what}: it has an extra {item} {extra[0]}; {fix}'
    )


def open_source(path) -> tuple[Checkpoints, int]:
  """(read-only Checkpoints, step) from a workdir, its checkpoints/ (latest step) or a step dir."""
  path = pathlib.Path(path)
  if path.name.isdigit() and (path / 'meta').is_dir():  # checkpoints/<step>
    candidates = [(path.parent, int(path.name))]
  else:
    candidates = [(path / 'checkpoints', None), (path, None)]
  for directory, step in candidates:
    if directory.is_dir():
      source = Checkpoints(directory, read_only=True)
      saved = source.all_steps()
      if saved and (step is None or step in saved):
        return source, saved[-1] if step is None else step
  raise CheckpointError(
    f'no checkpoint at {path}; give a workdir, its checkpoints/ directory or a '
    f'checkpoints/<step> directory'
  )


TRAIN_HINT = 'train first: python -m dnn_jax.main --config experiments/<name>.py --workdir {}'


def open_saved(workdir) -> Checkpoints:
  """workdir's checkpoints, read-only, or CheckpointError saying how to make one."""
  directory = pathlib.Path(workdir) / 'checkpoints'
  source = Checkpoints(directory, read_only=True) if directory.is_dir() else None
  if source is None or not source.all_steps():
    raise CheckpointError(f'no checkpoint in {directory}; ' + TRAIN_HINT.format(workdir))
  return source


def choose_step(source: Checkpoints, which: str) -> tuple[int, str, str | None]:
  """(step, how it was chosen, a note or None) for --checkpoint best, latest or a step."""
  saved = source.all_steps()
  if which == 'best':
    best = source.best_step()
    if best is not None:
      return best, 'best', None
    note = f'no epoch has ended yet: the latest checkpoint (step {saved[-1]}) is reported'
    return saved[-1], 'latest', note
  if which == 'latest':
    return saved[-1], 'latest', None
  if which.isdigit() and int(which) in saved:
    return int(which), 'step', None
  raise CheckpointError(
    f'--checkpoint={which} is not best, latest or a saved step; saved steps: '
    f'{", ".join(map(str, saved))}'
  )
