"""dnn_jax.sweep: vmapped trials equal lone ones; tables, plots, resume, errors, determinism."""

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import optuna
import pytest
from conftest import run_python
from PIL import Image

from benchmarks import record_run, tutorial_table
from dnn_jax import experiment, trainer
from dnn_jax.errors import ConfigError
from dnn_jax.models import layers
from dnn_jax.sweep import run, space, study, vmapped
from experiments.sweeps import mnist_mlp_dropout_lr_grid, mnist_mlp_units_dropout


def tiny_sweep(num_trials=3, trials_per_batch=2):
  """The units x dropout sweep on a one-layer MLP, 512 training and 500 validation examples."""
  config = mnist_mlp_units_dropout.get_config()
  config.model.hidden_sizes = (32,)
  config.data.train_split = 'train[:512]'
  config.data.validation_split = config.data.test_split = 'test[:500]'
  config.num_devices = 1
  config.batch_size = 32
  config.sweep.params.units = dict(low=16, high=48, step=16)
  config.sweep.num_trials = num_trials
  config.sweep.trials_per_batch = trials_per_batch
  return config


def read_csv(path):
  with path.open() as f:
    return list(csv.DictReader(f))


def test_dropout_rate_held_in_state_gives_the_float_masks():
  x = jnp.ones((16, 64))
  keys = jax.random.split(jax.random.key(0), 16)
  train = layers.Train(keys, jnp.ones(16, bool))
  rates = (0.0, 0.05, 0.35, 0.6)  # 1 - rate rounds differently in float32 for 0.6

  def held(rate):
    dropout = layers.Dropout(0.9, salt=3)
    dropout.hold_rate_in_state(rate)
    return dropout

  # The keep probabilities as a traced input, vmapped over the rates, as a sweep runs them.
  keep_R = jnp.stack([held(r).keep[...] for r in rates])

  def apply(keep):
    dropout = held(0.5)
    dropout.keep[...] = keep
    return dropout(x, train)

  y_R = jax.jit(jax.vmap(apply))(keep_R)
  for rate, y in zip(rates, y_R, strict=True):
    np.testing.assert_array_equal(y, layers.Dropout(rate, salt=3)(x, train))
  np.testing.assert_array_equal(held(0.35)(x), x)  # evaluation: no dropout


def trial_configs():
  config = tiny_sweep()
  config.model.hidden_sizes = (32, 32)
  config.num_devices = 2  # the vmap runs inside the data-parallel shard_map
  config.batch_size = 64
  config.sweep.epochs_per_trial = 2
  trials = [
    {'units': 32, 'dropout': 0.0, 'learning_rate': 1e-3, 'seed': 0},
    {'units': 32, 'dropout': 0.35, 'learning_rate': 3e-3, 'seed': 0},
    {'units': 32, 'dropout': 0.2, 'learning_rate': 1e-3, 'seed': 1},
  ]
  return [space.trial_config(config, t) for t in trials]


def run_alone(config):
  """One trial as dnn_jax trains any run (a Trainer, in memory): (last epoch, final state)."""
  run = trainer.build(config)
  return run.fit()['history'][-1], run.state


@pytest.mark.slow
def test_vmapped_trials_equal_the_same_trials_run_alone():
  configs = trial_configs()
  alone = [run_alone(c) for c in configs]
  exp = experiment.setup(configs[0])
  # Seed 0 twice: one data order and dropout keys for both; then three trials, two seeds.
  for members in (configs[:2], configs):
    group = vmapped.build_group(exp, members)
    assert group.shared_seed == (len(members) == 2)
    vmapped.compile_group(exp, group)
    for epoch in range(2):
      sums = vmapped.train_epoch(exp, group, epoch)
    together = vmapped._results(exp, group, sums, train_seconds=1.0)
    for i, (result, state) in enumerate(alone[: len(members)]):
      params = jax.tree.map(lambda x, i=i: np.asarray(x[i]), group.state.params)
      for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
      assert int(group.state.step[i]) == int(state.step) == 2 * 8
      for key in ('loss', 'accuracy', 'val_loss', 'val_accuracy'):
        np.testing.assert_allclose(together[i][key], result[key], rtol=1e-5)
  # The trials did differ: dropout and learning rate changed what they learned.
  assert len({round(r['val_loss'], 4) for r, _ in alone}) == 3


def test_a_group_refuses_trials_of_another_shape():
  configs = trial_configs()
  other = space.trial_config(tiny_sweep(), {'units': 16})
  exp = experiment.setup(configs[0])
  with pytest.raises(ValueError, match='differ only in seed, model.dropout'):
    vmapped.build_group(exp, [configs[0], other])


@pytest.mark.slow
def test_sweep_writes_tables_and_plots_then_continues(tmp_path, capsys, monkeypatch):
  table = run.run_sweep(tiny_sweep(num_trials=3), tmp_path)
  out = capsys.readouterr().out
  rows = read_csv(tmp_path / 'trials.csv')
  assert [r['trial'] for r in rows] == ['0', '1', '2']
  assert list(rows[0]) == [
    'trial', 'dropout', 'units', 'val_accuracy', 'val_loss', 'train_seconds',
    'compile_seconds', 'group_size', 'status', 'best',
  ]  # fmt: skip
  for r in rows:
    assert int(r['units']) in (16, 32, 48)
    assert 0.0 <= float(r['dropout']) <= 0.5
    assert 0.3 < float(r['val_accuracy']) <= 1.0  # 512 examples, one epoch: well above chance
    assert 0.0 < float(r['val_loss']) < 2.3
    assert float(r['train_seconds']) > 0 and r['status'] == 'complete'
  best = [r for r in rows if r['best'] == 'best']
  assert len(best) == 1
  assert float(best[0]['val_accuracy']) == max(float(r['val_accuracy']) for r in rows)
  markdown = (tmp_path / 'trials.md').read_text().splitlines()
  assert markdown[0].startswith('| trial | dropout | units | val_accuracy |')
  assert len(markdown) == 2 + 3 and f'| **{best[0]["trial"]}** |' in '\n'.join(markdown)
  assert f'Best trial {best[0]["trial"]}: dropout ' in out and 'Top 3 by val_accuracy:' in out
  for name in (
    'time_vs_units', 'time_vs_dropout', 'units_vs_dropout', 'val_accuracy_vs_units',
    'val_accuracy_vs_dropout', 'history', 'sweep',
  ):  # fmt: skip
    with Image.open(tmp_path / f'{name}.png') as image:
      assert image.size[0] >= 500 and len(image.getcolors(1 << 16) or range(1 << 16)) > 20

  # The same sweep with more trials continues: the first three are kept, not trained again.
  more = run.run_sweep(tiny_sweep(num_trials=5), tmp_path)
  out = capsys.readouterr().out
  assert 'Continuing the sweep in' in out and '3/5 trials done' in out
  assert '2 trial(s) trained' in out
  assert [r['trial'] for r in more] == [0, 1, 2, 3, 4]
  for before, after in zip(table, more[:3], strict=True):
    assert {k: v for k, v in before.items() if k != 'best'} == {
      k: v for k, v in after.items() if k != 'best'
    }
  assert len(read_csv(tmp_path / 'trials.csv')) == 5
  # sweep.json: the best of all five with the budget; record_run makes it a results-table row.
  summary = json.loads((tmp_path / 'sweep.json').read_text())
  best = next(r for r in more if r['best'])
  assert summary['best'] == best and summary['num_trials'] == 5
  assert summary['epochs_per_trial'] == 1 and summary['machine']['commit']
  assert [s['trials'] for s in summary['starts']] == [0, 3]  # the first start, the continuation
  assert summary['train_seconds'] == pytest.approx(sum(r['train_seconds'] for r in more))
  monkeypatch.setattr(record_run, 'CURVES_DIR', tmp_path / 'curves')
  record = record_run.record_run(tmp_path, 'mnist_mlp_units_dropout_10epochs', tmp_path / 'r.jsonl')
  assert record['test'] == {'accuracy': best['val_accuracy']}  # validates on the test split
  assert record['best_trial'] == {k: best[k] for k in ('trial', 'dropout', 'units')}
  assert (tmp_path / 'curves' / 'mnist_mlp_units_dropout_10epochs.png').stat().st_size > 1000
  table = '\n'.join(tutorial_table.table([record]))
  assert f'| 1/1 per trial, 5 trials | {best["val_accuracy"]:.4f} | 0.9833 |' in table
  assert f'units {best["units"]}' in table


def test_interrupted_trials_run_again_with_their_params(tmp_path, capsys):
  config = tiny_sweep(num_trials=1)
  # A run that asked for trial 0 and stopped before telling optuna its result.
  asked = study.open_study(space.validated(config), tmp_path).ask(space.distributions(config.sweep))
  table = run.run_sweep(config, tmp_path)
  assert 'interrupted trial(s) 0 run again first' in capsys.readouterr().out
  assert len(table) == 1 and table[0]['trial'] == 1
  assert {k: table[0][k] for k in asked.params} == asked.params


@pytest.mark.slow
def test_grid_trials_of_one_shape_train_as_one_program(tmp_path):
  config = mnist_mlp_dropout_lr_grid.get_config()
  config.model.hidden_sizes = (32,)
  config.data.train_split = 'train[:512]'
  config.data.validation_split = 'test[:500]'
  config.data.test_split = 'test[500:1000]'  # tested apart: the table gets test_accuracy
  config.num_devices = 1
  config.batch_size = 32
  config.sweep.params.dropout = dict(values=(0.0, 0.5))
  config.sweep.params.learning_rate = dict(values=(3e-3, 1e-2))
  config.sweep.num_trials = config.sweep.trials_per_batch = 4
  table = run.run_sweep(config, tmp_path)
  assert {(r['dropout'], r['learning_rate']) for r in table} == {
    (0.0, 3e-3), (0.0, 1e-2), (0.5, 3e-3), (0.5, 1e-2),
  }  # fmt: skip
  assert all(r['group_size'] == 4 and 0.2 < r['test_accuracy'] <= 1 for r in table)
  assert len({r['val_loss'] for r in table}) == 4
  assert (tmp_path / 'val_accuracy_vs_learning_rate.png').is_file()
  assert (tmp_path / 'learning_rate_vs_dropout.png').is_file()


@pytest.mark.parametrize(
  'change, message',
  [
    (
      lambda s: s.params.units.update(step=30),
      'config.sweep.params.units.step=30 does not divide high - low = 32 (16..48); pick a '
      'step that does (e.g. 32) or another high',
    ),
    (
      lambda s: s.params.update(width=dict(low=1, high=2)),
      "config.sweep.params.width: the sweep knows no parameter 'width'; choose one of dropout,",
    ),
    (lambda s: s.params.dropout.update(high=1.2), 'config.sweep.params.dropout: 1.2 must be in'),
    (lambda s: s.params.units.update(low=64), 'config.sweep.params.units: low=64 is above high=48'),
    (lambda s: s.params.dropout.update(step=0.03), 'dropout.step=0.03 does not divide high - low'),
    (lambda s: s.update(sampler='grid', num_trials=100), 'num_trials=100 is more than the grid'),
    (lambda s: s.update(sampler='hyperopt'), "unknown config.sweep.sampler 'hyperopt'; choose"),
    (lambda s: s.update(objective='f1'), "unknown config.sweep.objective 'f1'; choose one of"),
    (lambda s: s.update(num_trials=0), 'config.sweep.num_trials=0 must be a positive integer'),
  ],
)
def test_bad_search_space_values_raise_one_line(change, message):
  config = tiny_sweep()
  change(config.sweep)
  with pytest.raises(ConfigError) as error:
    space.validated(config)
  assert message in str(error.value) and '\n' not in str(error.value)


@pytest.mark.e2e
def test_a_bad_step_on_the_command_line_is_one_line(tmp_path):
  result = run_python(
    '-m', 'dnn_jax.sweep',
    '--config', 'experiments/sweeps/mnist_mlp_units_dropout.py',
    '--workdir', str(tmp_path / 'sweep'),
    '--config.sweep.params.units.step=30',
  )  # fmt: skip
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
    'error: config.sweep.params.units.step=30 does not divide high - low = 992 (32..1024); '
    'pick a step that does (e.g. 31) or another high'
  ]
  assert not (tmp_path / 'sweep').exists()


def test_a_workdir_of_another_sweep_is_refused(tmp_path):
  study.open_study(space.validated(tiny_sweep()), tmp_path)
  study.open_study(space.validated(tiny_sweep(num_trials=9)), tmp_path)  # more trials: fine
  other = tiny_sweep()
  other.sweep.params.dropout.high = 0.3
  with pytest.raises(ConfigError, match=r'config.sweep.params.dropout.high \(0.5 there, 0.3 here'):
    study.open_study(space.validated(other), tmp_path)


def proposals(seed: int, count: int = 14, trials_so_far: int = 0) -> list:
  """The first trials the real sweep's sampler proposes, told a fixed function of them."""
  sweep = mnist_mlp_units_dropout.get_config().sweep
  sweep.seed = seed
  sampler = study.make_sampler(sweep, trials_so_far)
  sampler_study = optuna.create_study(direction='maximize', sampler=sampler)
  out = []
  for _ in range(count):  # past the 10 random startup trials, into TPE's own proposals
    trial = sampler_study.ask(space.distributions(sweep))
    sampler_study.tell(trial, -((trial.params['units'] - 700) ** 2) - trial.params['dropout'])
    out.append(trial.params)
  return out


def test_tpe_with_a_fixed_seed_proposes_the_same_trials():
  first = proposals(seed=0)
  assert proposals(seed=0) == first
  assert proposals(seed=1) != first
  # A sweep continued after 7 trials does not replay the first run's random proposals.
  continued = proposals(seed=0, count=3, trials_so_far=7)
  assert continued == proposals(seed=0, count=3, trials_so_far=7)
  assert continued != first[:3]
  units = mnist_mlp_units_dropout.get_config().sweep.params.units
  assert all(p['units'] in range(units.low, units.high + 1, units.step) for p in first)
