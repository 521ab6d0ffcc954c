"""The streaming pipeline: grain reads each call's batches from the prepared files on the host.

For splits that do not fit on the device. The order is the device pipeline's own (a
[steps, batch] array of example indices, a pure function of seed and epoch), so both train on
the same examples in the same order, whatever the number of processes. Each process reads
only the columns of each batch that its own devices train on; the call's batches are then
placed onto the global mesh. Grain's iterator state goes into every checkpoint.
"""

import dataclasses
import json
import time

import grain
import jax
import numpy as np
from absl import flags

from dnn_jax import parallel

# Reads in flight per process: enough to keep ahead of a CNN's steps; more threads only take
# cores from the training computation. config.data.workers adds processes on bigger hosts.
THREADS = 2


class ArraySource:
  """Random access to in-memory arrays, like tfds.data_source (synthetic data, tests)."""

  def __init__(self, arrays: dict):
    self.arrays = arrays

  def __len__(self) -> int:
    return len(self.arrays['label'])

  def __getitem__(self, index: int) -> dict:
    return {k: v[index] for k, v in self.arrays.items()}

  def __getitems__(self, indices) -> list:
    return [self[i] for i in indices]


def open_source(name: str, version: str, spec: str, data_dir):
  """tfds's random-access source over a prepared array_record split (no TensorFlow)."""
  import tensorflow_datasets as tfds

  return tfds.data_source(f'{name}:{version}', split=spec, data_dir=str(data_dir), download=False)


@dataclasses.dataclass(frozen=True)
class ReadBatch:
  """grain transform: step -> this process's part of that step's batch, as uint8 arrays.

  A padding slot (index -1) reads example 0, as the device pipeline's gather does.
  """

  source: object
  order_SxB: np.ndarray  # this process's columns of the order

  def __call__(self, step: int) -> dict:
    examples = self.source.__getitems__(np.maximum(self.order_SxB[step], 0).tolist())
    return {
      'image': np.stack([e['image'] for e in examples]).astype(np.uint8),
      'label': np.asarray([e['label'] for e in examples], np.int32),
    }


class SplitStream:
  """One split's batches for this process, call by call, in an order given per pass."""

  def __init__(
    self, source, mesh, batch: int, image_shape: tuple, workers: int = 0, prefetch: int = 16
  ):
    """prefetch: batches read ahead; two calls' worth keeps the next call ready and no more
    (reading further ahead only takes cores from the training computation)."""
    self.source, self.batch, self.image_shape = source, batch, tuple(image_shape)
    self.workers, self.prefetch = workers, prefetch
    self.sharding = parallel.batch_sharded(mesh, batch_axis=1)
    self.iterator = None
    self.pass_id = None  # which pass the iterator walks (the epoch, for training)
    self.first_step = 0  # the pass's step the iterator began at
    self.steps_read = 0  # steps handed out since
    self.wait_seconds = 0.0  # time spent blocked on the iterator, summed over passes

  def columns(self) -> slice:
    """The columns of a [steps, batch] order that this process's devices hold."""
    indices = self.sharding.addressable_devices_indices_map((1, self.batch)).values()
    starts = [index[1].start or 0 for index in indices]
    stops = [self.batch if index[1].stop is None else index[1].stop for index in indices]
    return slice(min(starts), max(stops))

  def start(self, order_SxB: np.ndarray, pass_id, first_step: int = 0, state=None) -> None:
    """Begins a pass over order_SxB (global, on the host) at first_step, or at a saved state."""
    self.close()
    if state is not None:
      first_step = state['first_step']
    local_SxB = np.ascontiguousarray(order_SxB[first_step:, self.columns()])
    dataset = grain.MapDataset.range(len(local_SxB)).map(ReadBatch(self.source, local_SxB))
    # Threads overlap the reads (PNG decoding releases the GIL); worker processes add CPUs.
    stream = dataset.to_iter_dataset(
      grain.ReadOptions(num_threads=THREADS, prefetch_buffer_size=self.prefetch)
    )
    if self.workers:
      if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (their defaults here)
        flags.FLAGS.mark_as_parsed()
      stream = stream.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.workers))
    self.iterator = iter(stream)
    self.pass_id, self.first_step, self.steps_read = pass_id, first_step, 0
    if state is not None:
      self.iterator.set_state(state['iterator'])
      self.steps_read = state['steps_read']

  def next_call(self, num_steps: int) -> tuple:
    """(images, labels) of the next num_steps batches, [steps, batch, ...] on the mesh."""
    began = time.perf_counter()
    batches = [next(self.iterator) for _ in range(num_steps)]
    self.wait_seconds += time.perf_counter() - began
    self.steps_read += num_steps
    shapes = {'image': (num_steps, self.batch, *self.image_shape), 'label': (num_steps, self.batch)}
    return tuple(
      jax.make_array_from_process_local_data(
        self.sharding, np.stack([b[k] for b in batches]), shapes[k]
      )
      for k in ('image', 'label')
    )

  def state(self) -> dict:
    """Where this pass stands, as JSON for the checkpoint: grain's iterator state and ours."""
    return {
      'pass': self.pass_id,
      'first_step': self.first_step,
      'steps_read': self.steps_read,
      'iterator': self.iterator.get_state() if self.iterator else None,
    }

  def close(self) -> None:
    """Ends the pass (and its worker processes, if any)."""
    if self.iterator is not None and hasattr(self.iterator, 'close'):
      self.iterator.close()
    self.iterator = None


class SavedState:
  """A stream's state as grain's orbax handler saves and restores it (bytes of JSON).

  Captured when made: the checkpoint is written after the loop has moved on.
  """

  def __init__(self, state: dict | None = None):
    self.value = state

  def get_state(self) -> bytes:
    return json.dumps(self.value).encode()

  def set_state(self, state: bytes) -> None:
    self.value = json.loads(state)

  def start_prefetch(self) -> None:  # grain's handler calls it after set_state
    pass
