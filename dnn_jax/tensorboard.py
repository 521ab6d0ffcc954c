"""TensorBoard event files in <workdir>/tensorboard: epoch scalars, the config, report images.

Written with tensorboardX, which needs no TensorFlow; `tensorboard --logdir runs` shows them.
Only process 0 writes. A resumed run adds only the points its event files lack, and hides
those written past its checkpoint (a run killed after writing an epoch but before saving it).
"""

import pathlib
import struct
import time

import jax

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


def logdir(workdir) -> pathlib.Path:
  return pathlib.Path(workdir) / 'tensorboard'


def _summary_writer(directory: pathlib.Path, purge_step=None):
  from tensorboardX import SummaryWriter

  # tensorboardX names files by the second and opens them 'wb': a second writer within the
  # same second would overwrite the first without a suffix of its own (one that sorts later).
  return SummaryWriter(str(directory), purge_step=purge_step, filename_suffix=f'.{time.time_ns()}')


def _events(path: pathlib.Path):
  """The Event protos of one file (TFRecords), up to a record cut short by a crash."""
  from google.protobuf.message import DecodeError
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
  """A run's scalars, test result and hparams; a context manager that closes the file."""

  def __init__(self, workdir, exp, run):
    """Opens <workdir>/tensorboard for exp (an Experiment) at run's (a train.Progress) step."""
    self._steps_per_epoch, self._num_train = exp.steps_per_epoch, exp.num_train
    self._writer = None
    if jax.process_index() != 0:
      return
    directory = logdir(workdir)
    present = written(directory) if directory.is_dir() else set()
    stale = any(step > run.step for _, step in present)
    self._writer = _summary_writer(directory, purge_step=run.step + 1 if stale else None)
    self._present = {(tag, step) for tag, step in present if step <= run.step}
    if run.step == 0 or (HPARAMS_START, 0) not in self._present:
      self._write_hparams(exp.config)
    for record in run.history:  # epochs a crash (or an older dnn_jax) left unwritten
      self.write_epoch(record)

  def _write_hparams(self, config) -> None:
    from tensorboardX.summary import hparams

    experiment, start, _ = hparams(flat_hparams(config), dict.fromkeys(TEST_SCALARS, 0.0))
    for summary in (experiment, start):
      self._writer.file_writer.add_summary(summary, 0)
    self._present.add((HPARAMS_START, 0))

  def _scalars(self, values: dict, step: int) -> None:
    for tag, value in values.items():
      if (tag, step) not in self._present:
        self._writer.add_scalar(tag, value, step)
        self._present.add((tag, step))
    self._writer.flush()  # `tensorboard` shows each epoch as it ends

  def write_epoch(self, record: dict) -> None:
    """Writes one metrics.json history record at the step of its epoch's end."""
    if self._writer is None:
      return
    values = {tag: record[key] for tag, key in EPOCH_SCALARS.items()}
    if record['train_seconds'] > 0:
      values[SAMPLES_PER_SEC] = self._num_train / record['train_seconds']
    self._scalars(values, record['epoch'] * self._steps_per_epoch)

  def write_test(self, test: dict, step: int) -> None:
    """Writes the test metrics, which the hparams dashboard shows beside the config."""
    if self._writer is None:
      return
    from tensorboardX.summary import hparams

    self._scalars({tag: test[key] for tag, key in TEST_SCALARS.items()}, step)
    if (HPARAMS_END, step) not in self._present:
      _, _, end = hparams({}, {})  # status: success
      self._writer.file_writer.add_summary(end, step)
      self._present.add((HPARAMS_END, step))

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()


def log_report_images(workdir, pngs: dict[str, pathlib.Path], step: int) -> None:
  """Writes PNG files as TensorBoard images, {tag: path}, at step; skips a tag already there."""
  if jax.process_index() != 0:
    return
  from PIL import Image
  from tensorboardX.proto.summary_pb2 import Summary

  directory = logdir(workdir)
  present = written(directory) if directory.is_dir() else set()
  writer = _summary_writer(directory)
  try:
    for tag, path in pngs.items():
      if (tag, step) in present:
        continue
      data = pathlib.Path(path).read_bytes()
      with Image.open(path) as image:  # the file's own bytes go in: no re-encoding
        (width, height), bands = image.size, len(image.getbands())
      png = Summary.Image(width=width, height=height, colorspace=bands, encoded_image_string=data)
      writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=png)]), step)
  finally:
    writer.close()
