"""TensorBoard event files in <workdir>/tensorboard: epoch scalars, the config, report images.

Summaries are built with tensorboardX, which needs no TensorFlow; `tensorboard --logdir runs`
shows them. Only process 0 writes, synchronously: a write that fails (a full disk) is cut off
the file again, so an events file never ends in half a record. A resumed run adds only the
points its event files lack, and hides those written past its checkpoint (a run killed after
writing an epoch but before saving it).
"""

import os
import pathlib
import socket
import struct
import sys
import time

import jax

from dnn_jax import files

# Scalar tag -> metrics.json history key, at the global step of each epoch's end.
EPOCH_SCALARS = {
  'loss/train': 'loss',
  'accuracy/train': 'accuracy',
  'loss/val': 'val_loss',
  'accuracy/val': 'val_accuracy',
  'learning_rate': 'learning_rate',
}
SAMPLES_PER_SEC = 'samples_per_sec/train'  # training examples / the epoch's training seconds
TEST_SCALARS = {'loss/test': 'loss', 'accuracy/test': 'accuracy'}  # the hparams' metrics
HPARAMS_START, HPARAMS_END = '_hparams_/session_start_info', '_hparams_/session_end_info'


def _load_tensorboardx() -> None:
  """Imports tensorboardX without PyTorch, which its package imports where installed (seconds
  at every run's start) for tensors dnn_jax never hands it."""
  if 'tensorboardX' in sys.modules:
    return
  hide = 'torch' not in sys.modules
  if hide:
    sys.modules['torch'] = None  # `import torch` raises ImportError: tensorboardX goes on
  try:
    import tensorboardX  # noqa: F401
  finally:
    if hide:
      del sys.modules['torch']


def logdir(workdir) -> pathlib.Path:
  return pathlib.Path(workdir) / 'tensorboard'


class EventFile:
  """One new events file (TFRecords of Event protos), appended to synchronously."""

  def __init__(self, directory: pathlib.Path, purge_step: int | None = None):
    """Creates the file; purge_step hides the points already written at or after it."""
    _load_tensorboardx()
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    directory.mkdir(parents=True, exist_ok=True)
    # TensorBoard reads files in name order; the nanoseconds keep two writers of one second
    # in the order they were opened.
    self.path = directory / (
      f'events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{time.time_ns()}'
    )
    self._size = 0  # bytes of whole records on disk
    first = [Event(wall_time=time.time(), file_version='brain.Event:2')]
    if purge_step is not None:
      start = SessionLog(status=SessionLog.START)
      first.append(Event(wall_time=time.time(), step=purge_step, session_log=start))
    self.write(first)

  def add(self, summaries: list, step: int) -> None:
    """Appends Summary protos at step, all in one write."""
    _load_tensorboardx()
    from tensorboardX.proto.event_pb2 import Event

    now = time.time()
    self.write([Event(wall_time=now, step=step, summary=summary) for summary in summaries])

  def write(self, events: list) -> None:
    """Appends Event protos and syncs them to disk; on failure the file is as it was."""
    data = b''.join(_record(event.SerializeToString()) for event in events)
    try:
      with files.writing(f'writing TensorBoard events to {self.path}'), open(self.path, 'ab') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    except BaseException:
      if self._size:
        os.truncate(self.path, self._size)  # truncating needs no free space
      else:
        self.path.unlink(missing_ok=True)
      raise
    self._size += len(data)


def _record(data: bytes) -> bytes:
  """data as one TFRecord: its length, the length's CRC, the data, the data's CRC."""
  _load_tensorboardx()
  from tensorboardX.record_writer import masked_crc32c

  header = struct.pack('<Q', len(data))
  return (
    header
    + struct.pack('<I', masked_crc32c(header))
    + data
    + struct.pack('<I', masked_crc32c(data))
  )


def _events(path: pathlib.Path):
  """The Event protos of one file (TFRecords), up to a record cut short by a crash."""
  from google.protobuf.message import DecodeError

  _load_tensorboardx()
  from tensorboardX.proto.event_pb2 import Event

  data = path.read_bytes()
  start = 0
  while start + 12 <= len(data):  # length (8 bytes), its CRC (4), data, its CRC (4)
    (length,) = struct.unpack_from('<Q', data, start)
    if start + 12 + length + 4 > len(data):
      return
    try:
      yield Event.FromString(data[start + 12 : start + 12 + length])
    except DecodeError:
      return
    start += 12 + length + 4


def written(directory: pathlib.Path) -> set[tuple[str, int]]:
  """(tag, step) of every summary TensorBoard shows from directory, purges applied."""
  _load_tensorboardx()
  from tensorboardX.proto.event_pb2 import SessionLog

  present = set()
  for path in sorted(directory.glob('events.out.tfevents.*')):  # TensorBoard's order
    for event in _events(path):
      if event.HasField('session_log') and event.session_log.status == SessionLog.START:
        present = {(tag, step) for tag, step in present if step < event.step}
      present.update((value.tag, event.step) for value in event.summary.value)
  return present


def flat_hparams(config) -> dict:
  """The config as {'optimizer.learning_rate': 0.001, ...}; tuples and None as text."""

  def flatten(tree, prefix):
    for key, value in tree.items():
      if isinstance(value, dict):
        yield from flatten(value, f'{prefix}{key}.')
      else:
        plain = isinstance(value, bool | int | float | str)
        yield f'{prefix}{key}', value if plain else str(value)

  return dict(flatten(config.to_dict(), ''))


class Writer:
  """A run's scalars, test result and hparams, in an events file of its own."""

  def __init__(self, workdir, exp, run):
    """Opens <workdir>/tensorboard for exp (an Experiment) at run's (a trainer.Progress) step."""
    self._steps_per_epoch, self._num_train = exp.steps_per_epoch, exp.num_train
    self._file = None
    if jax.process_index() != 0:
      return
    directory = logdir(workdir)
    present = written(directory) if directory.is_dir() else set()
    stale = any(step > run.step for _, step in present)
    self._file = EventFile(directory, purge_step=run.step + 1 if stale else None)
    self._present = {(tag, step) for tag, step in present if step <= run.step}
    if run.step == 0 or (HPARAMS_START, 0) not in self._present:
      self._write_hparams(exp.config)
    for record in run.history:  # epochs a crash (or an older dnn_jax) left unwritten
      self.write_epoch(record)

  def _write_hparams(self, config) -> None:
    _load_tensorboardx()
    from tensorboardX.summary import hparams

    experiment, start, _ = hparams(flat_hparams(config), dict.fromkeys(TEST_SCALARS, 0.0))
    self._file.add([experiment, start], 0)
    self._present.add((HPARAMS_START, 0))

  def _scalars(self, values: dict, step: int) -> None:
    """Writes the values not yet written at step: one write, so `tensorboard` shows it now."""
    _load_tensorboardx()
    from tensorboardX.summary import scalar

    new = {tag: value for tag, value in values.items() if (tag, step) not in self._present}
    if new:
      self._file.add([scalar(tag, value) for tag, value in new.items()], step)
      self._present.update((tag, step) for tag in new)

  def write_epoch(self, record: dict) -> None:
    """Writes one metrics.json history record at the step of its epoch's end."""
    if self._file is None:
      return
    values = {tag: record[key] for tag, key in EPOCH_SCALARS.items()}
    if record['train_seconds'] > 0:
      values[SAMPLES_PER_SEC] = self._num_train / record['train_seconds']
    self._scalars(values, record['epoch'] * self._steps_per_epoch)

  def write_test(self, test: dict, step: int) -> None:
    """Writes the test metrics, which the hparams dashboard shows beside the config."""
    if self._file is None:
      return
    _load_tensorboardx()
    from tensorboardX.summary import hparams

    self._scalars({tag: test[key] for tag, key in TEST_SCALARS.items()}, step)
    if (HPARAMS_END, step) not in self._present:
      _, _, end = hparams({}, {})  # status: success
      self._file.add([end], step)
      self._present.add((HPARAMS_END, step))


def log_report_images(workdir, pngs: dict[str, pathlib.Path], step: int) -> None:
  """Writes PNG files as TensorBoard images, {tag: path}, at step; skips a tag already there."""
  if jax.process_index() != 0:
    return
  from PIL import Image

  _load_tensorboardx()
  from tensorboardX.proto.summary_pb2 import Summary

  directory = logdir(workdir)
  present = written(directory) if directory.is_dir() else set()
  summaries = []
  for tag, path in pngs.items():
    if (tag, step) in present:
      continue
    data = pathlib.Path(path).read_bytes()
    with Image.open(path) as image:  # the file's own bytes go in: no re-encoding
      (width, height), bands = image.size, len(image.getbands())
    png = Summary.Image(width=width, height=height, colorspace=bands, encoded_image_string=data)
    summaries.append(Summary(value=[Summary.Value(tag=tag, image=png)]))
  if summaries:
    EventFile(directory).add(summaries, step)
