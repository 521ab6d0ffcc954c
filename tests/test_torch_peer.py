"""benchmarks.torch_models and torch_peer: dnn_jax's models in PyTorch, same size and logits."""

import functools
import json
import math

import pytest

torch = pytest.importorskip('torch')

import jax  # noqa: E402  (after the skip: this module needs torch)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from conftest import run_python  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks import torch_models  # noqa: E402
from dnn_jax import models  # noqa: E402
from experiments import cifar10_cnn, cifar10_resnet110_aug, mnist_cnn, mnist_mlp  # noqa: E402


def resnet20():
  config = cifar10_resnet110_aug.get_config()
  config.model.depth = 20
  return config


CASES = [
  ('mnist_mlp', mnist_mlp.get_config, (28, 28, 1)),
  ('mnist_cnn', mnist_cnn.get_config, (28, 28, 1)),
  ('cifar10_cnn', cifar10_cnn.get_config, (32, 32, 3)),
  ('resnet_v2_20', resnet20, (32, 32, 3)),
]


@functools.cache
def dnn_jax_model(name, get_config, input_shape):
  """dnn_jax's model of the experiment, shapes only (initializing a ResNet takes seconds)."""
  model_config = get_config().model
  return nnx.eval_shape(
    lambda: models.create(model_config, input_shape=input_shape, num_classes=10, seed=0)
  )


def count(state):
  return sum(math.prod(x.shape) for x in jax.tree.leaves(state))


@pytest.mark.parametrize('name, get_config, input_shape', CASES)
def test_same_parameter_count_as_dnn_jax(name, get_config, input_shape):
  ours = dnn_jax_model(name, get_config, input_shape)
  theirs = torch_models.from_config(get_config().model, input_shape, 10)
  assert sum(p.numel() for p in theirs.parameters()) == count(nnx.state(ours, nnx.Param))
  # BatchNorm's moving mean and variance (torch also counts the batches it has seen).
  stats = [b for n, b in theirs.named_buffers() if not n.endswith('num_batches_tracked')]
  assert sum(b.numel() for b in stats) == count(nnx.state(ours, nnx.BatchStat))


def random_weights(abstract_model, seed=0):
  """The model with every param and BatchNorm statistic drawn at random: zero biases, unit
  gammas and fresh statistics would hide a weight copied to the wrong place."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-2].key  # the variable's attribute: kernel, bias, gamma, moving_mean, ...
    if name in ('gamma', 'moving_variance'):
      values = rng.uniform(0.5, 1.5, leaf.shape)
    elif name == 'kernel':  # He uniform: activations keep their scale through the ReLUs
      values = rng.uniform(-1, 1, leaf.shape) * np.sqrt(6 / math.prod(leaf.shape[:-1]))
    else:
      values = rng.normal(0, 0.1, leaf.shape)
    return jnp.asarray(values, leaf.dtype)

  graphdef, state = nnx.split(abstract_model)
  return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, state))


@pytest.mark.parametrize('memory_format', ['channels_last', 'contiguous'])
@pytest.mark.parametrize('name, get_config, input_shape', CASES)
def test_same_logits_as_dnn_jax_with_the_same_weights(
  name, get_config, input_shape, memory_format, mnist
):
  if name == 'mnist_mlp' and memory_format == 'contiguous':
    pytest.skip('an MLP has no convolutions to lay out')
  ours = random_weights(dnn_jax_model(name, get_config, input_shape))
  theirs = torch_models.from_config(get_config().model, input_shape, 10, memory_format)
  torch_models.load_from_dnn_jax(theirs, ours)
  if input_shape == (28, 28, 1):  # real digits: flattening order and borders matter
    x = mnist.test['image'][:16].astype(np.float32) / 255.0
  else:
    x = np.random.default_rng(1).uniform(0, 1, (8, *input_shape)).astype(np.float32)
  # Evaluation (no dropout, moving statistics), compiled as dnn_jax runs it.
  expected = np.asarray(nnx.jit(lambda model, x: model(x))(ours, jnp.asarray(x)))
  theirs.eval()
  with torch.inference_mode():
    got = theirs(torch.from_numpy(x)).numpy()
  assert np.abs(expected).max() > 0.1  # logits that say something
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_initializers_are_keras_and_l2_goes_to_conv_kernels_only():
  torch.manual_seed(0)
  model = torch_models.resnet_v2(20).requires_grad_(False)
  stem = model.layers[0]
  bound = 2 * np.sqrt(2 / 27) / 0.87962566103423978  # he_normal's truncation, fan_in 3x3x3
  assert float(stem.weight.abs().max()) <= bound and not stem.bias.any()
  dense = torch_models.dense(784, 512).weight.detach()
  assert float(dense.abs().max()) <= np.sqrt(6 / (784 + 512))  # glorot_uniform
  decayed, plain = torch_models.l2_param_groups(model, 1e-4)
  assert decayed['weight_decay'] == 2e-4 and plain['weight_decay'] == 0.0
  assert len(decayed['params']) == 1 + 3 * 2 * 3 + 3  # stem, 3 convs per block, 3 projections
  assert all(p.dim() == 4 for p in decayed['params'])
  assert len(decayed['params']) + len(plain['params']) == len(list(model.parameters()))


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory):
  config = mnist_mlp.get_config()
  config.data.train_split = 'train[:1024]'
  config.data.validation_split = 'test[:500]'
  path = tmp_path_factory.mktemp('torch_peer') / 'config.json'
  path.write_text(config.to_json())
  return path


@pytest.mark.e2e
@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_peer_times_steps_and_prints_one_json_line(tiny_config, dtype):
  result = run_python(
    '-m', 'benchmarks.torch_peer', f'--config_json={tiny_config}', f'--dtype={dtype}',
    '--compile=false', '--warmup_steps=1', '--min_steps=3', '--min_seconds=0',
    '--eval_repeats=1',
  )  # fmt: skip
  assert result.returncode == 0, result.stderr
  numbers = json.loads(result.stdout.splitlines()[-1])
  assert (numbers['peer'], numbers['framework'], numbers['dtype']) == ('torch', 'torch', dtype)
  assert numbers['steps_timed'] >= 3 and numbers['batch_size'] == 128
  assert numbers['model_params'] == 932_362  # the Keras MLP's
  positive = ('train_samples_per_sec', 'eval_samples_per_sec', 'first_step_seconds', 'step_ms')
  assert all(numbers[key] > 0 for key in positive)
  assert numbers['train_samples_per_sec_min'] <= numbers['train_samples_per_sec']
  assert numbers['train_samples_per_sec'] <= numbers['train_samples_per_sec_max']
  assert numbers['torch_threads'] >= 1 and numbers['memory_format'] is None


def test_without_torch_the_peer_says_how_to_install_it():
  run = (
    "import sys; sys.modules['torch'] = None; from absl import app; "
    "from benchmarks import torch_peer; sys.argv = ['torch_peer', '--config_json=none.json']; "
    'app.run(torch_peer.main)'
  )
  result = run_python('-c', run)
  assert result.returncode == 2
  assert result.stderr.strip() == "error: PyTorch is not installed; pip install -e '.[bench]'"
