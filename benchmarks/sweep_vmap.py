"""N sweep trials of one shape trained one by one vs vmapped as one program, same process.

Usage: python -m benchmarks.sweep_vmap [--config experiments/mnist_mlp.py]
         [--dropouts=0.1,0.2,0.3,0.4] [--learning_rates=1e-3,3e-3] [--repeats 3]

The trials are dropout x learning rate at the config's shape (mnist_mlp: 3 x 512 units), one
epoch each, seed 0. One by one: each trial through experiment.setup and compile_training, as
dnn_jax.train runs it. Vmapped: dnn_jax.sweep.vmapped's group, states stacked on a trial axis.
Compile time is measured apart; epoch and evaluation times are medians of timed calls after a
warm-up. Prints one JSON line, then a table.
"""

import json
import os
import time

import jax
from absl import app, flags
from ml_collections import config_flags

from benchmarks.timing import median_seconds
from dnn_jax import cli, experiment
from dnn_jax.sweep import space, vmapped

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  'config', 'experiments/mnist_mlp.py', 'Experiment config file.', lock_config=True
)
flags.DEFINE_list('dropouts', ['0.1', '0.2', '0.3', '0.4'], 'Dropout rates of the trials.')
flags.DEFINE_list('learning_rates', ['1e-3', '3e-3'], 'Learning rates of the trials.')
flags.DEFINE_integer('repeats', 3, 'Timed calls per measurement (after one warm-up call).')


def trial_configs(config, dropouts, learning_rates) -> list:
  """One epoch per trial, every dropout x learning rate, seed 0: one shape."""
  sweep_config = config.copy_and_resolve_references()
  with sweep_config.unlocked():
    sweep_config.sweep = {'epochs_per_trial': 1}
  params = [{'dropout': d, 'learning_rate': lr} for d in dropouts for lr in learning_rates]
  return [space.trial_config(sweep_config, p) for p in params]


def one_by_one(configs, repeats: int) -> dict:
  """Sums over the trials, each set up, compiled and timed on its own."""
  compile_s, epoch_s, eval_s, setup_s = [], [], [], []
  for config in configs:
    start = time.perf_counter()
    exp = experiment.setup(config)
    setup_s.append(time.perf_counter() - start)
    experiment.compile_training(exp)
    compile_s.append(exp.compile_seconds)
    ((first, end),) = exp.chunks
    chunk = exp.compiled_chunk(end - first)
    order = exp.epoch_order(exp.shuffle_key, 0)

    def epoch(exp=exp, chunk=chunk, order=order):
      exp.state, sums = chunk(exp.state, *exp.arrays['train'], order, exp.example_key)
      jax.block_until_ready(sums)

    epoch_s.append(median_seconds(epoch, repeats))
    evaluate = lambda exp=exp: experiment.evaluate(exp, exp.state, 'validation')
    eval_s.append(median_seconds(evaluate, repeats))
    exp_steps = exp.steps_per_epoch
    del exp, chunk
  return {
    'steps_per_epoch': exp_steps,
    'setup_s': sum(setup_s),
    'compile_s': sum(compile_s),
    'epoch_s': sum(epoch_s),
    'eval_s': sum(eval_s),
  }


def vmapped_group(configs, repeats: int) -> dict:
  """The same trials as one group: one compile, one program per epoch."""
  start = time.perf_counter()
  exp = experiment.setup(configs[0])
  group = vmapped.build_group(exp, configs)
  setup_s = time.perf_counter() - start
  vmapped.compile_group(exp, group)
  epoch_s = median_seconds(lambda: vmapped.train_epoch(exp, group, 0), repeats)
  eval_s = median_seconds(lambda: vmapped.evaluate(exp, group, 'validation'), repeats)
  return {
    'setup_s': setup_s,
    'compile_s': group.compile_seconds,
    'epoch_s': epoch_s,
    'eval_s': eval_s,
  }


def main(argv):
  del argv
  config = FLAGS.config
  dropouts = [float(d) for d in FLAGS.dropouts]
  learning_rates = [float(lr) for lr in FLAGS.learning_rates]
  configs = cli.run_reporting_errors(trial_configs, config, dropouts, learning_rates)
  alone = one_by_one(configs, FLAGS.repeats)
  together = vmapped_group(configs, FLAGS.repeats)
  for result in (alone, together):
    result['total_s'] = result['compile_s'] + result['epoch_s'] + result['eval_s']
  device = jax.devices()[0]
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
    'speedup': {k: alone[k] / together[k] for k in ('compile_s', 'epoch_s', 'eval_s', 'total_s')},
    # Time per optimizer step of all trials together: one by one, each trial's steps add up.
    'step_ms': {
      'one_by_one': 1e3 * alone['epoch_s'] / alone['steps_per_epoch'],
      'vmapped': 1e3 * together['epoch_s'] / alone['steps_per_epoch'],
    },
  }
  print(json.dumps(result), flush=True)
  print(
    f'\n{len(configs)} trials (dropout x learning rate), units {config.model.hidden_sizes}, '
    f'1 epoch of {config.data.train_split}, on {result["device"]}:'
  )
  print(f'| {"seconds":<22} | {"one by one":>10} | {"vmapped":>8} | {"speed-up":>8} |')
  print('|' + '---|' * 4)
  for key, name in (
    ('compile_s', 'compile (train + eval)'),
    ('epoch_s', 'train, 1 epoch'),
    ('eval_s', 'evaluate'),
    ('total_s', 'total'),
  ):
    speedup = result['speedup'][key]
    print(f'| {name:<22} | {alone[key]:>10.2f} | {together[key]:>8.2f} | {speedup:>7.2f}x |')
  print(
    f'Per step of all {len(configs)} trials: {result["step_ms"]["one_by_one"]:.1f} ms one by one, '
    f'{result["step_ms"]["vmapped"]:.1f} ms vmapped. Setup, not in the total: '
    f'{alone["setup_s"]:.2f}s one by one, {together["setup_s"]:.2f}s vmapped.'
  )


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
