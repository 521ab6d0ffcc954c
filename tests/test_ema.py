"""config.ema.decay: the average's arithmetic, evaluation on it, and an exact resume."""

import jax
import numpy as np
import pytest

from dnn_jax import experiment, train, trainer


def _ema_config(base_config, **overrides):
  config = base_config()
  config.model.hidden_sizes = (32,)
  config.data.train_split = 'train[:512]'
  config.data.validation_split = config.data.test_split = 'test[:500]'
  config.num_devices = 1
  config.progress = 'lines'
  config.ema.decay = 0.9
  config.update(overrides)
  return config


def _leaves(tree):
  return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


@pytest.mark.slow
@pytest.mark.parametrize('accumulate, warmup', [(1, True), (2, True), (1, False)])
def test_the_average_moves_after_each_update_as_decay_says(base_config, accumulate, warmup):
  config = _ema_config(base_config, steps_per_call=1, grad_accum_steps=accumulate)
  config.ema.warmup = warmup
  run = trainer.build(config)
  order, key = run.epoch_inputs(0)
  expected = _leaves(run.state.params)  # the average starts at the initial weights
  updates = 0
  for step in range(4):
    run.train_call(order[step : step + 1], key)
    if (step + 1) % accumulate == 0:  # the optimizer updated the weights: the average moves
      updates += 1
      decay = min(0.9, (1 + updates) / (10 + updates)) if warmup else 0.9
      params = _leaves(run.state.params)
      expected = [decay * e + (1 - decay) * p for e, p in zip(expected, params, strict=True)]
  for got, want in zip(_leaves(run.state.ema), expected, strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  assert not np.allclose(_leaves(run.state.ema)[0], _leaves(run.state.params)[0])


@pytest.mark.slow
def test_evaluation_uses_the_average_not_the_trained_weights(base_config):
  run = trainer.build(_ema_config(base_config))
  order, key = run.epoch_inputs(0)
  run.train_call(order, key)
  on_average = run.evaluate('validation')
  as_params = run.state.replace(params=run.state.ema)  # the average, in the weights' place
  assert experiment.evaluate(run.exp, run.programs, as_params, 'validation') == on_average
  trained = run.state.replace(ema=run.state.params)
  assert experiment.evaluate(run.exp, run.programs, trained, 'validation') != on_average


@pytest.mark.slow
def test_a_resumed_run_keeps_its_average_exactly(base_config, tmp_path):
  whole = train.train_and_evaluate(_ema_config(base_config, num_epochs=3), tmp_path / 'whole')
  train.train_and_evaluate(_ema_config(base_config, num_epochs=1), tmp_path / 'parts')
  resumed = train.train_and_evaluate(_ema_config(base_config, num_epochs=3), tmp_path / 'parts')
  strip = lambda h: [{k: v for k, v in r.items() if 'seconds' not in k} for r in h]
  assert strip(resumed['history']) == strip(whole['history'])
  assert resumed['test'] == whole['test']
