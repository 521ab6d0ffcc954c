"""config.profile: a trace of training steps [start_step, start_step + num_steps) for xprof.

The compiled calls are cut at the window's first and end step (in the epochs it touches only),
so the trace holds exactly its steps: it starts once the calls before it have finished, and
stops once its last call has. Then jax.profiler writes
<workdir>/tensorboard/plugins/profile/<time>/<host>.xplane.pb (`xprof --logdir`, or TensorBoard
with tensorboard-plugin-profile), and the device memory at the window's end goes to
<workdir>/tensorboard/memory.prof (`pprof`). Process 0 traces; every process runs the same
program. A window crossing an epoch's end traces that epoch's validation too. Off (start_step
-1) it adds no call and no compiled length.
"""

import pathlib

import jax

from dnn_jax import progress
from dnn_jax.errors import ConfigError

MEMORY_FILE = 'memory.prof'


def window(config, steps_per_epoch: int) -> tuple[int, int] | None:
  """(first, end) optimizer step of the profiled window, or None when config.profile is off."""
  start, num_steps = config.profile.start_step, config.profile.num_steps
  if start < 0:
    return None
  total = config.num_epochs * steps_per_epoch
  if start + num_steps > total:
    raise ConfigError(
      f"config.profile.start_step={start} with num_steps={num_steps} ends past the run's "
      f'{total} steps ({config.num_epochs} epoch(s) of {steps_per_epoch}); use a start_step of '
      f'at most {max(total - num_steps, 0)}, fewer num_steps, or -1 for no profile'
    )
  return start, start + num_steps


def cut(calls, first_step: int, bounds) -> list:
  """An epoch's (first, end) calls cut where bounds (global steps) fall inside one.

  first_step is the epoch's first global step; calls count steps from it.
  """
  inside = sorted({b - first_step for b in bounds})
  cuts = []
  for a, b in calls:
    for at in (x for x in inside if a < x < b):
      cuts.append((a, at))
      a = at
    cuts.append((a, b))
  return cuts


class Profiler:
  """Starts and stops the trace at the window's bounds; off without a workdir or a window."""

  def __init__(self, config, steps_per_epoch: int, workdir=None):
    self.window = window(config, steps_per_epoch)  # validated even where nothing is traced
    if workdir is None:  # in memory (sweeps, benchmarks): nowhere to write, nothing to cut
      self.window = None
    self.directory = pathlib.Path(workdir) / 'tensorboard' if workdir is not None else None
    self._steps_per_epoch = steps_per_epoch
    self._traces = jax.process_index() == 0  # every process cuts its calls alike
    self._bar = progress.shows_bar(config.progress)
    self._tracing = False
    self._last = None  # the end step of the last call traced

  def calls_to_compile(self, exp, resume_at: int) -> list:
    """The window's cut calls still ahead of resume_at; a window already passed is dropped.

    A run resumed past the window's start traced it before (or would trace only its end).
    """
    if self.window is not None and resume_at > self.window[0]:
      self.window = None
    if self.window is None:
      return []
    first, end = self.window
    spe = self._steps_per_epoch
    calls = []
    for epoch in range(first // spe, (end - 1) // spe + 1):
      start = max(resume_at - epoch * spe, 0)
      calls += cut(exp.calls_from(start), epoch * spe, self.window)
    return calls

  def cut(self, calls, first_step: int) -> list:
    """The epoch's calls (from its first global step) cut at the window's bounds."""
    return calls if self.window is None else cut(calls, first_step, self.window)

  def before(self, step: int, state) -> None:
    """Called before the call that starts at step: starts the trace at the window's start."""
    if self.window is None or step != self.window[0] or not self._traces:
      return
    jax.block_until_ready(state)  # the calls before the window are not in its trace
    self._say(
      f'Profiling steps {step}-{self.window[1] - 1} into {self.directory}; view with '
      f'`xprof --logdir {self.directory}` (or tensorboard with tensorboard-plugin-profile)'
    )
    jax.profiler.start_trace(str(self.directory))
    self._tracing = True

  def after(self, step: int, state) -> None:
    """Called after the call that ends at step: stops the trace at the window's end."""
    if not self._tracing:
      return
    self._last = step
    if step == self.window[1]:
      jax.block_until_ready(state)
      self._stop()

  def close(self) -> None:
    """Stops a trace that a stop request or an error cut short; writes what it holds."""
    if self._tracing:
      self._stop(f'cut short at step {self._last}' if self._last else 'cut short')

  def _stop(self, note: str = '') -> None:
    memory = self.directory / MEMORY_FILE
    try:
      jax.profiler.save_device_memory_profile(str(memory))
    finally:  # the trace is written even if the memory profile fails
      jax.profiler.stop_trace()
      self._tracing = False
    note = f' ({note})' if note else ''
    self._say(
      f'Profiled steps {self.window[0]}-{self.window[1] - 1}{note}: the trace is in '
      f'{self.directory / "plugins" / "profile"} (`xprof --logdir {self.directory}`), the '
      f'device memory in {memory} (`pprof`)'
    )

  def _say(self, line: str) -> None:
    print(('\n' if self._bar else '') + line, flush=True)  # below an unfinished bar line
