"""Where a training step's time goes: XLA's kernels ranked by time per step, with their HLO.

Usage: python -m benchmarks.profile --config experiments/cifar10_cnn.py [--top 25]
  [--config.steps_per_call=30]

Traces one warm compiled call with jax.profiler (XLA's CPU backend annotates every kernel
when started with --xla_cpu_enable_xprof_traceme, which this module sets before JAX starts),
sums each kernel's time over the call's steps and over threads, and prints the largest with
the HLO instruction that names its shape and source op. The trace stays in --trace_dir for
TensorBoard's or Perfetto's viewers. On a GPU the device's own kernels are ranked instead.
"""

import os

os.environ['XLA_FLAGS'] = (
  os.environ.get('XLA_FLAGS', '') + ' --xla_cpu_enable_xprof_traceme=true'
).strip()

import collections
import pathlib
import re
import tempfile

import jax
from absl import app, flags
from jax._src.lib import _profile_data
from ml_collections import config_flags

from benchmarks.timing import time_train_call
from dnn_jax import cli, trainer

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
flags.DEFINE_integer('top', 25, 'How many kernels to list.')
flags.DEFINE_string('trace_dir', '', 'Where the trace goes (default: a temporary directory).')
flags.mark_flags_as_required(['config'])

# Host-side bookkeeping events, not kernels.
NOT_KERNELS = re.compile(r'^(ThunkExecutor|SlinkyThreadPool|\$|PjRt|TfrtCpu|XLAPjRt)')


def kernel_times(trace_file: pathlib.Path) -> collections.Counter:
  """Nanoseconds per kernel name, summed over the trace's events on XLA's worker threads."""
  profile = _profile_data.ProfileData.from_file(str(trace_file))
  totals = collections.Counter()
  for plane in profile.planes:
    for line in plane.lines:
      if line.name == 'python':
        continue
      for event in line.events:
        if not NOT_KERNELS.match(event.name):
          totals[event.name] += event.duration_ns
  return totals


def hlo_line(hlo_text: str, name: str) -> str:
  """The HLO instruction that defines `name`, shortened: its shape, op and source op."""
  match = re.search(r'\n\s*%?' + re.escape(name) + r' = ([^\n]*)', hlo_text)
  if not match:
    return ''
  text = match.group(1)
  op_name = re.search(r'op_name="([^"]*)"', text)
  head = re.sub(r'\(.*', '', text)  # the shape and the op
  if not op_name:
    return head
  source = re.sub(r'^jit\(train_chunk\)/(while/body/)?(closed_call/)?', '', op_name.group(1))
  return f'{head}  [{source}]'


def profile(config, top: int, trace_dir: str) -> list[tuple[float, str, str]]:
  """(ms per step, kernel, HLO) of the `top` costliest kernels of one compiled call."""
  config.progress = 'lines'
  run = trainer.build(config)
  first, end = run.exp.calls[0]
  steps = end - first
  time_train_call(run, 1)  # warm: the traced call is a steady-state one
  trace_dir = pathlib.Path(trace_dir or tempfile.mkdtemp(prefix='dnn_jax_profile_'))
  with jax.profiler.trace(str(trace_dir)):
    samples_per_sec = time_train_call(run, 1)
  files = sorted(trace_dir.glob('**/*.xplane.pb'), key=lambda p: p.stat().st_mtime)
  totals = kernel_times(files[-1])
  # time_train_call(run, 1) runs a warm-up call and a timed one: two calls in the trace.
  traced_steps = 2 * steps
  hlo = run.programs.train_calls[steps].as_text()
  step_ms = 1e3 * config.batch_size / samples_per_sec
  print(
    f'{config.batch_size * steps} samples in {steps} steps per call; {step_ms:.2f} ms per step '
    f'(wall); kernels summed over threads: {sum(totals.values()) / 1e6 / traced_steps:.2f} ms '
    f'per step; trace in {trace_dir}'
  )
  rows = [
    (ns / 1e6 / traced_steps, name, hlo_line(hlo, name)) for name, ns in totals.most_common(top)
  ]
  for ms, name, line in rows:
    print(f'{ms:8.3f} ms  {name:<32} {line[:150]}')
  return rows


def main(argv):
  del argv
  cli.run_reporting_errors(profile, FLAGS.config, FLAGS.top, FLAGS.trace_dir)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
