"""dnn_jax.models: registry, parameter counts, Keras initializers, per-example dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dnn_jax import models
from dnn_jax.errors import ConfigError
from dnn_jax.models import layers
from experiments import (
  cifar10_cnn,
  cifar10_resnet20_aug,
  cifar10_resnet110_aug,
  mnist_cnn,
  mnist_cnn_deep,
  mnist_mlp,
  mnist_mlp_2layer,
  mnist_mlp_minimal,
)


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


def test_unknown_model_lists_choices():
  config = mnist_mlp.get_config()
  config.model.name = 'transformer'
  with pytest.raises(ConfigError, match="unknown model 'transformer'; choose one of cnn, mlp"):
    build(config)


def copy_weights_to_keras(ours, theirs):
  """Sets the Keras model's Dense/Conv2D weights to ours, layer by layer in order."""
  keras = pytest.importorskip('keras')
  mine = [layer for layer in ours.layers if isinstance(layer, (layers.Dense, layers.Conv2D))]
  kinds = (keras.layers.Dense, keras.layers.Conv2D)
  keras_layers = [layer for layer in theirs.layers if isinstance(layer, kinds)]
  assert len(mine) == len(keras_layers)
  for layer, keras_layer in zip(mine, keras_layers, strict=True):
    inner = layer.linear if isinstance(layer, layers.Dense) else layer.conv
    keras_layer.set_weights([np.asarray(inner.kernel[...]), np.asarray(inner.bias[...])])


@pytest.mark.parametrize(
  'experiment, input_shape',
  [
    (mnist_mlp, (28, 28, 1)),
    (mnist_mlp_2layer, (28, 28, 1)),
    (mnist_cnn, (28, 28, 1)),
    (mnist_cnn_deep, (28, 28, 1)),
    (cifar10_cnn, (32, 32, 3)),
  ],
)
@pytest.mark.slow
def test_same_logits_as_keras_with_the_same_weights(experiment, input_shape):
  pytest.importorskip('keras')
  from benchmarks import keras_models

  config = experiment.get_config()
  ours = models.create(config.model, input_shape=input_shape, num_classes=10, seed=0)
  if config.model.name == 'mlp':
    theirs = keras_models.mlp(config.model.hidden_sizes, input_shape)
  else:
    theirs = keras_models.cnn_from_tokens(config.model.layers, input_shape)
  assert theirs.count_params() == param_count(ours)
  copy_weights_to_keras(ours, theirs)
  x = np.random.default_rng(0).uniform(0, 1, (8, *input_shape)).astype(np.float32)
  expected = np.asarray(theirs(x, training=False))
  np.testing.assert_allclose(ours(jnp.asarray(x)), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('experiment', [cifar10_resnet20_aug, cifar10_resnet110_aug])
def test_resnet_v2_param_counts_equal_keras(experiment):
  pytest.importorskip('keras')
  from benchmarks import keras_models

  config = experiment.get_config()
  depth = config.model.depth
  ours = models.create(config.model, input_shape=(32, 32, 3), num_classes=10, seed=0)
  total = sum(x.size for x in jax.tree.leaves(nnx.state(ours)))
  stats = sum(x.size for x in jax.tree.leaves(nnx.state(ours, nnx.BatchStat)))
  theirs = keras_models.resnet_v2(depth)
  assert total == theirs.count_params()
  assert stats == sum(int(np.prod(w.shape)) for w in theirs.non_trainable_weights)


def test_resnet_depth_must_be_9n_plus_2():
  config = cifar10_resnet110_aug.get_config()
  config.model.depth = 50
  with pytest.raises(ConfigError, match=r'config.model.depth=50 must be 9n\+2'):
    models.create(config.model, input_shape=(32, 32, 3), num_classes=10, seed=0)


def test_loss_penalty_sums_what_the_conv_layers_declare():
  config = cifar10_resnet110_aug.get_config()
  config.model.depth = 20
  model = models.create(config.model, input_shape=(32, 32, 3), num_classes=10, seed=0)
  kernels = [m.conv.kernel[...] for _, m in nnx.iter_graph(model) if isinstance(m, layers.Conv2D)]
  assert len(kernels) == 1 + 3 * 2 * 3 + 3  # stem, 3 convs per block, 3 projections
  expected = 1e-4 * sum(float(np.sum(np.square(k))) for k in kernels)
  np.testing.assert_allclose(float(layers.total_loss_penalty(model)), expected, rtol=1e-5)


def test_loss_penalty_comes_from_any_module_that_declares_one():
  class Lasso(nnx.Module):  # not a dnn_jax layer type: found by its method alone
    def __init__(self):
      self.w = nnx.Param(jnp.asarray([1.0, -2.0, 3.0]))

    def loss_penalty(self):
      return 0.5 * jnp.sum(jnp.abs(self.w[...]))

  model = layers.Sequential([Lasso(), layers.Flatten(), Lasso()])
  assert float(layers.total_loss_penalty(model)) == 6.0
  assert float(layers.total_loss_penalty(layers.Sequential([layers.Flatten()]))) == 0.0


def test_bad_cnn_layer_token_names_the_grammar():
  config = mnist_cnn.get_config()
  config.model.layers = 'conv32 pool flatten'
  with pytest.raises(ConfigError, match="bad layer 'pool'; use conv<filters>"):
    build(config)


def test_unknown_model_argument_is_named():
  config = mnist_cnn.get_config()
  config.model.hidden_sizes = (10,)
  with pytest.raises(ConfigError, match="config.model.hidden_sizes is not an argument of 'cnn'"):
    build(config)


@pytest.mark.slow
def test_models_with_any_conv_implementation_agree():
  config = cifar10_resnet110_aug.get_config()
  config.model.depth = 20
  x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)), jnp.float32)
  logits = {}
  for implementation in ('patches', 'forward_convs', 'xla'):
    config.model.conv_implementation = implementation
    model = models.create(config.model, input_shape=(32, 32, 3), num_classes=10, seed=0)
    logits[implementation] = model(x)
  np.testing.assert_allclose(logits['patches'], logits['xla'], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(logits['forward_convs'], logits['xla'], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('experiment', [mnist_mlp, mnist_cnn, mnist_cnn_deep])
def test_dropout_salts_are_numbered_in_the_order_the_layers_are_made(experiment):
  model = nnx.eval_shape(
    lambda: models.create(
      experiment.get_config().model, input_shape=(28, 28, 1), num_classes=10, seed=0
    )
  )
  salts = [layer.salt for layer in model.layers if isinstance(layer, layers.Dropout)]
  assert len(salts) >= 2 and salts == list(range(len(salts)))
  with pytest.raises(ValueError, match='outside models.create needs salt='):
    layers.Dropout(0.5)
