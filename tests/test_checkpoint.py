"""dnn_jax.checkpoint: exact round trips, what is kept, broken and misfitting checkpoints."""

import os
import pathlib

import jax
import ml_collections
import numpy as np
import optax
import pytest

from dnn_jax import checkpoint, models, parallel, steps
from dnn_jax.errors import CheckpointError
from experiments import mnist_mlp

REPO = pathlib.Path(__file__).resolve().parents[1]


def mlp_state(hidden=(16,), num_devices=4, seed=0):
  config = mnist_mlp.get_config()
  config.model.hidden_sizes = hidden
  model = models.create(config.model, input_shape=(28, 28, 1), num_classes=10, seed=seed)
  _, state = steps.init_state(model, optax.adam(1e-3))
  return jax.device_put(state, parallel.replicated(parallel.make_mesh(num_devices)))


def bn_state(num_devices=4):
  """A ResNet's state: BatchNorm statistics in model_state."""
  model_config = ml_collections.ConfigDict({'name': 'resnet_v2', 'depth': 11})
  model = models.create(model_config, input_shape=(8, 8, 3), num_classes=10, seed=0)
  _, state = steps.init_state(model, optax.sgd(0.1, momentum=0.9))
  return jax.device_put(state, parallel.replicated(parallel.make_mesh(num_devices)))


def shifted(state, by):
  """state with `by` added to every float array (counts stay integers)."""
  return jax.tree.map(lambda x: x + by if np.issubdtype(x.dtype, np.floating) else x, state)


def assert_bitwise_equal(a, b):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b, strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
@pytest.mark.parametrize('make_state', [mlp_state, bn_state], ids=['mlp', 'batchnorm'])
def test_round_trip_is_bitwise(tmp_path, make_state):
  state = shifted(make_state(), 0.25)
  ckpts = checkpoint.Checkpoints(tmp_path / 'checkpoints')
  meta = {'step': 7, 'history': [{'loss': 0.1 + 0.2}], 'epoch_sums': {'loss': 1 / 3}}
  ckpts.save(state, meta)
  ckpts.close()
  restored, restored_meta, step = checkpoint.Checkpoints(tmp_path / 'checkpoints').restore_latest(
    make_state()
  )
  assert step == 7 and restored_meta == meta  # floats survive JSON exactly
  assert_bitwise_equal(restored.params, state.params)
  assert_bitwise_equal(restored.model_state, state.model_state)
  assert_bitwise_equal(restored.opt_state, state.opt_state)


def test_restores_onto_another_device_count(tmp_path):
  four = shifted(mlp_state(num_devices=4), 1.0)
  ckpts = checkpoint.Checkpoints(tmp_path)
  ckpts.save(four, {'step': 1})
  ckpts.wait()
  one, _, _ = ckpts.restore_latest(mlp_state(num_devices=1))
  assert jax.tree.leaves(one.params)[0].sharding.mesh.size == 1
  ckpts.save(shifted(one, 1.0), {'step': 2})
  ckpts.wait()
  back, _, _ = ckpts.restore_latest(mlp_state(num_devices=4))
  assert jax.tree.leaves(back.params)[0].sharding.mesh.size == 4
  assert_bitwise_equal(back.params, shifted(four, 1.0).params)


def test_keeps_the_last_k_and_the_best(tmp_path):
  state = mlp_state()
  ckpts = checkpoint.Checkpoints(tmp_path, max_to_keep=2)
  accuracies = {10: 0.5, 20: 0.9, 30: 0.7, 40: 0.9, 45: None, 50: 0.8}  # 45: mid-epoch
  for step, accuracy in accuracies.items():
    metrics = None if accuracy is None else {'val_accuracy': accuracy}
    ckpts.save(state, {'step': step}, metrics)
  ckpts.wait()
  assert ckpts.all_steps() == [20, 45, 50]  # the last two, and the first of the best
  assert ckpts.best_step() == 20
  assert not ckpts.save(state, {'step': 50})  # a step is never saved twice


def test_unreadable_latest_falls_back_to_the_one_before(tmp_path, capsys):
  ckpts = checkpoint.Checkpoints(tmp_path / 'checkpoints')
  for step in (1, 2):
    ckpts.save(shifted(mlp_state(), step), {'step': step})
  ckpts.close()
  files = [p for p in (tmp_path / 'checkpoints' / '2' / 'params').rglob('*') if p.is_file()]
  biggest = max(files, key=lambda p: p.stat().st_size)
  os.truncate(biggest, biggest.stat().st_size // 2)

  restored, meta, step = checkpoint.Checkpoints(tmp_path / 'checkpoints').restore_latest(
    mlp_state()
  )
  assert step == 1 and meta == {'step': 1}
  assert_bitwise_equal(restored.params, shifted(mlp_state(), 1).params)
  warning = capsys.readouterr().err.strip()
  assert warning.startswith(f'warning: checkpoint {tmp_path / "checkpoints" / "2"} is unreadable')
  assert warning.endswith(f'moved it to {tmp_path / "checkpoints_unreadable" / "2"}; using step 1')
  assert (tmp_path / 'checkpoints_unreadable' / '2' / 'params').is_dir()


def test_checkpoint_of_another_model_names_the_first_differing_parameter(tmp_path):
  ckpts = checkpoint.Checkpoints(tmp_path)
  ckpts.save(mlp_state(hidden=(16,)), {'step': 3})
  ckpts.wait()
  with pytest.raises(CheckpointError) as error:
    ckpts.restore_latest(mlp_state(hidden=(32,)))
  assert str(error.value) == (
    f'checkpoint {tmp_path / "3"} does not fit this model: params layers.1.linear.bias has '
    'shape (16,) there and (32,) here; use the config it was saved with, or another --workdir'
  )
  assert ckpts.all_steps() == [3]  # a misfit is not mistaken for a broken checkpoint


def test_checkpoint_of_another_optimizer_says_so(tmp_path):
  ckpts = checkpoint.Checkpoints(tmp_path)
  ckpts.save(mlp_state(), {'step': 3})
  ckpts.wait()
  sgd = mlp_state()
  sgd = sgd.replace(opt_state=optax.sgd(0.1, momentum=0.9).init(sgd.params))
  with pytest.raises(CheckpointError, match='does not fit this optimizer: it has no opt_state'):
    ckpts.restore_latest(sgd)


def test_nothing_in_a_checkpoint_is_pickled(tmp_path):
  ckpts = checkpoint.Checkpoints(tmp_path)
  ckpts.save(bn_state(), {'step': 1})
  ckpts.close()
  files = [p for p in tmp_path.rglob('*') if p.is_file()]
  assert files
  for path in files:  # protocol 2+ pickles open with 0x80 <protocol>
    head = path.read_bytes()[:2]
    assert not (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5), path
  sources = [p.read_text() for p in (REPO / 'dnn_jax').rglob('*.py')]
  assert not any(
    bad in s for s in sources for bad in ('import pickle', 'pickle.load', 'allow_pickle=True')
  )


def test_open_source_accepts_a_workdir_its_checkpoints_or_a_step(tmp_path):
  ckpts = checkpoint.Checkpoints(tmp_path / 'checkpoints')
  for step in (4, 8):
    ckpts.save(mlp_state(), {'step': step})
  ckpts.close()
  for path, step in [
    (tmp_path, 8),
    (tmp_path / 'checkpoints', 8),
    (tmp_path / 'checkpoints' / '4', 4),
  ]:
    source, found = checkpoint.open_source(path)
    assert found == step and source.directory == tmp_path / 'checkpoints'
  with pytest.raises(CheckpointError, match=f'no checkpoint at {tmp_path / "nowhere"}; give a'):
    checkpoint.open_source(tmp_path / 'nowhere')
