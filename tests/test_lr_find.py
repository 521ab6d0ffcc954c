"""dnn_jax.lr_find: vmapped rates equal lone runs; the suggestion rule; the report; bad flags."""

import json
import math
import types

import numpy as np
import pytest
from conftest import run_python
from PIL import Image

from dnn_jax import optim, train
from dnn_jax.errors import ConfigError, UserError
from dnn_jax.lr_find import plot, suggest
from dnn_jax.lr_find import run as lr_find_run
from dnn_jax.report import build, html
from dnn_jax.report import run as run_lib
from experiments import mnist_mlp

RATES = (0.1, 1e9, 1e19, 1e29)  # plain SGD: 1e29 overflows to Inf, then NaN, at its first steps


def tiny_config():
  """A one-layer MLP with plain SGD: 512 training examples in batches of 64 on 2 devices."""
  config = mnist_mlp.get_config()
  config.model.hidden_sizes = (32,)
  config.optimizer = optim.optimizer_config('sgd', learning_rate=RATES[0])
  config.data.train_split = 'train[:512]'
  config.data.validation_split = config.data.test_split = 'test[:500]'
  config.num_devices = 2  # the vmap runs inside the data-parallel shard_map
  config.batch_size = 64
  config.num_epochs = 2
  config.progress = 'lines'
  return config


@pytest.fixture(scope='module')
def tested_run(tmp_path_factory):
  """(workdir, lr_find's result, the run's metrics): RATES[0] trained alone for 2 epochs in the
  workdir, then the range test of RATES, 16 steps (2 epochs) each, into the same workdir."""
  workdir = tmp_path_factory.mktemp('lr_find')
  alone = train.train_and_evaluate(tiny_config(), workdir)
  found = lr_find_run.lr_find(
    tiny_config(), workdir, min_lr=RATES[0], max_lr=RATES[-1], num_rates=len(RATES), steps=16
  )
  return workdir, found, alone


@pytest.mark.slow
def test_a_rate_of_the_vmapped_test_equals_that_rate_trained_alone(tested_run):
  workdir, found, alone = tested_run
  np.testing.assert_allclose(found['rates'], RATES, rtol=1e-12)
  assert found['steps'] == 16 and found['curve_steps'] == list(range(1, 17))  # a point a step
  first = found['trials'][0]
  last_epoch = alone['history'][-1]
  np.testing.assert_allclose(first['val_loss'], last_epoch['val_loss'], rtol=1e-5)
  assert first['val_accuracy'] == pytest.approx(last_epoch['val_accuracy'], abs=1e-9)
  # Each call is one step of 64 examples: the second epoch's mean is the run's training loss.
  np.testing.assert_allclose(np.mean(found['loss'][0][8:]), last_epoch['loss'], rtol=1e-5)
  assert [t['status'] for t in found['trials']][-1] == suggest.DIVERGED
  assert found['trials'][-1]['first_nonfinite_step'] >= 1
  assert found['trials'][found['suggestion']['index']]['status'] == suggest.OK
  saved = json.loads((workdir / 'lr_find.json').read_text())
  assert saved['suggestion'] == found['suggestion']
  assert saved['train_command'].endswith(
    f'--config.optimizer.learning_rate={found["suggestion"]["learning_rate"]:.3g}'
  )
  with Image.open(workdir / 'lr_find.png') as image:
    assert image.size[0] >= 1000 and len(image.getcolors(1 << 16) or range(1 << 16)) > 20


@pytest.mark.slow
def test_the_report_of_a_workdir_with_a_range_test_shows_it(tested_run):
  workdir, found, _ = tested_run
  report = build.build_report(workdir, 'latest')
  assert (report.directory / 'lr_find.png').is_file() and 'lr_find' in report.pngs
  page = report.index.read_text()
  assert '<img src="lr_find.png"' in page and 'Learning-rate range test' in page
  assert f'Suggested: {found["suggestion"]["learning_rate"]:.3g}' in page
  assert 'This run trained at 0.1.' in page and 'config differs' not in page


def synthetic_result(final_T, nonfinite_T, tolerance=suggest.DEFAULT_TOLERANCE):
  """lr_find.json's content for given final losses, as run._lr_find assembles it."""
  rates = suggest.log_rates(1e-4, 1.0, len(final_T))
  chance = math.log(10)
  status = suggest.statuses(final_T, nonfinite_T, chance)
  curves = [[2.3, (2.3 + f) / 2, f] for f in final_T]
  number = lambda x: x if math.isfinite(x) else None
  return {
    'rates': rates, 'steps': 30, 'curve_steps': [10, 20, 30], 'chance_loss': chance,
    'smoothed': [[number(x) for x in c] for c in curves],
    'trials': [
      {'learning_rate': r, 'final_loss': number(f), 'val_loss': number(f * 0.8),
       'val_accuracy': None, 'status': s, 'first_nonfinite_step': None}
      for r, f, s in zip(rates, final_T, status, strict=True)
    ],
    'suggestion': suggest.suggest(rates, final_T, status, tolerance),
    'config': mnist_mlp.get_config().to_dict(),
  }  # fmt: skip


# A U over 1e-4 .. 1 (9 rates, a half-decade apart), diverged at the two largest; the NaN
# trial that reads 0.0 is what a diverged call's sums give when its NaN steps are left out.
U_SHAPED = [1.5, 0.8, 0.35, 0.21, 0.20, 0.26, 0.9, 0.0, math.nan]
DIVERGED_AT = [0, 0, 0, 0, 0, 0, 0, 3, 12]


def test_the_suggestion_walks_down_the_valley_and_never_takes_a_diverged_rate(tmp_path):
  result = synthetic_result(U_SHAPED, DIVERGED_AT)
  best = result['suggestion']
  assert [t['status'] for t in result['trials']][-2:] == [suggest.DIVERGED] * 2
  assert best['lowest_index'] == 4 and best['lowest_loss'] == 0.20
  assert best['index'] == 3  # 0.21 is within 10% of 0.20; 0.35 is not
  np.testing.assert_allclose(best['learning_rate'], 10**-2.5)
  assert best['note'] == ''
  assert suggest.suggest(result['rates'], U_SHAPED, [t['status'] for t in result['trials']], 0.0)[
    'index'
  ] == 4  # fmt: skip
  plot.draw(tmp_path / 'lr_find.png', result)  # NaNs, Nones and off-scale points draw
  with Image.open(tmp_path / 'lr_find.png') as image:
    assert image.size[0] >= 1000


def test_a_valley_at_the_range_ends_is_noted_and_all_diverged_suggests_nothing():
  rising = suggest.suggest([1, 2, 3], [0.2, 0.21, 0.5], [suggest.OK] * 3)
  assert rising['index'] == 0 and 'lower it' in rising['note']
  falling = suggest.suggest([1, 2, 3], [0.9, 0.5, 0.2], [suggest.OK] * 3)
  assert falling['index'] == 2 and 'raise it' in falling['note']
  # A walk stops at a rate that learned nothing, however low its recorded loss.
  status = [suggest.OK, suggest.CHANCE, suggest.OK]
  assert suggest.suggest([1, 2, 3], [0.2, 0.2, 0.19], status)['index'] == 2
  assert suggest.statuses([2.5, 0.1, math.inf], [0, 1, 0], math.log(10)) == [
    suggest.CHANCE, suggest.DIVERGED, suggest.DIVERGED,
  ]  # fmt: skip
  none = suggest.suggest([1, 2, 3], [0.0, math.nan, 3.0], [suggest.DIVERGED] * 2 + [suggest.CHANCE])
  assert none['learning_rate'] is None and 'no rate trained' in none['note']


def test_smoothing_is_bias_corrected_and_a_nan_stays():
  smoothed = suggest.smooth([[1.0, 1.0, 1.0], [2.0, math.nan, 1.0]], [10, 10, 5])
  np.testing.assert_allclose(smoothed[0], 1.0)
  assert smoothed[1, 0] == 2.0 and np.isnan(smoothed[1, 1:]).all()


def test_the_report_section_names_config_differences(tmp_path):
  result = synthetic_result(U_SHAPED, DIVERGED_AT)
  (tmp_path / 'lr_find.json').write_text(json.dumps(result))
  trained = mnist_mlp.get_config()
  trained.model.hidden_sizes = (64,)
  trained.optimizer.learning_rate = 3e-4
  picture = build.lr_find_picture(types.SimpleNamespace(workdir=tmp_path, config=trained), tmp_path)
  assert (tmp_path / picture.file).is_file()
  assert 'This run trained at 0.0003.' in picture.caption
  assert "config differs from this run's in model.hidden_sizes." in picture.caption
  page = html.render(title='t', summary=[], metrics=[], pictures=[picture])
  assert '<img src="lr_find.png"' in page


def test_a_workdir_with_only_a_range_test_is_one_line(tmp_path):
  (tmp_path / 'lr_find.json').write_text('{}')
  with pytest.raises(UserError) as error:
    run_lib.load(tmp_path)
  assert f'it holds a learning-rate range test only ({tmp_path}/lr_find.png); train first' in str(
    error.value
  ) and '\n' not in str(error.value)  # fmt: skip


@pytest.mark.parametrize(
  'flags, message',
  [
    ({'min_lr': 0.0}, '--min_lr=0.0 must be a positive number'),
    ({'max_lr': math.inf}, '--max_lr=inf must be a positive number'),
    ({'min_lr': 1.0, 'max_lr': 0.1}, '--min_lr=1 must be below --max_lr=0.1'),
    ({'num_rates': 2}, '--num_rates=2 must be at least 3'),
    ({'steps': -5}, '--steps=-5 must be a non-negative integer (0: one epoch)'),
    ({'tolerance': -0.1}, '--tolerance=-0.1 must be in [0, 10)'),
  ],
)
def test_bad_flags_are_one_line(tmp_path, flags, message):
  with pytest.raises(UserError) as error:
    lr_find_run.lr_find(tiny_config(), tmp_path / 'w', **flags)
  assert message in str(error.value) and '\n' not in str(error.value)
  assert not (tmp_path / 'w').exists()


def test_a_config_the_vmapped_trials_cannot_train_is_refused(tmp_path):
  config = tiny_config()
  config.grad_accum_steps = 2
  with pytest.raises(ConfigError, match='grad_accum_steps=2 is not supported by lr_find; use 1'):
    lr_find_run.lr_find(config, tmp_path / 'w')
  assert not (tmp_path / 'w').exists()


@pytest.mark.e2e
def test_a_bad_flag_on_the_command_line_is_one_line(tmp_path):
  result = run_python(
    '-m', 'dnn_jax.lr_find', '--config', 'experiments/mnist_mlp.py',
    '--workdir', str(tmp_path / 'w'), '--min_lr=1', '--max_lr=0.1',
  )  # fmt: skip
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == ['error: --min_lr=1 must be below --max_lr=0.1']
  assert not (tmp_path / 'w').exists()
