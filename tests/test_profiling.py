"""dnn_jax.profiling: the window's calls cut, its trace and memory profile, the same numbers."""

import json

import numpy as np
import pytest
from jax._src.lib import _profile_data
from test_resume import final_params  # the latest checkpoint's params, as tests read them

from dnn_jax import experiment, profiling, train
from dnn_jax.errors import ConfigError

STEPS_PER_EPOCH = 9  # train[:1152] in batches of 128


def tiny_config(base_config, **profile):
  config = base_config()
  config.model.hidden_sizes = (32,)
  config.data.train_split = 'train[:1152]'
  config.data.validation_split = config.data.test_split = 'test[:500]'
  config.num_epochs, config.num_devices, config.progress = 1, 1, 'lines'
  config.profile.update(profile)
  return config


def test_calls_are_cut_at_the_window_in_the_epochs_it_touches(base_config):
  assert profiling.cut([(0, 8)], 0, (2, 5)) == [(0, 2), (2, 5), (5, 8)]
  assert profiling.cut([(0, 4), (4, 8)], 8, (14, 19)) == [(0, 4), (4, 6), (6, 8)]
  assert profiling.cut([(0, 4), (4, 8)], 16, (14, 19)) == [(0, 3), (3, 4), (4, 8)]
  assert profiling.cut([(0, 4), (4, 8)], 0, (4, 8)) == [(0, 4), (4, 8)]  # on the bounds already
  exp = experiment.Experiment(None, None, None, None, calls=((0, 4), (4, 8)))
  config = tiny_config(base_config)
  config.num_epochs = 3
  config.profile.update(start_step=6, num_steps=4)  # steps 6-9: epochs 1 and 2
  assert profiling.Profiler(config, 8, '/w').calls_to_compile(exp, 0) == [
    (0, 4), (4, 6), (6, 8), (0, 2), (2, 4), (4, 8)
  ]  # fmt: skip
  assert profiling.Profiler(config, 8, '/w').calls_to_compile(exp, 5) == [
    (5, 6), (6, 8), (0, 2), (2, 4), (4, 8)
  ]  # fmt: skip
  resumed = profiling.Profiler(config, 8, '/w')
  assert resumed.calls_to_compile(exp, 7) == []  # past the start: traced before, not again
  assert resumed.cut([(0, 8)], 8) == [(0, 8)]
  assert profiling.Profiler(config, 8, None).window is None  # in memory: no trace, no cuts


@pytest.mark.parametrize(
  ('profile', 'says'),
  [
    ({'start_step': -2}, 'config.profile.start_step=-2 must be the first step to trace'),
    ({'start_step': 0, 'num_steps': 0}, 'config.profile.num_steps=0 must be a positive integer'),
    ({'start_step': 6}, "start_step=6 with num_steps=10 ends past the run's 9 steps"),
  ],
)
def test_a_bad_window_is_one_line_and_leaves_no_workdir(base_config, tmp_path, profile, says):
  workdir = tmp_path / 'run'
  with pytest.raises(ConfigError, match=says) as raised:
    train.train_and_evaluate(tiny_config(base_config, **profile), workdir)
  assert '\n' not in str(raised.value)
  assert not workdir.exists()


def history(workdir):
  written = json.loads((workdir / 'metrics.json').read_text())
  return [{k: v for k, v in h.items() if 'seconds' not in k} for h in written['history']]


@pytest.mark.slow
def test_a_profiled_run_traces_its_window_once_and_trains_as_an_unprofiled_one(
  base_config, tmp_path, capsys
):
  plain, profiled = tmp_path / 'plain', tmp_path / 'profiled'
  train.train_and_evaluate(tiny_config(base_config, start_step=-1), plain)
  assert not (plain / 'tensorboard' / 'plugins').exists()
  assert not (plain / 'tensorboard' / profiling.MEMORY_FILE).exists()
  assert 'Profil' not in capsys.readouterr().out

  # Steps 3-5 of 9: calls of 3 steps each, one length to compile besides the epoch's.
  train.train_and_evaluate(tiny_config(base_config, start_step=3, num_steps=3), profiled)
  out = capsys.readouterr().out
  assert f'Profiling steps 3-5 into {profiled / "tensorboard"}; view with `xprof --logdir' in out
  assert 'Profiled steps 3-5: the trace is in' in out
  (trace,) = (profiled / 'tensorboard' / 'plugins' / 'profile').glob('*/*.xplane.pb')
  events = [
    event.name
    for plane in _profile_data.ProfileData.from_file(str(trace)).planes
    for line in plane.lines
    for event in line.events
  ]
  # One compiled call of the window's 3 steps: the calls before and after it are cut off.
  assert sum(name.endswith(' train_call') for name in events) == 1
  assert (profiled / 'tensorboard' / profiling.MEMORY_FILE).stat().st_size > 0

  # Cut calls, same numbers: params bitwise; the train loss's sums differ by their grouping.
  step, params = final_params(profiled)
  plain_step, plain_params = final_params(plain)
  assert step == plain_step == STEPS_PER_EPOCH
  for a, b in zip(params, plain_params, strict=True):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(history(profiled), history(plain), strict=True):
    assert a == pytest.approx(b, rel=1e-6)
    assert (a['val_loss'], a['val_accuracy']) == (b['val_loss'], b['val_accuracy'])

  # Resumed past the window (a second epoch): no second trace.
  config = tiny_config(base_config, start_step=3, num_steps=3)
  config.num_epochs = 2
  train.train_and_evaluate(config, profiled)
  assert 'Profil' not in capsys.readouterr().out
  assert len(list((profiled / 'tensorboard' / 'plugins' / 'profile').iterdir())) == 1
