"""Train and eval throughput of an experiment's compiled epoch, and the machine's matmul rate.

Usage: python -m benchmarks.throughput --config experiments/mnist_mlp.py [--repeats 5] [--peers]

Prints one JSON object per line (dnn_jax, then each peer), then a readable table. Medians of
timed compiled calls after a warm-up call; compile time is measured apart. A call trains
`steps_per_call` steps (default: a whole epoch; e.g. --config.steps_per_call=20 for big
models) and evaluates the whole validation split (shrink it with
--config.data.validation_split=test[:1000]). The matmul rate (float32, the model's widest
dense shape) tells what this device can do; matmul_fraction is the achieved share of it.
--config.data.synthetic=True times random data of the dataset's shapes (nothing is read).
--peers also times the same model in Keras 3 with the TensorFlow backend (XLA, and -nojit:
its own oneDNN kernels) and the JAX backend, each in a process of its own
(benchmarks/keras_peer.py), and prints dnn_jax's training speed over each.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags

from benchmarks.timing import median_seconds, time_train_call
from dnn_jax import cli, experiment

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
flags.DEFINE_integer('repeats', 5, 'Timed calls per measurement (after one warm-up call).')
flags.DEFINE_bool('peers', False, 'Also time the same model in Keras 3 (TensorFlow and JAX).')
PEERS = (('tensorflow', True), ('tensorflow', False), ('jax', True))  # (backend, jit_compile)
flags.mark_flags_as_required(['config'])


def matmul_gflops(m: int, k: int, n: int, repeats: int) -> float:
  """float32 [m, k] @ [k, n] rate of this device, in GFLOP/s."""
  a, b = jnp.ones((m, k), jnp.float32), jnp.ones((k, n), jnp.float32)
  matmul = jax.jit(lambda a, b: a @ b)
  seconds = median_seconds(lambda: matmul(a, b).block_until_ready(), repeats * 20)
  return 2 * m * k * n / seconds / 1e9


def step_flops(exp) -> float:
  """XLA's FLOP count of one optimizer step on the whole batch (all devices together)."""
  # A one-step chunk: XLA counts a loop body once, whatever the trip count.
  order = exp.epoch_order(exp.shuffle_key, 0)[:1]
  args = (exp.state, *exp.arrays['train'], order, exp.example_key)
  cost = exp.train_chunk.lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return float(cost.get('flops', 0.0)) * exp.mesh.size


def measure(config, config_file: str, repeats: int) -> dict:
  """Throughput numbers for one config."""
  config.progress = 'lines'  # no bar: steps_per_call 0 then means one compiled call per epoch
  exp = experiment.build(config)
  first, end = exp.chunks[0]
  samples_per_sec = time_train_call(exp, repeats)
  call_seconds = (end - first) * config.batch_size / samples_per_sec
  eval_seconds = median_seconds(lambda: experiment.evaluate(exp, exp.state, 'validation'), repeats)
  num_eval = len(exp.splits.validation['label'])
  flops_per_sample = step_flops(exp) / config.batch_size
  batch = config.batch_size // exp.mesh.size
  widest = max(config.model.get('hidden_sizes', (512,)))
  device = exp.mesh.devices.flat[0]
  matmul = matmul_gflops(batch, widest, widest, repeats)
  return {
    'config': config_file,
    'device': f'{exp.mesh.size} x {device.device_kind}',
    'data': 'synthetic' if config.data.synthetic else 'real',
    'dtype': config.dtype,
    'batch_size': config.batch_size,
    'steps_per_call': end - first,
    'train_samples_per_sec': samples_per_sec,
    'eval_samples_per_sec': num_eval / eval_seconds,
    'step_ms': 1e3 * call_seconds / (end - first),
    'epoch_seconds': exp.num_train / samples_per_sec,  # training only, at this rate
    'compile_seconds': exp.compile_seconds,
    'flops_per_sample': flops_per_sample,
    'train_gflops': flops_per_sample * samples_per_sec / 1e9,
    'matmul_gflops': matmul,
    'matmul_fraction': flops_per_sample * samples_per_sec / 1e9 / matmul,
    'peak_memory_mb': peak_memory_mb(device),
  }


def peak_memory_mb(device) -> float:
  """The device's peak allocation where it reports one (GPU); else this process's peak RSS."""
  stats = device.memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return stats['peak_bytes_in_use'] / 2**20
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # Linux: in KiB


def measure_peers(config, config_file: str, steps: int, repeats: int) -> list:
  """Keras 3 peers of config's model, each timed in a fresh process (one backend each)."""
  results = []
  with tempfile.NamedTemporaryFile('w', suffix='.json') as f:
    f.write(config.to_json())
    f.flush()
    for backend, jit_compile in PEERS:
      command = [
        sys.executable, '-m', 'benchmarks.keras_peer', f'--config_json={f.name}',
        f'--steps={steps}', f'--repeats={repeats}', f'--jit_compile={jit_compile}',
      ]  # fmt: skip
      env = {**os.environ, 'KERAS_BACKEND': backend, 'TF_CPP_MIN_LOG_LEVEL': '2'}
      done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
      if done.returncode:
        raise RuntimeError(f'keras peer {backend} failed:\n{done.stderr[-2000:]}')
      results.append({'config': config_file, **json.loads(done.stdout.splitlines()[-1])})
  return results


def main(argv):
  del argv
  config_file = config_flags.get_config_filename(FLAGS['config'])
  result = cli.run_reporting_errors(measure, FLAGS.config, config_file, FLAGS.repeats)
  print(json.dumps(result), flush=True)
  peers = []
  if FLAGS.peers:
    peers = measure_peers(FLAGS.config, config_file, result['steps_per_call'], FLAGS.repeats)
    for peer in peers:
      print(json.dumps({**peer, 'device': f'host {peer["peer"]}'}), flush=True)
  for key, value in result.items():
    shown = f'{value:,.2f}' if isinstance(value, float) else str(value)
    print(f'{key:>22}  {shown}')
  if peers:
    print(f'\n{"":<24}{"train samples/s":>16}{"eval samples/s":>16}{"compile s":>11}'
          f'{"dnn_jax train speed-up":>24}')  # fmt: skip
    for name, row in [('dnn_jax', result)] + [(p['peer'], p) for p in peers]:
      ratio = result['train_samples_per_sec'] / row['train_samples_per_sec']
      print(f'{name:<24}{row["train_samples_per_sec"]:>16,.0f}{row["eval_samples_per_sec"]:>16,.0f}'
            f'{row["compile_seconds"]:>11.1f}{ratio:>23.2f}x')  # fmt: skip


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
