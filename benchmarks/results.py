"""Writes benchmarks/RESULTS.md and its ratio chart from the records: every measured number.

Usage: python -m benchmarks.results [--records benchmarks/records.jsonl] [--out benchmarks]

Records come from `benchmarks.throughput --record`, `benchmarks.time_to_accuracy --record`
and `benchmarks.fit_check --record`; each carries its date, commit, machine (CPU model,
family/model, features), library versions and command. For every machine and experiment the
newest throughput run is summarized against its fastest peer, per dtype; every run is then
listed in full. The chart shows dnn_jax's speed-up over the fastest peer of each summary row.
With --readme FILE, FILE's block between the two `results` markers gets the summary table.
"""

import pathlib
import sys

from absl import app, flags

from benchmarks import records, seeds_table, tutorial_table
from benchmarks.records import machine_label
from dnn_jax import files

ROOT = pathlib.Path(__file__).resolve().parent.parent

FLAGS = flags.FLAGS
flags.DEFINE_string('records', str(records.DEFAULT_PATH), 'The records file (JSON lines).')
flags.DEFINE_string('out', str(pathlib.Path(__file__).parent), 'Where RESULTS.md and the PNG go.')
flags.DEFINE_string('readme', '', "A file whose results block gets the summary ('' = none).")

CHART = 'ratios.png'
README_BLOCK = ('<!-- results:start (written by python -m benchmarks.results) -->',
                '<!-- results:end -->')  # fmt: skip
TUTORIAL_BLOCK = ('<!-- tutorial:start (written by python -m benchmarks.results) -->',
                  '<!-- tutorial:end -->')  # fmt: skip
GOALS = {'mlp': 1.2}  # dnn_jax / fastest peer wanted; other models: 1.0


def experiment_label(record: dict) -> str:
  """The config file's name, the model where it was changed from the command line, the batch."""
  name = pathlib.Path(record['config']).stem
  model = record.get('model', '')
  shown = f' ({model})' if model.startswith('resnet') else ''
  return f'{name}{shown}, batch {record["batch_size"]}'


def goal(record: dict) -> float:
  """dnn_jax's wanted speed-up over the fastest peer for this record's model."""
  return GOALS.get(record.get('model', '').split(' ')[0], 1.0)


def newest_runs(throughput: list) -> dict:
  """(machine, experiment) -> the records of its newest run among those with the most peers.

  A later run with fewer peers (a quick check against one of them) does not replace a full one.
  """
  runs = {}
  for record in throughput:  # oldest first
    key = (machine_label(_ours(throughput, record)), experiment_label(record))
    runs.setdefault(key, {}).setdefault(record['run_id'], []).append(record)
  chosen = {}
  for key, by_run in runs.items():
    order = list(by_run)  # run ids, oldest first
    best = max(order, key=lambda run: (len({r['peer'] for r in by_run[run]}), order.index(run)))
    chosen[key] = by_run[best]
  return chosen


def _ours(throughput: list, record: dict) -> dict:
  """The dnn_jax record of record's run (its device names the machine, a peer's does not)."""
  return next(
    (r for r in throughput if r['run_id'] == record['run_id'] and r['peer'] == 'dnn_jax'), record
  )


def summary_rows(runs: dict) -> list:
  """One row per (machine, experiment, dtype): dnn_jax, the fastest peer, the ratio, the goal."""
  rows = []
  for (where, experiment), group in runs.items():
    for dtype in dict.fromkeys(r['dtype'] for r in group):
      ours = [r for r in group if r['dtype'] == dtype and r['peer'] == 'dnn_jax']
      peers = [r for r in group if r['dtype'] == dtype and r['peer'] != 'dnn_jax']
      if not ours or not peers:
        continue
      best = max(peers, key=lambda r: r['train_samples_per_sec'])
      ratio = ours[0]['train_samples_per_sec'] / best['train_samples_per_sec']
      rows.append({
        'machine': where, 'experiment': experiment, 'dtype': dtype, 'ours': ours[0],
        'best': best, 'ratio': ratio, 'goal': goal(ours[0]),
      })  # fmt: skip
  return rows


def samples(record: dict) -> str:
  """'1,234 (1,100-1,300)': median samples/s with the slowest and fastest step's."""
  low, high = record.get('train_samples_per_sec_min'), record.get('train_samples_per_sec_max')
  spread = f' ({low:,.0f}-{high:,.0f})' if low and high else ''
  return f'{record["train_samples_per_sec"]:,.0f}{spread}'


def summary_table(rows: list, heading: str = '###') -> list:
  """Markdown lines of the summary, a table per machine under a heading of this level."""
  lines = []
  for where in dict.fromkeys(row['machine'] for row in rows):
    lines += [f'{heading} {where}', '',
              '| experiment | dtype | dnn_jax samples/s | fastest peer | its samples/s | '
              'dnn_jax / fastest | goal | date, commit |',
              '|---|---|---|---|---|---|---|---|']  # fmt: skip
    for row in (r for r in rows if r['machine'] == where):
      met = 'met' if row['ratio'] >= row['goal'] else '**not met**'
      ours = row['ours']
      lines.append(
        f'| {row["experiment"]} | {row["dtype"]} | {samples(ours)} | {row["best"]["peer"]} | '
        f'{samples(row["best"])} | {row["ratio"]:.2f}x | {row["goal"]:.1f}x {met} | '
        f'{ours["machine"]["date"]}, {ours["machine"]["commit"]} |'
      )
    lines.append('')
  return lines


def run_details(throughput: list) -> list:
  """Markdown lines listing every throughput run in full, newest first."""
  lines = []
  run_ids = list(dict.fromkeys(r['run_id'] for r in throughput))
  for run_id in reversed(run_ids):
    group = [r for r in throughput if r['run_id'] == run_id]
    ours = _ours(throughput, group[0])
    where, versions = ours['machine'], ours['machine'].get('versions', {})
    lines += [
      f'#### {experiment_label(ours)}: {where["date"]}, commit {where["commit"]}', '',
      f'{machine_label(ours)}; features {", ".join(where["cpu_features"]) or "none listed"}; '
      + ', '.join(f'{k} {v}' for k, v in versions.items()), '',
      f'```bash\n{ours["command"]}\n```', '',
      '| side | dtype | train samples/s (slowest-fastest step) | steps timed | eval samples/s | '
      'compile s | dnn_jax speed-up |', '|---|---|---|---|---|---|---|',
    ]  # fmt: skip
    for record in group:
      mine = next(r for r in group if r['peer'] == 'dnn_jax' and r['dtype'] == record['dtype'])
      ratio = mine['train_samples_per_sec'] / record['train_samples_per_sec']
      lines.append(
        f'| {record["peer"]} | {record["dtype"]} | {samples(record)} | '
        f'{record.get("steps_timed", "")} | {record["eval_samples_per_sec"]:,.0f} | '
        f'{record["compile_seconds"]:.1f} | {ratio:.2f}x |'
      )
    lines.append('')
  return lines


def time_to_accuracy_table(tta: list) -> list:
  """Markdown lines: each time-to-accuracy run's phases, newest first."""
  if not tta:
    return [
      'No time-to-accuracy run is recorded yet (`python -m benchmarks.time_to_accuracy`).',
      '',
    ]
  lines = [
    '| experiment | dtype | target | side | reached (epochs, accuracy) | start-up | data | '
    'compile | train (per epoch) | evaluate | total s | dnn_jax speed-up | machine, finished |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ]  # fmt: skip
  for r in reversed(tta):
    reached = f'{"yes" if r["reached"] else "no"} ({r["epochs"]}, {r["accuracy"]:.4f})'
    phases = [f'{r[f"seconds_{p}"]:.1f}' for p in ('startup', 'data', 'compile')]
    phases.append(f'{r["seconds_train"]:.1f} ({r["seconds_train"] / max(r["epochs"], 1):.1f})')
    phases.append(f'{r["seconds_evaluate"]:.1f}')
    ours = next((o for o in tta if o['peer'] == 'dnn_jax' and o['dtype'] == r['dtype']
                 and o.get('command') == r.get('command')), None)  # fmt: skip
    both = ours and ours['reached'] and r['reached']
    speedup = f'{r["seconds_total"] / ours["seconds_total"]:.2f}x' if both else ''
    note = f' ({r["note"]})' if r.get('note') else ''
    lines.append(
      f'| {pathlib.Path(r["config"]).stem} | {r["dtype"]} | {r["target"]} | {r["peer"]} | '
      f'{reached} | {" | ".join(phases)} | {r["seconds_total"]:.1f} | {speedup} | '
      f'{machine_label(r)}, {r["machine"]["date"]}{note} |'
    )
  return [*lines, '']


def fit_check_table(checks: list, throughput: list) -> list:
  """Markdown lines: each outside model.fit timing beside the project's figure for that peer."""
  if not checks:
    return ['No outside check is recorded yet (`python -m benchmarks.fit_check`).', '']
  lines = [
    '| experiment | dtype | peer | outside model.fit samples/s | benchmarks.throughput samples/s '
    '| ratio | machine, finished |', '|---|---|---|---|---|---|---|',
  ]  # fmt: skip
  for check in reversed(checks):
    same = [
      r for r in throughput if r['peer'] == check['peer'] and r['dtype'] == check['dtype']
      and r['config'] == check['config'] and r['batch_size'] == check['batch_size']
      and machine_label(_ours(throughput, r)) == machine_label(check)
    ]  # fmt: skip
    # The project's figure recorded last before the check, else the first after it.
    earlier = [r for r in same if r['position'] < check['position']]
    figure = (earlier[-1] if earlier else same[0])['train_samples_per_sec'] if same else None
    ours = f'{figure:,.0f}' if figure else 'not measured'
    ratio = f'{figure / check["train_samples_per_sec"]:.2f}' if figure else ''
    lines.append(
      f'| {pathlib.Path(check["config"]).stem}, batch {check["batch_size"]} | {check["dtype"]} | '
      f'{check["peer"]} | {check["train_samples_per_sec"]:,.0f} ({check["batches"]} batches) | '
      f'{ours} | {ratio} | {machine_label(check)}, {check["machine"]["date"]} |'
    )
  return [*lines, '']


def draw_chart(rows: list, path: pathlib.Path) -> None:
  """Bars of dnn_jax / fastest peer per summary row, with the goals as ticks."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  labels = [f'{r["experiment"]}\n{r["dtype"]}, {r["machine"].split(" (")[0]}' for r in rows]
  fig, ax = plt.subplots(figsize=(8, 0.55 * len(rows) + 1.5))
  colors = ['tab:green' if r['ratio'] >= r['goal'] else 'tab:red' for r in rows]
  ax.barh(range(len(rows)), [r['ratio'] for r in rows], color=colors)
  for i, row in enumerate(rows):
    ax.plot([row['goal']] * 2, [i - 0.4, i + 0.4], color='black', linewidth=1.5)
    ax.text(row['ratio'], i, f' {row["ratio"]:.2f}x vs {row["best"]["peer"]}', va='center',
            fontsize=8)  # fmt: skip
  ax.set_yticks(range(len(rows)), labels, fontsize=8)
  ax.invert_yaxis()
  ax.axvline(1.0, color='gray', linestyle=':', linewidth=1)
  ax.set_xlabel('dnn_jax training samples/s / fastest peer (black tick: goal)')
  ax.set_xlim(0, max([r['ratio'] for r in rows] + [1.3]) * 1.6)  # room for the longest label
  fig.tight_layout()
  files.save_figure(fig, path)
  plt.close(fig)


def pipeline_table(streamed: list, throughput: list) -> list:
  """Markdown lines: each streamed measurement beside the device pipeline's of the same run."""
  if not streamed:
    return [
      'No streaming run is recorded yet (`benchmarks.throughput --pipelines=device,grain`).',
      '',
    ]
  lines = [
    'dnn_jax timed twice in one run: the splits on the device, and streamed from the files by '
    'grain. Input wait: the share of the timed steps spent waiting for the stream.', '',
    '| experiment | dtype | pipeline | samples/s | device samples/s | ratio | input wait | '
    'machine | date, commit |',
    '|---|---|---|---|---|---|---|---|---|',
  ]  # fmt: skip
  for r in sorted(streamed, key=lambda r: -r['position']):
    device = next(
      (t for t in throughput if t['run_id'] == r['run_id'] and t['peer'] == 'dnn_jax'
       and t['dtype'] == r['dtype']), None,
    )  # fmt: skip
    if device is None:
      continue
    ratio = r['train_samples_per_sec'] / device['train_samples_per_sec']
    lines.append(
      f'| {experiment_label(r)} | {r["dtype"]} | {r["pipeline"]} | {samples(r)} | '
      f'{samples(device)} | {ratio:.2f}x | {100 * r["input_wait_fraction"]:.1f}% | '
      f'{machine_label(r)} | {r["machine"]["date"]}, {r["machine"]["commit"]} |'
    )
  return [*lines, '']


def render(all_records: list, out: pathlib.Path, source: str) -> str:
  """RESULTS.md's text; draws the chart beside it when there is something to draw."""
  all_records = [{**r, 'position': i} for i, r in enumerate(all_records)]  # file order
  throughput = [r for r in all_records if r['kind'] == 'throughput']
  rows = summary_rows(newest_runs(throughput))
  lines = [
    '# Benchmark results', '',
    f'Generated by `python -m benchmarks.results` from `{source}`; do not edit by hand (a '
    'benchmark run with `--record` adds lines there, then this command rewrites the page).', '',
    'How each side is timed (benchmarks/steady.py): warm-up steps dropped, then at least 200 '
    'steps and 20 s (or 40 s for a very slow peer), samples/s at the median step time, with the '
    "slowest and fastest step's in brackets. Each peer runs in its own process as its users run "
    "it: Keras `model.fit` with Keras's default compile (keras-tensorflow: on a CPU-only machine "
    "TensorFlow's oneDNN kernels), with XLA (keras-tensorflow-xla), on JAX (keras-jax); PyTorch "
    'in a plain loop, eager and `torch.compile`. bfloat16 is each one\'s mixed precision '
    '(Keras `mixed_bfloat16`, `torch.autocast`). The peers train without augmentation, and '
    "beside them so does dnn_jax (each record's `augment` says). Only ratios from one run "
    'compare; absolute numbers move with the machine and its load.', '',
    '## Summary: dnn_jax against the fastest peer, newest run per machine and experiment', '',
  ]  # fmt: skip
  if rows:
    draw_chart(rows, out / CHART)
    lines += [*summary_table(rows), f'![dnn_jax / fastest peer]({CHART})', '']
  else:
    lines += ['No throughput run is recorded yet (`python -m benchmarks.throughput --record`).', '']
  training = [r for r in all_records if r['kind'] == 'training']
  tta = [r for r in all_records if r['kind'] == 'time_to_accuracy']
  for name, (ours, keras) in tutorial_table.pairs(training, tta).items():
    path = out / tutorial_table.side_by_side_name(name)
    tutorial_table.draw_side_by_side(path, name, ours, keras)
  lines += ["## The tutorial's experiments, trained in full", '']
  lines += tutorial_table.table(training, tta)
  lines += ['## Seeds: is a gap chance?', '', *seeds_table.table(training, tta)]
  lines += [
    '## Time to accuracy',
    '',
    *time_to_accuracy_table([r for r in all_records if r['kind'] == 'time_to_accuracy']),
  ]
  lines += [
    '## Streaming against device-resident data',
    '',
    *pipeline_table([r for r in all_records if r['kind'] == 'pipeline'], throughput),
  ]
  lines += [
    '## Outside check of the Keras figures',
    '',
    *fit_check_table([r for r in all_records if r['kind'] == 'fit_check'], throughput),
  ]
  lines += ['## Every throughput run, newest first', '', *run_details(throughput)]
  return '\n'.join(lines).rstrip() + '\n'


def update_readme(path: pathlib.Path, rows: list, training: list = (), tta: list = ()) -> bool:
  """Rewrites README's blocks between the markers: the speed summary, the tutorial's table.

  False if the file has neither block.
  """
  text = path.read_text()
  speed = summary_table(rows, '####') if rows else ['No throughput run is recorded yet.', '']
  found = False
  for (start, end), table in (
    (README_BLOCK, speed),
    (TUTORIAL_BLOCK, tutorial_table.table(training, tta, 'benchmarks/')),
  ):
    if start in text and end in text:
      before, rest = text.split(start, 1)
      text = before + '\n'.join([start, '', *table, end]) + rest.split(end, 1)[1]
      found = True
  if found:
    files.write_text(path, text)
  return found


def main(argv):
  del argv
  out, source = pathlib.Path(FLAGS.out), FLAGS.records
  if not pathlib.Path(source).is_file():
    print(f'error: no records file {source}; run a benchmark with --record={source} first',
          file=sys.stderr)  # fmt: skip
    sys.exit(2)
  out.mkdir(parents=True, exist_ok=True)
  all_records = records.read(source)
  shown = pathlib.Path(source).resolve()  # the page names the records inside the repository
  shown = shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown
  files.write_text(out / 'RESULTS.md', render(all_records, out, str(shown)))
  print(f'wrote {out / "RESULTS.md"} and {out / CHART}')
  speed = summary_rows(newest_runs([r for r in all_records if r['kind'] == 'throughput']))
  training = [r for r in all_records if r['kind'] == 'training']
  tta = [r for r in all_records if r['kind'] == 'time_to_accuracy']
  if FLAGS.readme and update_readme(pathlib.Path(FLAGS.readme), speed, training, tta):
    print(f'updated the results blocks of {FLAGS.readme}')


if __name__ == '__main__':
  app.run(main)
