"""N sweep trials of one shape trained one by one vs vmapped as one program, same process.

Usage: python -m benchmarks.sweep_vmap [--config experiments/mnist_mlp.py]
         [--dropouts=0.1,0.2,0.3,0.4] [--learning_rates=1e-3,3e-3] [--repeats 3]

The trials are dropout x learning rate at the config's shape (mnist_mlp: 3 x 512 units), one
epoch each, seed 0. One by one: each trial through its own Trainer (setup, compile, calls), as
dnn_jax.train runs it. Vmapped: dnn_jax.sweep.vmapped's group, states stacked on a trial axis.
Compile time is measured apart. Epochs and evaluations are timed in rounds that alternate the
two ways (all N trials one by one, then the group, then the other way round), so a load that
comes and goes on a shared machine hits both; medians over the rounds after a warm-up round.
Prints one JSON line, then a table.
"""

import json
import os
import statistics
import time

import jax
from absl import app, flags
from ml_collections import config_flags

from dnn_jax import cli, experiment, trainer
from dnn_jax.sweep import space, vmapped

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  'config', 'experiments/mnist_mlp.py', 'Experiment config file.', lock_config=True
)
flags.DEFINE_list('dropouts', ['0.1', '0.2', '0.3', '0.4'], 'Dropout rates of the trials.')
flags.DEFINE_list('learning_rates', ['1e-3', '3e-3'], 'Learning rates of the trials.')
flags.DEFINE_integer('repeats', 3, 'Timed rounds (after one warm-up round).')


def trial_configs(config, dropouts, learning_rates) -> list:
  """One epoch per trial, every dropout x learning rate, the config's seed: one shape."""
  sweep_config = config.copy_and_resolve_references()
  with sweep_config.unlocked():
    sweep_config.sweep = {'epochs_per_trial': 1}
  params = [{'dropout': d, 'learning_rate': lr} for d in dropouts for lr in learning_rates]
  return [space.trial_config(sweep_config, p) for p in params]


def _seconds(fn) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


class OneByOne:
  """Every trial as dnn_jax trains any run: its own Trainer and compiled programs."""

  def __init__(self, configs):
    self.runs, self.setup_s, self.compile_s = [], 0.0, 0.0
    for config in configs:
      start = time.perf_counter()
      run = trainer.Trainer(experiment.setup(config))
      self.setup_s += time.perf_counter() - start
      run.compile()
      self.compile_s += run.programs.seconds
      self.runs.append(run)
    self.steps_per_epoch = self.runs[0].exp.steps_per_epoch

  def epoch(self) -> float:
    total = 0.0
    for run in self.runs:
      ((first, end),) = run.exp.calls
      order, key = run.epoch_inputs(0)
      total += _seconds(lambda run=run, order=order[first:end], key=key: run.train_call(order, key))
    return total

  def evaluate(self) -> float:
    return sum(_seconds(lambda r=r: r.evaluate('validation')) for r in self.runs)


class Vmapped:
  """The same trials as one group: one compile, one program per epoch."""

  def __init__(self, configs):
    start = time.perf_counter()
    self.exp = experiment.setup(configs[0])
    self.group = vmapped.build_group(self.exp, configs)
    self.setup_s = time.perf_counter() - start
    vmapped.compile_group(self.exp, self.group)
    self.compile_s = self.group.compile_seconds

  def epoch(self) -> float:
    return _seconds(lambda: vmapped.train_epoch(self.exp, self.group, 0))

  def evaluate(self) -> float:
    return _seconds(lambda: vmapped.evaluate(self.exp, self.group, 'validation'))


def measure(configs, repeats: int) -> dict:
  """Setup, compile, epoch and evaluation seconds of both ways; epochs in alternating rounds."""
  ways = {'one_by_one': OneByOne(configs), 'vmapped': Vmapped(configs)}
  times = {name: {'epoch_s': [], 'eval_s': []} for name in ways}
  for round_ in range(repeats + 1):  # round 0 warms up
    order = list(ways) if round_ % 2 == 0 else list(ways)[::-1]
    for name in order:
      epoch_s, eval_s = ways[name].epoch(), ways[name].evaluate()
      if round_:
        times[name]['epoch_s'].append(epoch_s)
        times[name]['eval_s'].append(eval_s)
  out = {}
  for name, way in ways.items():
    out[name] = {
      'setup_s': way.setup_s,
      'compile_s': way.compile_s,
      'epoch_s': statistics.median(times[name]['epoch_s']),
      'eval_s': statistics.median(times[name]['eval_s']),
      'epoch_s_rounds': times[name]['epoch_s'],
    }
    out[name]['total_s'] = sum(out[name][k] for k in ('compile_s', 'epoch_s', 'eval_s'))
  out['steps_per_epoch'] = ways['one_by_one'].steps_per_epoch
  return out


def main(argv):
  del argv
  config = FLAGS.config
  dropouts = [float(d) for d in FLAGS.dropouts]
  learning_rates = [float(lr) for lr in FLAGS.learning_rates]
  configs = cli.run_reporting_errors(trial_configs, config, dropouts, learning_rates)
  measured = measure(configs, FLAGS.repeats)
  alone, together = measured['one_by_one'], measured['vmapped']
  device = jax.devices()[0]
  keys = ('compile_s', 'epoch_s', 'eval_s', 'total_s')
  result = {
    'benchmark': 'sweep_vmap',
    'device': device.device_kind if device.platform != 'cpu' else f'cpu, {os.cpu_count()} cores',
    'trials': len(configs),
    'hidden_sizes': list(config.model.hidden_sizes),
    'batch_size': config.batch_size,
    'train_split': config.data.train_split,
    'repeats': FLAGS.repeats,
    'one_by_one': alone,
    'vmapped': together,
    'speedup': {k: alone[k] / together[k] for k in keys},
    # One optimizer step of every trial: one by one, the trials' steps add up.
    'step_ms': {
      name: 1e3 * measured[name]['epoch_s'] / measured['steps_per_epoch']
      for name in ('one_by_one', 'vmapped')
    },
  }
  print(json.dumps(result), flush=True)
  print(
    f'\n{len(configs)} trials (dropout x learning rate), units {config.model.hidden_sizes}, '
    f'1 epoch of {config.data.train_split}, on {result["device"]}:'
  )
  print(f'| {"seconds":<22} | {"one by one":>10} | {"vmapped":>8} | {"speed-up":>8} |')
  print('|' + '---|' * 4)
  names = ('compile (train + eval)', 'train, 1 epoch', 'evaluate', 'total')
  for key, name in zip(keys, names, strict=True):
    speedup = result['speedup'][key]
    print(f'| {name:<22} | {alone[key]:>10.2f} | {together[key]:>8.2f} | {speedup:>7.2f}x |')
  print(
    f'One step of all {len(configs)} trials: {result["step_ms"]["one_by_one"]:.1f} ms one by '
    f'one, {result["step_ms"]["vmapped"]:.1f} ms vmapped. Setup, not in the total: '
    f'{alone["setup_s"]:.2f}s one by one, {together["setup_s"]:.2f}s vmapped.'
  )


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
