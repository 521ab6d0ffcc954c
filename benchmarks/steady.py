"""The peer protocol's steady state: per-step times until enough are taken, then min/median/max.

Every peer (dnn_jax, Keras, PyTorch) times its own steps and hands the list here, so all of
them are judged by one rule: drop the warm-up steps (compiling, caches, allocator), keep
timing until at least `min_steps` steps and `min_seconds` seconds are in, report the median.
A very slow peer (bfloat16 emulated on a CPU without it) stops at `max_seconds` instead, with
however many steps that took, so it is not timed for many minutes.
"""

import dataclasses
import statistics

from absl import flags


@dataclasses.dataclass(frozen=True)
class Budget:
  """How long to time: warm-up steps to drop, then enough steps and seconds (or max_seconds)."""

  warmup_steps: int = 20
  min_steps: int = 200
  min_seconds: float = 20.0
  max_seconds: float = 40.0

  def enough(self, step_seconds: list) -> bool:
    """True once the timed steps (after the warm-up) meet both minimums, or max_seconds."""
    timed = step_seconds[self.warmup_steps :]
    seconds = sum(timed)
    return bool(timed) and (
      (len(timed) >= self.min_steps and seconds >= self.min_seconds) or seconds >= self.max_seconds
    )


def summary(step_seconds: list, batch_size: int, budget: Budget) -> dict:
  """Samples/s at the median step time, with min/max, over the steps after the warm-up."""
  timed = step_seconds[budget.warmup_steps :]
  if not timed:
    raise ValueError(f'no step was timed after the {budget.warmup_steps} warm-up steps')
  median = statistics.median(timed)
  return {
    'train_samples_per_sec': batch_size / median,
    'train_samples_per_sec_min': batch_size / max(timed),  # from the slowest step
    'train_samples_per_sec_max': batch_size / min(timed),
    'step_ms': 1e3 * median,
    'step_ms_min': 1e3 * min(timed),
    'step_ms_max': 1e3 * max(timed),
    'steps_timed': len(timed),
    'seconds_timed': sum(timed),
    'warmup_steps': budget.warmup_steps,
  }


def define_budget_flags() -> None:
  """--warmup_steps, --min_steps, --min_seconds, --max_seconds: a Budget from the command line."""
  flags.DEFINE_integer('warmup_steps', 20, 'Steps left out of the timing (compile, warm-up).')
  flags.DEFINE_integer('min_steps', 200, 'Time at least this many steps after the warm-up ...')
  flags.DEFINE_float('min_seconds', 20.0, '... and at least this many seconds ...')
  flags.DEFINE_float('max_seconds', 40.0, '... unless this many seconds pass first.')


def budget_as_flags(budget: Budget) -> list[str]:
  """The command-line flags that define_budget_flags reads back as budget (for a subprocess)."""
  return [f'--{field.name}={getattr(budget, field.name)}' for field in dataclasses.fields(budget)]


def budget_from_flags() -> Budget:
  """The Budget that define_budget_flags' flags describe."""
  f = flags.FLAGS
  return Budget(f.warmup_steps, f.min_steps, f.min_seconds, f.max_seconds)
