"""Timing shared by the benchmarks: medians of blocking calls after a warm-up."""

import statistics
import time

import jax


def median_seconds(fn, repeats: int) -> float:
  """Median wall time of fn() (which must block until its result is ready)."""
  fn()  # warm-up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def time_train_call(trainer, repeats: int) -> float:
  """Training samples/s of the trainer's first compiled call: median of timed calls."""
  first, end = trainer.exp.calls[0]
  order, key = trainer.epoch_inputs(0)
  order = order[first:end]

  def one_call():
    jax.block_until_ready(trainer.train_call(order, key))

  return (end - first) * trainer.config.batch_size / median_seconds(one_call, repeats)


def train_calls(trainer):
  """(order, epoch key) of each training call, epoch after epoch, as a run walks them.

  Streaming, each epoch's batches are read as its calls come (a stream ends with its epoch).
  """
  epoch = 0
  while True:
    order, key = trainer.epoch_inputs(epoch)
    for a, b in trainer.exp.calls:
      yield order[a:b], key
    epoch += 1


def train_step_seconds(trainer, budget, input_wait: list | None = None) -> list:
  """Per-step wall times of compiled training calls until `budget` (a steady.Budget) is met.

  dnn_jax's steps run inside one compiled call of `steps_per_call` steps, so each step is
  given its call's mean time; the first calls (at least budget.warmup_steps steps) are the
  warm-up. Each call is waited for, so a streamed call's reading (the time the device waits
  for its input) is inside its time; input_wait, if given, gets each call's share of it, per step.
  """
  streams = trainer.exp.data.streams
  step_seconds = []
  calls = train_calls(trainer)
  while len(step_seconds) < budget.warmup_steps + 1 or not budget.enough(step_seconds):
    order, key = next(calls)
    waited = streams['train'].wait_seconds if streams else 0.0
    start = time.perf_counter()
    jax.block_until_ready(trainer.train_call(order, key))
    steps = len(order)
    step_seconds += [(time.perf_counter() - start) / steps] * steps
    if input_wait is not None:
      waited = (streams['train'].wait_seconds if streams else 0.0) - waited
      input_wait += [waited / steps] * steps
  return step_seconds
