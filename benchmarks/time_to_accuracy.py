"""Time to accuracy: wall-clock from process start to the first epoch reaching a target.

Usage: python -m benchmarks.time_to_accuracy --config experiments/mnist_cnn.py --target 0.99
         [--dtypes float32,bfloat16] [--peers keras-tensorflow] [--max_epochs 12]
         [--nowith_dnn_jax]

For each dtype, dnn_jax (benchmarks/tta_dnn_jax.py: dnn_jax's own training loop with
config.stop_at_accuracy) and then each peer (benchmarks/tta_keras.py: the same recipe in Keras
on TensorFlow) run in a fresh process, which trains until the first epoch whose validation
accuracy reaches --target, or --max_epochs. The total is this process's clock from launching
the run to its exit; the run measures its phases: start-up (launch to its imports done), data,
compile, train, evaluate; 'other' is what the total holds beyond them (building the model,
checkpoints, the closing test evaluation, exiting). Prints one JSON line per run, then a table,
and appends each run to --record. A target not reached is reported as such, not as an error.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags
from ml_collections import config_flags

from benchmarks import records, twins
from dnn_jax import cli, configs
from dnn_jax.errors import UserError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
flags.DEFINE_float('target', None, 'The validation accuracy to reach, in (0, 1].')
flags.DEFINE_list('dtypes', ['float32'], 'Compute dtypes to run: float32, bfloat16.')
flags.DEFINE_list('peers', ['keras-tensorflow'], "Frameworks beside dnn_jax ('' = none).")
flags.DEFINE_bool('with_dnn_jax', True, 'Run dnn_jax too (false: the peers alone, e.g. the '
                  "Keras side-by-side of a run recorded with benchmarks.record_run).")  # fmt: skip
flags.DEFINE_integer('max_epochs', None, "The most epochs to train (default: the config's).")
flags.DEFINE_string('record', str(records.DEFAULT_PATH), "Append records here ('' = don't).")
flags.mark_flags_as_required(['config', 'target'])

# Peer -> (module run with `-m`, extra environment).
RUNNERS = {
  'dnn_jax': ('benchmarks.tta_dnn_jax', {}),
  'keras-tensorflow': ('benchmarks.tta_keras', {'KERAS_BACKEND': 'tensorflow'}),
}
PHASES = ('startup', 'data', 'compile', 'train', 'evaluate')


def run_config(config, dtype: str, target: float, max_epochs: int):
  """The experiment's config as one run of the benchmark trains it."""
  config = config.copy_and_resolve_references()
  config.dtype = dtype
  config.stop_at_accuracy = target
  config.num_epochs = max_epochs
  config.progress = 'lines'  # one compiled call per epoch, whatever the terminal
  return configs.validated(config)


def check_peer_recipe(config) -> None:
  """What the Keras twin cannot build or train the same way: one line, before any run starts."""
  twins.check(config)
  twins.check_fit_recipe(config)


def run_one(peer: str, config) -> dict:
  """Runs one peer in a fresh process; its phases, accuracy and total seconds."""
  module, env = RUNNERS[peer]
  with tempfile.TemporaryDirectory() as tmp:
    config_path = os.path.join(tmp, 'config.json')
    with open(config_path, 'w') as f:
      f.write(config.to_json())
    command = [sys.executable, '-m', module, f'--recipe_json={config_path}']
    if peer == 'dnn_jax':
      command.append(f'--workdir={os.path.join(tmp, "run")}')
    env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2', **env}
    # Its training lines pass through on stderr; stdout brings its JSON line back.
    launched_at, start = time.time(), time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=False)
    total = time.perf_counter() - start
  if done.returncode:
    sys.exit(f'error: the {peer} run failed (exit {done.returncode}); its output is above')
  out = json.loads([line for line in done.stdout.splitlines() if line.startswith('{')][-1])
  return {
    **out,
    'seconds_total': total,
    'seconds_startup': out.pop('imported_at') - launched_at,
  }


def record_fields(config_file: str, peer: str, config, result: dict) -> dict:
  """One run's record: what ran, whether it reached the target, and its seconds per phase."""
  target = config.stop_at_accuracy
  return {
    'config': config_file,
    'peer': peer,
    'dtype': config.dtype,
    'target': target,
    'reached': result['accuracy'] >= target,
    'epochs': result['epochs'],
    'max_epochs': config.num_epochs,
    'accuracy': result['accuracy'],
    'val_accuracies': result['val_accuracies'],
    'seconds_total': result['seconds_total'],
    **{f'seconds_{phase}': result[f'seconds_{phase}'] for phase in PHASES},
    'batch_size': config.batch_size,
    'seed': config.seed,  # weights, data order, dropout: seeds tell a gap from chance
  }


def speedup(ours: dict, theirs: dict) -> str:
  """Peer total / dnn_jax total: '>' if only the peer missed the target, 'n/a' if dnn_jax did."""
  if not ours['reached']:
    return 'n/a'
  ratio = f'{theirs["seconds_total"] / ours["seconds_total"]:.2f}x'
  return ratio if theirs['reached'] else '>' + ratio


def table(rows: list) -> str:
  """Seconds per phase side by side, one row per run, dnn_jax's speed-up on its peers' rows."""
  head = ['dtype', 'peer', *PHASES, 'other', 'total', 'epochs', 'accuracy', 'reached', 'speed-up']
  lines = [f'{head[0]:<10}{head[1]:<18}' + ''.join(f'{h:>10}' for h in head[2:])]
  ours = {}
  for row in rows:
    if row['peer'] == 'dnn_jax':
      ours[row['dtype']] = row
    phases = [row[f'seconds_{p}'] for p in PHASES]
    other = row['seconds_total'] - sum(phases)
    cells = [f'{s:.1f}' for s in (*phases, other, row['seconds_total'])]
    cells += [str(row['epochs']), f'{row["accuracy"]:.4f}', 'yes' if row['reached'] else 'no']
    mine = ours.get(row['dtype'])
    cells.append(speedup(mine, row) if mine and row is not mine else '')
    lines.append(f'{row["dtype"]:<10}{row["peer"]:<18}' + ''.join(f'{c:>10}' for c in cells))
  return '\n'.join(lines)


def plan(config, target: float, dtypes: list, peers: list, max_epochs: int | None) -> list:
  """One config per dtype, each checked; a UserError for a bad flag or an unmatched recipe."""
  unknown = [p for p in peers if p not in RUNNERS] + [d for d in dtypes if d not in configs.DTYPES]
  if unknown:
    raise UserError(f'unknown peer or dtype {unknown[0]!r}; peers: keras-tensorflow, '
                    f'dtypes: {", ".join(configs.DTYPES)}')  # fmt: skip
  if not dtypes:
    raise UserError('--dtypes is empty; give float32, bfloat16 or both')
  if not peers:
    raise UserError("nothing to run: --nowith_dnn_jax and --peers=''; name a peer or drop one")
  if not 0 < target <= 1:
    raise UserError(f'--target={target} must be a validation accuracy in (0, 1]')
  if peers != ['dnn_jax']:
    check_peer_recipe(config)
  return [run_config(config, d, target, max_epochs or config.num_epochs) for d in dtypes]


def main(argv):
  del argv
  config_file = config_flags.get_config_filename(FLAGS['config'])
  peers = ['dnn_jax'] * FLAGS.with_dnn_jax + [p for p in FLAGS.peers if p]
  runs = cli.run_reporting_errors(
    plan, FLAGS.config, FLAGS.target, FLAGS.dtypes, peers, FLAGS.max_epochs
  )
  rows = []
  for config in runs:
    for peer in peers:
      print(f'--- {peer}, {config.dtype}: up to {config.num_epochs} epochs', file=sys.stderr)
      result = run_one(peer, config)
      fields = record_fields(config_file, peer, config, result)
      print(json.dumps({**fields, **result}), flush=True)
      if FLAGS.record:
        records.append(FLAGS.record, 'time_to_accuracy', fields)
      rows.append(fields)
  print(f'\nTime to val_accuracy >= {FLAGS.target} ({config_file}, batch '
        f'{rows[0]["batch_size"]}), seconds from process start:')  # fmt: skip
  print(table(rows))


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
