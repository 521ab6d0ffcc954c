"""benchmarks.results: RESULTS.md and its chart come from the records alone."""

import json

import pytest
from conftest import run_python
from PIL import Image

from benchmarks import results

AMX = {'date': '2026-12-01 10:00 UTC', 'commit': 'abc1234', 'host': 'h', 'cpu_model': 'Xeon',
       'cpu_family_model': '6/143', 'cpu_features': ['amx_bf16', 'avx512_bf16', 'avx512f', 'avx2'],
       'cpu_cores': 2, 'versions': {'jax': '0.10.2'}}  # fmt: skip
ZEN = {**AMX, 'cpu_model': 'AMD EPYC', 'cpu_family_model': '25/1', 'cpu_features': ['avx2']}


def row(run_id, peer, dtype, speed, where, model='cnn', config='experiments/mnist_cnn.py'):
  """A throughput record as benchmarks.throughput writes it (the fields results reads)."""
  device = '1 x cpu' if peer == 'dnn_jax' else f'host {peer}'
  return {
    'kind': 'throughput', 'run_id': run_id, 'config': config, 'model': model, 'peer': peer,
    'dtype': dtype, 'batch_size': 128, 'device': device, 'train_samples_per_sec': speed,
    'train_samples_per_sec_min': speed * 0.9, 'train_samples_per_sec_max': speed * 1.1,
    'steps_timed': 200, 'eval_samples_per_sec': 5000.0, 'compile_seconds': 2.0,
    'machine': where, 'command': 'python -m benchmarks.throughput --config ' + config,
  }  # fmt: skip


RECORDS = [
  # An older run on the AMX machine, replaced by the newer one below in the summary.
  row('r1', 'dnn_jax', 'float32', 100.0, AMX),
  row('r1', 'keras-tensorflow', 'float32', 400.0, AMX),
  row('r2', 'dnn_jax', 'float32', 1500.0, AMX),
  row('r2', 'keras-tensorflow', 'float32', 1000.0, AMX),
  row('r2', 'torch', 'float32', 1200.0, AMX),
  row('r2', 'dnn_jax', 'bfloat16', 1400.0, AMX),
  row('r2', 'keras-tensorflow', 'bfloat16', 2800.0, AMX),
  # A later quick check against one peer does not replace r2's full run in the summary.
  row('r4', 'dnn_jax', 'float32', 900.0, AMX),
  row('r4', 'keras-tensorflow', 'float32', 1000.0, AMX),
  row('r3', 'dnn_jax', 'float32', 30000.0, ZEN, 'mlp 512x512x512', 'experiments/mnist_mlp.py'),
  row('r3', 'keras-jax', 'float32', 26000.0, ZEN, 'mlp 512x512x512', 'experiments/mnist_mlp.py'),
  {'kind': 'time_to_accuracy', 'config': 'experiments/mnist_cnn.py', 'peer': 'dnn_jax',
   'dtype': 'float32', 'target': 0.99, 'reached': True, 'epochs': 3, 'accuracy': 0.9912,
   'seconds_total': 130.0, 'seconds_startup': 5.0, 'seconds_data': 2.0, 'seconds_compile': 4.0,
   'seconds_train': 110.0, 'seconds_evaluate': 6.0, 'batch_size': 128, 'machine': AMX,
   'command': 'tta'},
  {'kind': 'time_to_accuracy', 'config': 'experiments/mnist_cnn.py', 'peer': 'keras-tensorflow',
   'dtype': 'float32', 'target': 0.99, 'reached': True, 'epochs': 4, 'accuracy': 0.9908,
   'seconds_total': 260.0, 'seconds_startup': 5.0, 'seconds_data': 1.0, 'seconds_compile': 2.0,
   'seconds_train': 240.0, 'seconds_evaluate': 8.0, 'batch_size': 128, 'machine': AMX,
   'command': 'tta', 'note': 'another job shared the cores'},
  {'kind': 'fit_check', 'config': 'experiments/mnist_cnn.py', 'peer': 'keras-tensorflow',
   'dtype': 'float32', 'batch_size': 128, 'batches': 150, 'train_samples_per_sec': 1100.0,
   'machine': AMX},
  # r2's dnn_jax streamed by grain, in the same run.
  {**row('r2', 'dnn_jax', 'float32', 1200.0, AMX), 'kind': 'pipeline', 'pipeline': 'grain',
   'input_wait_fraction': 0.025},
]  # fmt: skip


def test_the_summary_takes_the_newest_run_and_its_fastest_peer(tmp_path):
  text = results.render(RECORDS, tmp_path, 'records.jsonl')
  lines = text.splitlines()
  summary = [line for line in lines if line.startswith('| mnist_')][:3]
  assert summary[0].startswith('| mnist_cnn, batch 128 | float32 | 1,500 (1,350-1,650) | torch |')
  assert '| 1.25x | 1.0x met |' in summary[0]  # 1500 / 1200, not r1's 100 / 400
  assert '| keras-tensorflow |' in summary[1] and '| 0.50x | 1.0x **not met** |' in summary[1]
  assert '| 1.15x | 1.2x **not met** |' in summary[2]  # the MLP's goal is 1.2x
  assert '### Xeon (family/model 6/143, AMX, 2 cores)' in lines
  assert '### AMD EPYC (family/model 25/1, AVX2, 2 cores)' in lines
  assert (tmp_path / results.CHART).stat().st_size > 10_000
  tta = next(line for line in lines if line.startswith('| mnist_cnn | float32 | 0.99 | dnn_jax'))
  assert '| yes (3, 0.9912) | 5.0 | 2.0 | 4.0 | 110.0 (36.7) | 6.0 | 130.0 | 1.00x |' in tta
  keras = next(line for line in lines if line.startswith('| mnist_cnn | float32 | 0.99 | keras'))
  assert '| 260.0 | 2.00x |' in keras and '(another job shared the cores)' in keras
  check = next(line for line in lines if '(150 batches)' in line)
  assert '| 1,100 (150 batches) | 1,000 | 0.91 |' in check  # the newest keras figure beside it
  assert sum(line.startswith('#### ') for line in lines) == 4  # every run in full
  streamed = next(line for line in lines if '| grain |' in line)
  assert streamed.startswith('| mnist_cnn, batch 128 | float32 | grain | 1,200 (1,080-1,320) | ')
  assert '| 1,500 (1,350-1,650) | 0.80x | 2.5% |' in streamed  # beside r2's device figure


def test_the_command_writes_the_page_and_a_missing_file_is_one_line(tmp_path):
  source = tmp_path / 'records.jsonl'
  source.write_text(''.join(json.dumps(r) + '\n' for r in RECORDS))
  readme = tmp_path / 'README.md'
  start, end = results.README_BLOCK
  readme.write_text(f'# Title\n\nBefore.\n\n{start}\nold numbers\n{end}\n\nAfter.\n')
  done = run_python('-m', 'benchmarks.results', f'--records={source}', f'--out={tmp_path}',
                    f'--readme={readme}')  # fmt: skip
  assert done.returncode == 0, done.stderr
  assert (tmp_path / 'RESULTS.md').read_text() == results.render(RECORDS, tmp_path, str(source))
  text = readme.read_text()
  assert text.startswith(f'# Title\n\nBefore.\n\n{start}\n\n#### Xeon (family/model 6/143, AMX')
  assert 'old numbers' not in text and text.endswith(f'{end}\n\nAfter.\n')
  assert '| mnist_cnn, batch 128 | float32 | 1,500 (1,350-1,650) | torch |' in text
  missing = run_python('-m', 'benchmarks.results', f'--records={tmp_path}/none.jsonl')
  assert missing.returncode == 2
  assert missing.stderr.strip().splitlines()[-1].startswith('error: no records file ')


@pytest.mark.e2e
def test_fit_check_times_a_plain_keras_fit_and_records_it(tmp_path):
  record = tmp_path / 'records.jsonl'
  done = run_python(
    '-m', 'benchmarks.fit_check', '--config', 'experiments/mnist_mlp.py', '--batches=12',
    '--config.data.train_split=train[:2048]', f'--record={record}',
    env={'KERAS_BACKEND': 'tensorflow'},
  )  # fmt: skip
  assert done.returncode == 0, done.stderr
  (check,) = [json.loads(line) for line in record.read_text().splitlines()]
  assert check['kind'] == 'fit_check' and check['peer'] == 'keras-tensorflow'
  assert check['batches'] == 12 and check['train_samples_per_sec'] > 0
  assert check['machine']['cpu_features'] is not None


@pytest.mark.slow
def test_a_finished_run_is_recorded_and_fills_the_readmes_tutorial_table(
  base_config, tmp_path, monkeypatch
):
  from benchmarks import record_run, records
  from dnn_jax import train

  config = base_config()
  config.model.hidden_sizes = (32,)
  config.data.train_split, config.data.test_split = 'train[:1024]', 'test[:500]'
  config.data.validation_split = 'test[:500]'
  config.num_epochs, config.num_devices, config.progress = 2, 1, 'lines'
  workdir = tmp_path / 'mnist_mlp'
  metrics = train.train_and_evaluate(config, workdir)
  monkeypatch.setattr(record_run, 'CURVES_DIR', tmp_path / 'curves')
  path = tmp_path / 'records.jsonl'
  record = record_run.record_run(workdir, path=path, note='validated on the test split')
  assert record['experiment'] == 'mnist_mlp' and record['test'] == metrics['test']
  assert record['note'] == 'validated on the test split'
  assert record['machine'] == metrics['machine'] and record['machine']['commit']  # the run's
  assert (tmp_path / 'curves' / 'mnist_mlp.png').stat().st_size > 1000

  readme = tmp_path / 'README.md'
  start, end = results.TUTORIAL_BLOCK
  readme.write_text(f'# x\n\n{start}\nold table\n{end}\n\nrest\n')
  keras = {  # Keras's run of the same recipe, as benchmarks.time_to_accuracy records it
    'kind': 'time_to_accuracy', 'peer': 'keras-tensorflow', 'dtype': 'float32', 'reached': False,
    'config': 'experiments/mnist_mlp.py', 'accuracy': 0.981, 'epochs': 2, 'machine': AMX,
  }  # fmt: skip
  assert results.update_readme(readme, [], records.read(path), [keras])
  text = readme.read_text()
  row = next(line for line in text.splitlines() if line.startswith('| `mnist_mlp`'))
  accuracy = metrics['test']['accuracy']
  assert f'| 2/2 | {accuracy:.4f} | 0.9802 | 0.9810 (2 epochs, abc1234), [both curves](' in row
  assert record['machine']['commit'] in row and '(benchmarks/curves/mnist_mlp.png)' in row
  assert 'old table' not in text and text.endswith('rest\n')


def test_an_unfinished_run_is_not_recorded():
  from benchmarks import record_run

  with pytest.raises(ValueError, match='has not finished'):
    record_run.training_record({'history': [], 'preempted': {'step': 3}}, 'mnist_mlp')


def test_a_run_resumed_elsewhere_names_each_start_in_its_row():
  from benchmarks import tutorial_table

  later = {**ZEN, 'date': '2026-12-03 09:00 UTC'}
  record = {
    'experiment': 'cifar10_cnn', 'epochs': 50, 'num_epochs': 50, 'test': {'accuracy': 0.79},
    'machine': later, 'curves': 'curves/cifar10_cnn.png',
    'starts': [{'step': 0, 'machine': AMX}, {'step': 1000, 'machine': later}],
  }  # fmt: skip
  row = tutorial_table.table([record])[2]
  assert '| abc1234, 2026-12-01 10:00 UTC to 2026-12-03 09:00 UTC (2 starts) | Xeon' in row
  assert ' then AMD EPYC (family/model 25/1, AVX2, 2 cores) |' in row
  one = tutorial_table.table([{**record, 'starts': record['starts'][:1]}])[2]
  assert '| abc1234, 2026-12-01 10:00 UTC | Xeon (family/model 6/143, AMX, 2 cores) |' in one


def test_a_sweep_recorded_without_its_start_says_its_date_is_when_it_finished():
  from benchmarks import tutorial_table

  sweep = {
    'experiment': 'mnist_mlp_units_dropout', 'epochs': 10, 'num_epochs': 10, 'trials': 50,
    'best_trial': {'trial': 7, 'units': 512, 'dropout': 0.2}, 'test': {'accuracy': 0.98},
    'machine': AMX, 'curves': 'curves/mnist_mlp_units_dropout.png',
  }  # fmt: skip
  row = tutorial_table.table([sweep])[2]
  assert '| abc1234, 2026-12-01 10:00 UTC (finished) | Xeon' in row
  started = tutorial_table.table([{**sweep, 'starts': [{'step': 0, 'machine': AMX}]}])[2]
  assert '| abc1234, 2026-12-01 10:00 UTC | Xeon' in started


def test_the_tutorials_networks_without_a_recorded_run_are_named_under_the_table():
  from benchmarks import tutorial_table

  record = {
    'experiment': 'mnist_mlp', 'epochs': 10, 'num_epochs': 10, 'test': {'accuracy': 0.98},
    'machine': AMX, 'curves': 'curves/mnist_mlp.png',
  }  # fmt: skip
  missing = tutorial_table.table([record])[-2]
  assert missing.startswith('Not trained in full here yet: `mnist_mlp_minimal`, ')
  assert '`mnist_mlp`,' not in missing and missing.endswith('`cifar10_resnet110_aug`.')
  everything = [{**record, 'experiment': n} for n in ('mnist_mlp', *tutorial_table.TUTORIAL,
                                                      *tutorial_table.WITHOUT_FIGURE)]  # fmt: skip
  assert not any('Not trained' in line for line in tutorial_table.table(everything))


def test_the_newest_runs_note_is_printed_under_the_table_and_an_older_ones_is_not():
  from benchmarks import tutorial_table

  record = {
    'experiment': 'cifar10_resnet20_aug', 'epochs': 50, 'num_epochs': 50,
    'test': {'accuracy': 0.86}, 'machine': AMX, 'curves': 'curves/cifar10_resnet20_aug.png',
  }  # fmt: skip
  noted = {**record, 'note': 'its validation curve is on the test half'}
  lines = tutorial_table.table([noted])
  assert 'Note on `cifar10_resnet20_aug`: its validation curve is on the test half' in lines
  assert lines[2].startswith('| `cifar10_resnet20_aug` |') and lines[4].startswith('Note on')
  assert not any(line.startswith('Note') for line in tutorial_table.table([noted, record]))


def test_a_run_and_its_keras_twin_get_one_picture_linked_from_the_row(tmp_path):
  history = [{'epoch': e, 'val_accuracy': 0.98 + e / 1000} for e in range(1, 13)]
  ours = {
    'kind': 'training', 'experiment': 'mnist_cnn', 'epochs': 12, 'num_epochs': 12,
    'test': {'accuracy': 0.992}, 'history': history, 'machine': AMX,
    'curves': 'curves/mnist_cnn.png',
  }  # fmt: skip
  keras = {
    'kind': 'time_to_accuracy', 'config': 'experiments/mnist_cnn.py', 'peer': 'keras-tensorflow',
    'dtype': 'float32', 'target': 0.9999, 'reached': False, 'epochs': 12, 'accuracy': 0.991,
    'val_accuracies': [0.97 + e / 1000 for e in range(1, 13)], 'seconds_total': 800.0,
    'seconds_startup': 5.0, 'seconds_data': 1.0, 'seconds_compile': 1.0, 'seconds_train': 780.0,
    'seconds_evaluate': 13.0, 'batch_size': 128, 'machine': AMX, 'command': 'tta',
  }  # fmt: skip
  text = results.render([ours, keras], tmp_path, 'records.jsonl')
  row = next(line for line in text.splitlines() if line.startswith('| `mnist_cnn`'))
  assert '| 0.9910 (12 epochs, abc1234), [both curves](curves/mnist_cnn_keras.png) |' in row
  with Image.open(tmp_path / 'curves' / 'mnist_cnn_keras.png') as image:
    assert image.size[0] >= 600 and len(image.getcolors(1 << 16) or range(1 << 16)) > 20
  # Without Keras's run there is nothing to put beside ours: no picture, no link.
  alone = tmp_path / 'alone'
  assert 'both curves' not in results.render([ours], alone, 'records.jsonl')
  assert not (alone / 'curves').exists()


def test_seeds_give_each_side_a_mean_and_spread_and_the_row_keeps_its_own_seed():
  from benchmarks import seeds_table, tutorial_table

  def tta(peer, seed, accuracy):
    return {
      'kind': 'time_to_accuracy', 'config': 'experiments/mnist_cnn.py', 'peer': peer,
      'dtype': 'float32', 'reached': False, 'epochs': 12, 'accuracy': accuracy,
      'val_accuracies': [accuracy] * 12, 'machine': AMX, 'seed': seed,
    }  # fmt: skip

  ours = {
    'experiment': 'mnist_cnn', 'epochs': 12, 'num_epochs': 12, 'test': {'accuracy': 0.9909},
    'history': [], 'machine': AMX, 'curves': 'c.png', 'config': {'seed': 0},
  }  # fmt: skip
  runs = [
    {k: v for k, v in tta('keras-tensorflow', 0, 0.9920).items() if k != 'seed'},  # older: 0
    tta('dnn_jax', 1, 0.9917), tta('keras-tensorflow', 1, 0.9912),
    tta('dnn_jax', 2, 0.9913), tta('keras-tensorflow', 2, 0.9916),
  ]  # fmt: skip
  lines = seeds_table.table([ours], runs)
  row = next(line for line in lines if line.startswith('| mnist_cnn |'))
  assert row == (
    '| mnist_cnn | 12 | 0.9913 ± 0.0004 (seeds 0, 1, 2: 0.9909, 0.9917, 0.9913) | '
    '0.9916 ± 0.0004 (seeds 0, 1, 2: 0.9920, 0.9912, 0.9916) | -0.0003 |'
  )
  # The results table's Keras column is the run at the row's own seed, not the newest.
  assert '| 0.9920 (12 epochs, abc1234)' in tutorial_table.table([ours], runs)[2]
  assert seeds_table.table([ours], runs[:1])[0].startswith('No recipe is recorded over several')
