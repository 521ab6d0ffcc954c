"""Strong and weak scaling of an experiment's compiled training call over 1, 2, 4, ... devices.

Usage: python -m benchmarks.scaling --config experiments/mnist_mlp.py [--devices 1,2,4]

Strong scaling keeps the global batch (config.batch_size) and splits it over more devices;
weak scaling keeps the per-device batch and grows the global one with the device count.
Efficiency is samples/s on n devices over n times samples/s on one. On a CPU the devices
are simulated (JAX_NUM_CPU_DEVICES is set to the largest count when not given): they share
the same cores, so the numbers test the scaling code, not the machine. Prints one JSON object
per measurement, then a table.
"""

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from dnn_jax import cli
from dnn_jax.errors import ConfigError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=False)
flags.DEFINE_list('devices', ['1', '2', '4'], 'Device counts to measure.')
flags.DEFINE_integer('repeats', 5, 'Timed calls per measurement (after one warm-up call).')
flags.mark_flags_as_required(['config'])


def measure(config, config_file: str, counts: list, repeats: int) -> list:
  """One record per (mode, device count)."""
  import jax

  from benchmarks.timing import time_train_call
  from dnn_jax import trainer

  available = len(jax.devices())
  if max(counts) > available:
    raise ConfigError(
      f'--devices asks for {max(counts)} but {available} {jax.devices()[0].platform} device(s) '
      f'exist; on CPU set JAX_NUM_CPU_DEVICES={max(counts)}'
    )
  records, per_device = [], config.batch_size // counts[0]
  for mode in ('strong', 'weak'):
    base = None
    for count in counts:
      run = config.copy_and_resolve_references()
      run.num_devices, run.progress = count, 'lines'
      run.batch_size = config.batch_size if mode == 'strong' else per_device * count
      built = trainer.build(run)
      samples_per_sec = time_train_call(built, repeats)
      base = base or samples_per_sec
      records.append({
        'config': config_file,
        'device': f'{count} x {built.exp.mesh.devices.flat[0].device_kind}',
        'mode': mode,
        'devices': count,
        'batch_size': run.batch_size,
        'train_samples_per_sec': samples_per_sec,
        'efficiency': samples_per_sec / (count * base),
      })  # fmt: skip
  return records


def main(argv):
  del argv
  counts = sorted(int(c) for c in FLAGS.devices)
  config_file = config_flags.get_config_filename(FLAGS['config'])
  records = cli.run_reporting_errors(measure, FLAGS.config, config_file, counts, FLAGS.repeats)
  for record in records:
    print(json.dumps(record))
  print(f'\n{"mode":<8}{"devices":>8}{"batch":>8}{"train samples/s":>17}{"efficiency":>12}')
  for r in records:
    print(f'{r["mode"]:<8}{r["devices"]:>8}{r["batch_size"]:>8}'
          f'{r["train_samples_per_sec"]:>17,.0f}{r["efficiency"]:>12.2f}')  # fmt: skip


if __name__ == '__main__':
  # Before JAX starts: simulated CPU devices for the largest count (ignored on GPUs).
  for i, arg in enumerate(sys.argv):
    if arg.startswith('--devices'):
      value = arg.split('=', 1)[1] if '=' in arg else sys.argv[i + 1]
      os.environ.setdefault('JAX_NUM_CPU_DEVICES', str(max(int(c) for c in value.split(','))))
  os.environ.setdefault('JAX_NUM_CPU_DEVICES', '4')
  app.run(main, flags_parser=cli.parse_flags)
