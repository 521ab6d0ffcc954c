"""Train and eval throughput of an experiment's compiled steps, and of its peers.

Usage: python -m benchmarks.throughput --config experiments/mnist_cnn.py \
  [--dtypes float32,bfloat16] [--peers all] [--pipelines device,grain]
  [--record benchmarks/records.jsonl]

Every side is timed by one rule (benchmarks/steady.py): warm-up steps left out, then at
least --min_steps steps and --min_seconds seconds (or --max_seconds, for a very slow peer),
samples/s at the median step time, with min and max. dnn_jax times its compiled calls
(`steps_per_call` steps each; e.g. --config.steps_per_call=20 for the CNNs) in this process;
each peer runs in a process of its own, as its users run it:
  keras-tensorflow      Keras 3 model.fit, TensorFlow backend, Keras's default compile (on a
                        CPU-only machine: TensorFlow's own oneDNN kernels, no XLA)
  keras-tensorflow-xla  the same with jit_compile=True
  keras-jax             Keras 3 on the JAX backend (XLA)
  torch, torch-compile  PyTorch, a plain training loop, eager and torch.compile
                        (pip install -e '.[bench]'; left out with a note when missing)
In bfloat16 each uses its mixed-precision mode: dnn_jax's config.dtype, Keras's
mixed_bfloat16, torch.autocast. The model, batch, optimizer and data are the experiment's;
the peers train without augmentation, so with --peers dnn_jax does too (same work; a note
says so). --pipelines times dnn_jax with its data on the device and streamed by grain (each
streamed call waits for its reads; the share of time spent waiting is reported). Prints one
JSON object per measurement, then a table per dtype with dnn_jax's speed-up over each peer
and over the fastest one. --record appends
the measurements, with the machine's CPU model and features, to a records file that
`python -m benchmarks.results` renders into RESULTS.md.
"""

import datetime
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from benchmarks import records, steady, twins
from benchmarks.timing import median_seconds, train_step_seconds
from dnn_jax import cli, machine, trainer
from dnn_jax.errors import ConfigError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
flags.DEFINE_list('dtypes', [], "Compute dtypes to time: float32, bfloat16 (default: config's).")
flags.DEFINE_list('peers', [], "Peers to time beside dnn_jax: 'all' or names (see above).")
flags.DEFINE_list(
  'pipelines', [], "dnn_jax's data pipelines to time: device, grain (default: config's)."
)
steady.define_budget_flags()
flags.DEFINE_integer('eval_repeats', 3, 'Timed evaluations of the validation split.')
flags.DEFINE_string('record', '', 'Append the measurements to this records file (JSON lines).')
flags.mark_flags_as_required(['config'])

# name -> (module, environment, flags); each runs in a fresh process.
KERAS_TF = {'KERAS_BACKEND': 'tensorflow'}
PEERS = {
  'keras-tensorflow': ('benchmarks.keras_peer', KERAS_TF, ['--jit_compile=auto']),
  'keras-tensorflow-xla': ('benchmarks.keras_peer', KERAS_TF, ['--jit_compile=true']),
  'keras-jax': ('benchmarks.keras_peer', {'KERAS_BACKEND': 'jax'}, ['--jit_compile=auto']),
  'torch': ('benchmarks.torch_peer', {}, ['--compile=false']),
  'torch-compile': ('benchmarks.torch_peer', {}, ['--compile=true']),
}  # fmt: skip


def matmul_gflops(m: int, k: int, n: int, repeats: int) -> float:
  """float32 [m, k] @ [k, n] rate of this device, in GFLOP/s."""
  a, b = jnp.ones((m, k), jnp.float32), jnp.ones((k, n), jnp.float32)
  matmul = jax.jit(lambda a, b: a @ b)
  seconds = median_seconds(lambda: matmul(a, b).block_until_ready(), repeats * 20)
  return 2 * m * k * n / seconds / 1e9


def step_flops(run, steps_per_call: int) -> float:
  """XLA's FLOP count of one optimizer step on the whole batch (all devices together)."""
  # XLA counts a loop body once, whatever the trip count: the chunk already compiled says what
  # one step costs, where compiling a one-step chunk for it would double the compile time.
  cost = run.programs.train_calls[steps_per_call].cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return float(cost.get('flops', 0.0)) * run.exp.mesh.size


def measure(config, config_file: str, budget: steady.Budget, eval_repeats: int) -> dict:
  """dnn_jax's throughput numbers for one config, timed in this process."""
  config.progress = 'lines'
  run = trainer.build(config)
  exp = run.exp
  first, end = exp.calls[0]
  input_wait = []
  step_seconds = train_step_seconds(run, budget, input_wait)
  timed = steady.summary(step_seconds, config.batch_size, budget)
  kept = slice(len(step_seconds) - timed['steps_timed'], None)  # the timed steps, not the warm-up
  eval_seconds = median_seconds(lambda: run.evaluate('validation'), eval_repeats)
  num_eval = exp.data.splits.size('validation')
  flops_per_sample = step_flops(run, end - first) / config.batch_size
  batch = config.batch_size // exp.mesh.size
  widest = max(config.model.get('hidden_sizes', (512,)))
  device = exp.mesh.devices.flat[0]
  matmul = matmul_gflops(batch, widest, widest, eval_repeats)
  samples_per_sec = timed['train_samples_per_sec']
  return {
    'config': config_file,
    'model': model_label(config.model),
    'peer': 'dnn_jax',
    'framework': 'dnn_jax',
    'device': f'{exp.mesh.size} x {device.device_kind}',
    'data': 'synthetic' if config.data.synthetic else 'real',
    'dtype': config.dtype,
    'pipeline': exp.data.pipeline,
    # The share of the timed steps' time spent waiting for the stream (0: device-resident).
    'input_wait_fraction': sum(input_wait[kept]) / sum(step_seconds[kept]),
    'batch_size': config.batch_size,
    'steps_per_call': end - first,
    'augment': bool(config.augment),  # the peers never augment
    **timed,
    'eval_samples_per_sec': num_eval / eval_seconds,
    'epoch_seconds': exp.num_train / samples_per_sec,  # training only, at this rate
    'compile_seconds': run.programs.seconds,
    'flops_per_sample': flops_per_sample,
    'train_gflops': flops_per_sample * samples_per_sec / 1e9,
    'matmul_gflops': matmul,
    'matmul_fraction': flops_per_sample * samples_per_sec / 1e9 / matmul,
    'peak_memory_mb': peak_memory_mb(device),
  }


def model_label(model_config) -> str:
  """A short name of the model, enough to tell apart two runs of one config file."""
  if model_config.name == 'mlp':
    return 'mlp ' + 'x'.join(str(size) for size in model_config.hidden_sizes)
  if model_config.name == 'resnet_v2':
    return f'resnet_v2-{model_config.depth}'
  return model_config.name


def peak_memory_mb(device) -> float:
  """The device's peak allocation where it reports one (GPU); else this process's peak RSS."""
  stats = device.memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return stats['peak_bytes_in_use'] / 2**20
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # Linux: in KiB


def peer_names(requested: list) -> list:
  """The peers to run: 'all' is every one whose framework is installed (a note for the rest)."""
  if requested == ['all']:
    if importlib.util.find_spec('torch') is None:
      print("note: PyTorch is not installed, so its peers are left out (pip install -e '.[bench]')")
      return [name for name in PEERS if not name.startswith('torch')]
    return list(PEERS)
  unknown = [name for name in requested if name not in PEERS]
  if unknown:
    raise ConfigError(f'--peers: unknown {", ".join(unknown)}; choose from all, {", ".join(PEERS)}')
  return requested


def measure_peer(name: str, config, dtype: str, budget: steady.Budget, eval_repeats: int) -> dict:
  """One peer's numbers, timed in a fresh process; raises RuntimeError with its stderr's tail."""
  module, env, peer_flags = PEERS[name]
  with tempfile.NamedTemporaryFile('w', suffix='.json') as f:
    f.write(config.to_json())
    f.flush()
    command = [
      sys.executable, '-m', module, f'--config_json={f.name}', f'--dtype={dtype}',
      *steady.budget_as_flags(budget), f'--eval_repeats={eval_repeats}', *peer_flags,
    ]  # fmt: skip
    env = {**os.environ, **env, 'TF_CPP_MIN_LOG_LEVEL': '2'}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
  last = done.stdout.splitlines()[-1:] or ['']
  if done.returncode or not last[0].startswith('{'):
    raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no output')
  return {**json.loads(last[0]), 'peer': name}


def print_table(rows: list) -> None:
  """Per dtype: every side's samples/s [min-max], and dnn_jax's speed-up over each peer."""
  for dtype in dict.fromkeys(row['dtype'] for row in rows):
    group = [row for row in rows if row['dtype'] == dtype]
    streamed = [row for row in group if row.get('pipeline', 'device') != 'device']
    group = [row for row in group if row not in streamed]
    ours = next((row for row in group if row['peer'] == 'dnn_jax'), None)
    print(f'\n{dtype:<22}{"train samples/s (min-max)":>30}{"eval samples/s":>16}'
          f'{"compile s":>11}{"dnn_jax speed-up":>18}')  # fmt: skip
    for row in group:
      spread = f'({row["train_samples_per_sec_min"]:,.0f}-{row["train_samples_per_sec_max"]:,.0f})'
      ratio = f'{ours["train_samples_per_sec"] / row["train_samples_per_sec"]:.2f}x' if ours else ''
      print(f'{row["peer"]:<22}{row["train_samples_per_sec"]:>13,.0f} {spread:>16}'
            f'{row["eval_samples_per_sec"]:>16,.0f}{row["compile_seconds"]:>11.1f}'
            f'{ratio:>18}')  # fmt: skip
    peers = [row for row in group if row['peer'] != 'dnn_jax']
    if ours and peers:
      best = max(peers, key=lambda row: row['train_samples_per_sec'])
      print(
        f'fastest peer in {dtype}: {best["peer"]}; dnn_jax / fastest = '
        f'{ours["train_samples_per_sec"] / best["train_samples_per_sec"]:.2f}x'
      )
    for row in streamed:
      ratio = row['train_samples_per_sec'] / ours['train_samples_per_sec'] if ours else 0
      against = f'; {row["pipeline"]} / device = {ratio:.2f}x' if ours else ''
      print(
        f'dnn_jax streamed by {row["pipeline"]} in {dtype}: {row["train_samples_per_sec"]:,.0f} '
        f'train samples/s, waiting for input {100 * row["input_wait_fraction"]:.1f}% of the '
        f'time{against}'
      )


def config_to_time(config, dtype: str, with_peers: bool):
  """The experiment in dtype; beside peers, without augmentation, the work the peers do."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.dtype = dtype
    if with_peers:
      config.augment, config.eval_augment = ml_collections.ConfigDict(), ml_collections.ConfigDict()
  return config


def main(argv):
  del argv
  config_file = config_flags.get_config_filename(FLAGS['config'])
  budget = steady.budget_from_flags()
  peers = cli.run_reporting_errors(peer_names, FLAGS.peers) if FLAGS.peers else []
  if peers:
    cli.run_reporting_errors(twins.check, FLAGS.config)
  where = machine.describe()
  run_id = (
    datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%S') + f'-{os.getpid()}'
  )
  features = ', '.join(where['cpu_features']) or 'no AVX2'
  print(f'# {where["cpu_model"]} (family/model {where["cpu_family_model"]}, '
        f'{where["cpu_cores"]} cores, {features})', flush=True)  # fmt: skip
  rows, failed = [], []
  if peers and (FLAGS.config.augment or FLAGS.config.eval_augment):
    print('note: dnn_jax is timed without its augmentation here, as the peers train without it')
  for dtype in FLAGS.dtypes or [FLAGS.config.dtype]:
    config = config_to_time(FLAGS.config, dtype, with_peers=bool(peers))
    for pipeline in FLAGS.pipelines or [config.data.pipeline]:
      with config.unlocked():
        config.data.pipeline = pipeline
      result = cli.run_reporting_errors(measure, config, config_file, budget, FLAGS.eval_repeats)
      rows.append(result)
      print(json.dumps(result), flush=True)
    for name in peers:
      try:
        peer = measure_peer(name, config, dtype, budget, FLAGS.eval_repeats)
      except RuntimeError as e:
        print(f'warning: peer {name} ({dtype}) failed: {e}', flush=True)
        failed.append(f'{name} ({dtype})')
        continue
      rows.append({
        'config': config_file, 'model': result['model'], **peer, 'device': f'host {name}'
      })  # fmt: skip
      print(json.dumps(rows[-1]), flush=True)
  if FLAGS.record:
    for row in rows:
      kind = 'throughput' if row.get('pipeline', 'device') == 'device' else 'pipeline'
      records.append(FLAGS.record, kind, {'run_id': run_id, **row}, where)
  print_table(rows)
  if failed:
    print(f'error: {len(failed)} peer run(s) failed: {", ".join(failed)}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
