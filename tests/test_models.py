"""dnn_jax.models: registry, parameter counts, Keras initializers, per-example dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dnn_jax import models
from dnn_jax.errors import ConfigError
from dnn_jax.models import layers
from experiments import mnist_mlp, mnist_mlp_2layer, mnist_mlp_minimal


def build(config):
  return models.create(config.model, input_shape=(28, 28, 1), num_classes=10, seed=0)


def param_count(model):
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize(
  'experiment, expected',
  [(mnist_mlp, 932_362), (mnist_mlp_minimal, 932_362), (mnist_mlp_2layer, 669_706)],
)
def test_param_counts_equal_keras(experiment, expected):
  assert param_count(build(experiment.get_config())) == expected


def test_keras_initializers():
  model = build(mnist_mlp.get_config())
  dense = model.layers[1]
  kernel, bias = np.asarray(dense.linear.kernel[...]), np.asarray(dense.linear.bias[...])
  limit = np.sqrt(6 / (784 + 512))  # glorot_uniform
  assert kernel.shape == (784, 512)
  assert np.abs(kernel).max() <= limit
  assert np.abs(kernel).max() > 0.95 * limit  # uniform over the whole range
  assert kernel.std() == pytest.approx(limit / np.sqrt(3), rel=0.02)
  assert not bias.any()


def test_same_seed_same_params():
  a, b = build(mnist_mlp.get_config()), build(mnist_mlp.get_config())
  for x, y in zip(jax.tree.leaves(nnx.state(a)), jax.tree.leaves(nnx.state(b)), strict=True):
    np.testing.assert_array_equal(x, y)


def test_logits_shape_and_eval_is_deterministic():
  model = build(mnist_mlp.get_config())
  x = jnp.ones((5, 28, 28, 1))
  assert model(x).shape == (5, 10)
  np.testing.assert_array_equal(model(x), model(x))


def test_dropout_rate_scale_and_keys():
  dropout = layers.Dropout(0.25, salt=0)
  x = jnp.ones((64, 512))
  keys = jax.random.split(jax.random.key(0), 64)
  y = np.asarray(dropout(x, keys))
  np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.75], rtol=1e-6)
  assert (y == 0).mean() == pytest.approx(0.25, abs=0.01)
  np.testing.assert_array_equal(dropout(x, keys), y)  # same keys, same mask
  # An example's mask depends on its own key only, not on its batch or position.
  np.testing.assert_array_equal(dropout(x[:8], keys[10:18]), y[10:18])
  assert not np.array_equal(layers.Dropout(0.25, salt=1)(x, keys), y)  # layers differ
  np.testing.assert_array_equal(dropout(x), x)  # no keys: evaluation


def test_unknown_model_lists_choices():
  config = mnist_mlp.get_config()
  config.model.name = 'transformer'
  with pytest.raises(ConfigError, match="unknown model 'transformer'; choose one of mlp"):
    build(config)


@pytest.mark.parametrize('experiment', [mnist_mlp, mnist_mlp_2layer])
def test_mlp_equals_the_keras_model_with_the_same_weights(experiment):
  keras = pytest.importorskip('keras')
  config = experiment.get_config()
  ours = build(config)
  stack = [keras.Input((28, 28, 1)), keras.layers.Flatten()]
  for hidden in config.model.hidden_sizes:
    stack += [keras.layers.Dense(hidden, activation='relu'), keras.layers.Dropout(0.2)]
  stack.append(keras.layers.Dense(10, activation='softmax'))  # the tutorial's head
  theirs = keras.Sequential(stack)
  assert theirs.count_params() == param_count(ours)
  dense = [layer for layer in ours.layers if isinstance(layer, layers.Dense)]
  keras_dense = [layer for layer in theirs.layers if isinstance(layer, keras.layers.Dense)]
  for mine, keras_layer in zip(dense, keras_dense, strict=True):
    keras_layer.set_weights(
      [np.asarray(mine.linear.kernel[...]), np.asarray(mine.linear.bias[...])]
    )
  x = np.random.default_rng(0).uniform(0, 1, (16, 28, 28, 1)).astype(np.float32)
  probs = np.asarray(theirs(x, training=False))
  np.testing.assert_allclose(jax.nn.softmax(ours(jnp.asarray(x))), probs, atol=1e-6, rtol=1e-5)
