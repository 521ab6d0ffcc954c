"""dnn_jax.train: end to end on real MNIST; metrics.json; determinism; chunking; errors."""

import json
import math

import jax
import ml_collections
import numpy as np
import pytest

from dnn_jax import checkpoint, experiment, train, trainer
from dnn_jax.errors import ConfigError, NonFiniteError, UserError

HISTORY_KEYS = {'epoch', 'loss', 'accuracy', 'val_loss', 'val_accuracy', 'seconds'}


def small_config(base_config, **overrides):
  config = base_config()
  config.data.train_split = 'train[:3000]'
  config.data.validation_split = config.data.test_split = 'test[:1000]'
  config.num_epochs = 2
  config.num_devices = 1
  config.progress = 'lines'
  config.update(overrides)
  return config


@pytest.mark.slow
def test_one_epoch_on_real_mnist_beats_95_percent(base_config, tmp_path, capsys):
  config = base_config()
  config.num_epochs = 1
  config.num_devices = 1
  result = train.train_and_evaluate(config, tmp_path)
  assert result['test']['accuracy'] > 0.95
  out = capsys.readouterr().out
  assert 'Total params: 932,362' in out
  assert 'Epoch 1/1 - ' in out
  assert f'Test accuracy: {result["test"]["accuracy"]:.4f}' in out


def test_metrics_json_has_the_documented_fields(base_config, tmp_path):
  result = train.train_and_evaluate(small_config(base_config), tmp_path)
  written = json.loads((tmp_path / 'metrics.json').read_text())
  assert written == json.loads(json.dumps(result))
  assert written['config']['optimizer']['name'] == 'adam'
  assert [h['epoch'] for h in written['history']] == [1, 2]
  assert all(set(h) >= HISTORY_KEYS for h in written['history'])
  assert set(written['test']) == {'loss', 'accuracy'}
  assert written['train_samples_per_sec'] > 0
  assert written['devices'] == {'platform': 'cpu', 'kind': 'cpu', 'count': 1}


def without_times(result):
  return [{k: v for k, v in h.items() if 'seconds' not in k} for h in result['history']]


@pytest.mark.slow
def test_same_seed_same_metrics_and_other_seed_differs(base_config, tmp_path):
  first = train.train_and_evaluate(small_config(base_config), tmp_path / 'a')
  again = train.train_and_evaluate(small_config(base_config), tmp_path / 'b')
  other = train.train_and_evaluate(small_config(base_config, seed=1), tmp_path / 'c')
  assert without_times(first) == without_times(again)
  assert first['test'] == again['test']
  assert without_times(first) != without_times(other)


@pytest.mark.slow
def test_chunked_epochs_equal_whole_epochs(base_config, tmp_path):
  whole = train.train_and_evaluate(small_config(base_config), tmp_path / 'a')
  chunked = train.train_and_evaluate(small_config(base_config, steps_per_call=7), tmp_path / 'b')
  for a, b in zip(without_times(whole), without_times(chunked), strict=True):
    assert a == pytest.approx(b, rel=1e-5)


@pytest.mark.slow
def test_four_devices_match_one(base_config, tmp_path):
  one = train.train_and_evaluate(small_config(base_config, num_epochs=1), tmp_path / 'a')
  four = train.train_and_evaluate(
    small_config(base_config, num_epochs=1, num_devices=4), tmp_path / 'b'
  )
  assert four['devices']['count'] == 4
  for a, b in zip(without_times(one), without_times(four), strict=True):
    assert a == pytest.approx(b, rel=1e-3)


def test_stop_at_accuracy_ends_the_run_after_the_first_epoch_reaching_it(
  base_config, tmp_path, capsys
):
  config = small_config(base_config, num_epochs=4, stop_at_accuracy=0.5)
  result = train.train_and_evaluate(config, tmp_path)
  written = json.loads((tmp_path / 'metrics.json').read_text())
  assert [h['epoch'] for h in written['history']] == [1]  # one epoch beats 50%: 3 were left
  assert written['stopped_at_accuracy'] == 1
  assert written['test'] == result['test']
  assert 'Stopped at epoch 1: val_accuracy ' in capsys.readouterr().out
  assert written['data_seconds'] > 0 and written['history'][0]['eval_seconds'] > 0
  again = train.train_and_evaluate(config, tmp_path)  # the same command: nothing left to train
  assert [h['epoch'] for h in again['history']] == [1]


def test_a_target_never_reached_trains_every_epoch(base_config, tmp_path):
  result = train.train_and_evaluate(small_config(base_config, stop_at_accuracy=1.0), tmp_path)
  assert [h['epoch'] for h in result['history']] == [1, 2]
  assert 'stopped_at_accuracy' not in result


def test_separate_test_split_is_evaluated_at_the_end(base_config, tmp_path):
  config = small_config(base_config, num_epochs=1)
  config.data.validation_split = 'test[5000:6000]'
  result = train.train_and_evaluate(config, tmp_path)
  assert result['test']['loss'] != result['history'][-1]['val_loss']


def test_batch_larger_than_the_split_is_a_clear_error(base_config, tmp_path):
  config = small_config(base_config, batch_size=4096)
  with pytest.raises(ConfigError, match='batch_size=4096 is larger than the 3,000 training'):
    train.train_and_evaluate(config, tmp_path)


def test_unwritable_workdir_is_a_clear_error(base_config, tmp_path):
  (tmp_path / 'a_file').write_text('')
  with pytest.raises(UserError, match='workdir .*a_file/run is not writable'):
    train.train_and_evaluate(small_config(base_config), tmp_path / 'a_file' / 'run')


def test_skip_step_leaves_out_non_finite_steps_and_reports_them(base_config, tmp_path, capsys):
  config = small_config(base_config, num_epochs=1, on_nonfinite='skip_step')
  config.optimizer.learning_rate = 1e38  # params near float32's limit: the next loss is inf
  result = train.train_and_evaluate(config, tmp_path)
  record = result['history'][0]
  assert 0 < record['nonfinite_steps'] < 24  # 24 steps per epoch; the first one is finite
  assert math.isfinite(record['loss'])  # skipped steps are left out of the epoch's metrics
  assert (tmp_path / 'checkpoints' / '24').is_dir()  # params stayed finite: it was saved
  err = capsys.readouterr().err
  assert f'warning: skipped {record["nonfinite_steps"]} step(s) with a non-finite loss' in err


def test_a_state_with_inf_params_is_never_checkpointed(base_config, tmp_path):
  ckpts = checkpoint.Checkpoints(tmp_path)
  run = trainer.Trainer(experiment.setup(small_config(base_config)), checkpoints=ckpts)
  finite = run.state
  run.progress.step = 30
  run.state = finite.replace(params=jax.tree.map(lambda x: x.at[0].set(np.inf), finite.params))
  with pytest.raises(NonFiniteError, match=r'^non-finite params at step 30 \(epoch 2\); lower'):
    run.save()
  run.state = finite
  run.save()  # the finite one is saved
  ckpts.close()
  assert ckpts.all_steps() == [30]


def test_the_call_length_is_the_configs_alone_and_a_resumed_epoch_keeps_its_boundaries(
  base_config,
):
  exp = experiment.setup(small_config(base_config, steps_per_call=10))  # 24 steps per epoch
  assert exp.calls == ((0, 10), (10, 20), (20, 24))
  assert exp.calls_from(0) == list(exp.calls)
  assert exp.calls_from(13) == [(13, 20), (20, 24)]
  assert exp.calls_from(20) == [(20, 24)]
  for progress in ('bar', 'lines', 'auto'):  # a terminal changes nothing that is computed
    whole = experiment.calls_per_epoch(small_config(base_config, progress=progress), 24)
    assert whole == ((0, 24),)
  with_saves = small_config(base_config, steps_per_call=10)
  with_saves.checkpoint.every_steps = 4  # a save can only happen between calls
  assert experiment.calls_per_epoch(with_saves, 24)[:2] == ((0, 4), (4, 8))


@pytest.mark.slow
def test_pmap_mode_trains_exactly_as_sharded(base_config, tmp_path):
  sharded = train.train_and_evaluate(small_config(base_config, num_devices=4), tmp_path / 'a')
  pmapped = train.train_and_evaluate(
    small_config(base_config, num_devices=4, parallel='pmap'), tmp_path / 'b'
  )
  assert without_times(pmapped) == without_times(sharded)
  assert pmapped['test'] == sharded['test']


@pytest.mark.slow
def test_bfloat16_resnet_trains_with_float32_batchnorm_statistics(base_config, tmp_path):
  config = small_config(base_config, num_epochs=1, dtype='bfloat16', batch_size=64)
  config.model = ml_collections.ConfigDict({'name': 'resnet_v2', 'depth': 11})
  config.data.train_split = 'train[:256]'
  result = train.train_and_evaluate(config, tmp_path)
  assert math.isfinite(result['history'][0]['loss'])
  assert math.isfinite(result['test']['loss'])
  restored = checkpoint.Checkpoints(tmp_path / 'checkpoints', read_only=True)
  metadata = restored.manager.item_metadata(restored.latest_step())
  dtypes = {m.dtype for item in ('params', 'model_state') for m in jax.tree.leaves(metadata[item])}
  assert dtypes == {np.dtype('float32')}


@pytest.mark.slow
def test_four_accumulated_batches_of_32_take_the_steps_of_batches_of_128(base_config):
  params = {}
  for batch_size, accumulate in ((128, 1), (32, 4)):
    config = small_config(base_config, batch_size=batch_size, grad_accum_steps=accumulate)
    config.data.train_split = 'train[:128]'  # an epoch: one batch of 128, or four of 32
    config.data.validation_split = config.data.test_split = 'test[:100]'
    run = trainer.build(config)
    run.fit()
    params[accumulate] = jax.tree.leaves(run.state.params)
    # The learning rate reported is the one of the update the batch took part in.
    assert run.exp.learner.schedule(3) == run.exp.learner.schedule(0)
  # Dropout masks come from the example's index, so the 4 small batches drop what the big one
  # does; the mean of their gradients is the big batch's, up to float summation order.
  for a, b in zip(params[1], params[4], strict=True):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)  # Adam divides tiny gradients
