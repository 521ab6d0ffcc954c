"""dnn_jax.parallel: the mesh, device-count errors, and 1 device == 4 devices."""

import jax
import numpy as np
import pytest

from dnn_jax import models, optim, parallel, steps
from dnn_jax.errors import ConfigError
from experiments import mnist_mlp


def test_mesh_over_all_or_some_devices():
  assert jax.device_count() == 4  # conftest: JAX_NUM_CPU_DEVICES=4
  assert parallel.make_mesh(0).shape == {parallel.DATA_AXIS: 4}
  assert parallel.make_mesh(2).shape == {parallel.DATA_AXIS: 2}


def test_too_many_devices_is_a_clear_error():
  with pytest.raises(ConfigError, match=r'num_devices=8 but only 4 cpu device\(s\) exist'):
    parallel.make_mesh(8)


def test_indivisible_batch_is_a_clear_error():
  with pytest.raises(ConfigError, match='batch_size=130 is not divisible by the 4 devices; use a'):
    parallel.check_divisible(130, parallel.make_mesh(4))
  parallel.check_divisible(128, parallel.make_mesh(4))


def train_mnist_steps(mnist, num_devices, num_steps=6, mode='sharded'):
  """A few Adam steps with dropout on real MNIST; returns the params and the metric sums."""
  config = mnist_mlp.get_config()
  mesh = parallel.make_mesh(num_devices)
  model = models.create(config.model, input_shape=(28, 28, 1), num_classes=10, seed=0)
  tx = optim.create(config.optimizer)
  graphdef, state = steps.init_state(model, tx)
  replicated = parallel.replicated(mesh)
  state = jax.device_put(state, replicated)
  images = jax.device_put(mnist.train['image'][:2000], replicated)
  labels = jax.device_put(mnist.train['label'][:2000], replicated)
  order = steps.epoch_order(jax.random.key(0), 0, 2000, 128)[:num_steps]
  order = jax.device_put(order, parallel.batch_sharded(mesh, 1))
  train = parallel.train_program(steps.make_train_chunk(graphdef, tx), mesh, mode)
  state, sums = train(state, images, labels, order, jax.random.key(5))
  eval_order = jax.device_put(steps.batch_order(1000, 200), parallel.batch_sharded(mesh, 1))
  evaluate = parallel.evaluate_program(steps.make_evaluate(graphdef), mesh, mode)
  eval_sums = evaluate(state, images, labels, eval_order)
  return jax.device_get(state.params), jax.device_get(
    {**sums, **{f'eval_{k}': v for k, v in eval_sums.items()}}
  )


@pytest.mark.slow
def test_one_and_four_devices_reach_the_same_params(mnist):
  params_1, sums_1 = train_mnist_steps(mnist, 1)
  params_4, sums_4 = train_mnist_steps(mnist, 4)
  leaves_1, leaves_4 = jax.tree.leaves(params_1), jax.tree.leaves(params_4)
  moved = max(float(np.abs(a).max()) for a in jax.tree.leaves(params_1))
  assert moved > 0
  for a, b in zip(leaves_1, leaves_4, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(sums_1['loss'], sums_4['loss'], rtol=1e-5)
  assert sums_1['count'] == sums_4['count'] == 6 * 128


def test_params_are_replicated_and_batches_sharded():
  mesh = parallel.make_mesh(4)
  x = jax.device_put(np.zeros((3, 8)), parallel.batch_sharded(mesh, 1))
  assert x.addressable_shards[0].data.shape == (3, 2)
  y = jax.device_put(np.zeros((5,)), parallel.replicated(mesh))
  assert all(shard.data.shape == (5,) for shard in y.addressable_shards)


def test_pmap_and_sharded_steps_are_the_same_computation(mnist):
  params_s, sums_s = train_mnist_steps(mnist, 4, mode='sharded')
  params_p, sums_p = train_mnist_steps(mnist, 4, mode='pmap')
  for a, b in zip(jax.tree.leaves(params_s), jax.tree.leaves(params_p), strict=True):
    np.testing.assert_array_equal(a, b)  # bitwise: dropout masks, batches and sums agree
  assert sums_s == sums_p
  assert sums_p['count'] == 6 * 128 and sums_p['eval_count'] == 1000


def test_a_multi_process_run_needs_its_count_and_index(monkeypatch):
  for name in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'):
    monkeypatch.delenv(name, raising=False)
  config = mnist_mlp.get_config().distributed
  parallel.initialize_distributed(config)  # no address: one process, nothing to do
  config.coordinator_address = '127.0.0.1:1234'
  config.num_processes = 2
  with pytest.raises(ConfigError, match=r'needs .* 0 <= process_id < num_processes \(got 2 and -1'):
    parallel.initialize_distributed(config)
