"""dnn_jax.steps: batch orders, masked padding, the scanned train chunk and evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dnn_jax import models, parallel, steps
from experiments import mnist_mlp


def test_epoch_order_yields_every_example_once():
  order = np.asarray(steps.epoch_order(jax.random.key(0), 3, num_examples=1000, batch_size=128))
  assert order.shape == (8, 128)  # ceil(1000 / 128): the last batch is partial, not dropped
  flat = order.ravel()
  assert sorted(flat[flat != steps.PAD]) == list(range(1000))
  assert (flat[1000:] == steps.PAD).all()  # padding only at the end


def test_epoch_order_is_reshuffled_and_reproducible():
  key = jax.random.key(0)
  order = lambda epoch: np.asarray(steps.epoch_order(key, epoch, 1000, 100))
  np.testing.assert_array_equal(order(1), order(1))
  assert not np.array_equal(order(1), order(2))
  assert not np.array_equal(order(1).ravel(), np.arange(1000))


def test_eval_order_is_in_sequence_and_padded():
  order = np.asarray(steps.batch_order(10, 4))
  np.testing.assert_array_equal(order, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, -1, -1]])


def tiny_setup(dropout=0.0):
  config = mnist_mlp.get_config()
  config.model.hidden_sizes = (16,)
  config.model.dropout = dropout
  model = models.create(config.model, input_shape=(4, 4, 1), num_classes=3, seed=0)
  tx = optax.sgd(0.5)
  graphdef, state = steps.init_state(model, tx)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (12, 4, 4, 1)), jnp.uint8)
  labels = jnp.asarray(rng.integers(0, 3, 12), jnp.int32)
  return graphdef, tx, state, images, labels


def params_after(order_SxB, mesh, dropout=0.0):
  graphdef, tx, state, images, labels = tiny_setup(dropout)
  train = parallel.train_program(steps.make_train_chunk(graphdef, tx), mesh)
  state, sums = train(state, images, labels, jnp.asarray(order_SxB, jnp.int32), jax.random.key(1))
  return state, jax.device_get(sums)


def test_padding_is_masked_out_of_the_gradient():
  mesh = parallel.make_mesh(1)
  padded, padded_sums = params_after([[3, 1, 4, 0, -1, -1, -1, -1]], mesh)
  plain, plain_sums = params_after([[3, 1, 4, 0]], mesh)
  for a, b in zip(jax.tree.leaves(padded.params), jax.tree.leaves(plain.params), strict=True):
    # float32 sums over 8 rows or 4 round differently (1.2e-6 apart on a Zen 3 EPYC without
    # AVX-512); unmasked padding would add four whole examples' gradients.
    np.testing.assert_allclose(a, b, rtol=1e-5)
  assert padded_sums['count'] == plain_sums['count'] == 4
  np.testing.assert_allclose(padded_sums['loss'], plain_sums['loss'], rtol=1e-6)


def test_train_chunk_takes_one_step_per_batch_and_learns():
  mesh = parallel.make_mesh(1)
  order = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]] * 30
  state, sums = params_after(order, mesh)
  assert int(state.step) == 30
  graphdef, _, initial, images, labels = tiny_setup()
  evaluate = parallel.evaluate_program(steps.make_evaluate(graphdef), mesh)
  eval_order = steps.batch_order(12, 5)
  before = steps.means(jax.device_get(evaluate(initial, images, labels, eval_order)))
  after = steps.means(jax.device_get(evaluate(state, images, labels, eval_order)))
  assert after['loss'] < 0.5 * before['loss']
  assert sums['count'] == 30 * 12


def test_evaluate_equals_numpy_on_a_padded_split():
  graphdef, _, state, images, labels = tiny_setup()
  evaluate = parallel.evaluate_program(steps.make_evaluate(graphdef), parallel.make_mesh(1))
  sums = jax.device_get(evaluate(state, images, labels, steps.batch_order(12, 5)))
  model = nnx.merge(graphdef, state.params, state.model_state)
  logits = np.asarray(model(steps.to_inputs(images)), np.float64)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  expected_loss = -log_probs[np.arange(12), np.asarray(labels)].mean()
  expected_accuracy = (logits.argmax(-1) == np.asarray(labels)).mean()
  means = steps.means(sums)
  assert sums['count'] == 12
  np.testing.assert_allclose(means['loss'], expected_loss, rtol=1e-5)
  np.testing.assert_allclose(means['accuracy'], expected_accuracy)


def poisoned_setup(skip_nonfinite):
  graphdef, _, state, images, labels = tiny_setup()
  tx = optax.adam(0.1)  # with a step count in its state, which must not advance either
  state = state.replace(opt_state=tx.init(state.params))
  images = np.asarray(images, np.float32)
  images[5, 0, 0, 0] = np.nan  # example 5 poisons the loss of the batch that holds it
  chunk = steps.make_train_chunk(graphdef, tx, skip_nonfinite=skip_nonfinite)
  return state, images, labels, parallel.train_program(chunk, parallel.make_mesh(1))


def test_a_non_finite_loss_is_reported_with_its_step():
  state, images, labels, train = poisoned_setup(skip_nonfinite=False)
  order = jnp.asarray([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]], jnp.int32)
  _, sums = train(state, images, labels, order, jax.random.key(1))
  assert int(sums['first_nonfinite']) == 2  # the 1-based step of the poisoned batch
  assert int(sums['nonfinite']) >= 1  # later steps may follow on NaN params: no pass checks
  assert sums['count'] == 3 * (4 - int(sums['nonfinite']))  # bad steps are left out


def test_with_skip_a_non_finite_step_changes_nothing():
  state, images, labels, train = poisoned_setup(skip_nonfinite=True)
  fresh = lambda: jax.tree.map(jnp.copy, state)  # each call donates (consumes) its state
  run = lambda order: train(
    fresh(), images, labels, jnp.asarray(order, jnp.int32), jax.random.key(1)
  )

  good_then_bad, sums = run([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
  good_only, good_sums = run([[0, 1, 2]])
  assert int(sums['nonfinite']) == 1 and int(sums['first_nonfinite']) == 2
  assert int(good_sums['nonfinite']) == 0 and int(good_sums['first_nonfinite']) == -1
  assert sums['count'] == 6  # the poisoned batch is left out of the metrics
  assert np.isfinite(sums['loss'])
  assert int(good_then_bad.step) == 3  # the position in the data still advances
  # Step 3 was applied on top of step 1 alone: redo that and compare bitwise.
  then_third, _ = train(
    good_only, images, labels, jnp.asarray([[6, 7, 8]], jnp.int32), jax.random.key(1)
  )
  pairs = zip(
    jax.tree.leaves(good_then_bad.params), jax.tree.leaves(then_third.params), strict=True
  )
  for a, b in pairs:
    np.testing.assert_array_equal(a, b)
  assert int(good_then_bad.opt_state[0].count) == 2


def test_bfloat16_compute_keeps_float32_params_and_tracks_float32():
  graphdef, tx, state, images, labels = tiny_setup()
  order = jnp.asarray([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]] * 5, jnp.int32)
  mesh = parallel.make_mesh(1)
  results = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    chunk = steps.make_train_chunk(graphdef, tx, compute_dtype=dtype)
    train = parallel.train_program(chunk, mesh)
    new, sums = train(jax.tree.map(jnp.copy, state), images, labels, order, jax.random.key(1))
    evaluate = parallel.evaluate_program(steps.make_evaluate(graphdef, compute_dtype=dtype), mesh)
    eval_sums = evaluate(new, images, labels, steps.batch_order(12, 4))
    results[dtype] = (new, jax.device_get(sums), jax.device_get(eval_sums))
  (f32, f32_sums, f32_eval), (bf16, bf16_sums, bf16_eval) = results.values()
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(bf16.params))
  assert bf16_sums['loss'] != f32_sums['loss']  # it did compute in bfloat16 ...
  assert bf16_sums['loss'] == pytest.approx(f32_sums['loss'], rel=2e-2)  # ... and kept up
  assert bf16_eval['loss'] == pytest.approx(f32_eval['loss'], rel=3e-2)
  for a, b in zip(jax.tree.leaves(bf16.params), jax.tree.leaves(f32.params), strict=True):
    np.testing.assert_allclose(a, b, atol=3e-2)
  moved = max(float(np.abs(a - b).max()) for a, b in zip(
    jax.tree.leaves(bf16.params), jax.tree.leaves(state.params), strict=True))  # fmt: skip
  assert moved > 0.05  # it trained: the comparison above is not trivially true
