"""dnn_jax.export: a trained checkpoint as StableHLO and ONNX, run back against its own logits."""

import json

import jax
import numpy as np
import pytest
from conftest import run_python
from flax import nnx

from dnn_jax import checkpoint, configs, export, inference, steps, train
from dnn_jax.report import predict

TOLERANCE = 1e-5  # max |logits difference| on real test images
NUM_IMAGES = 2000


def _train(base_config, workdir, ema_decay=0.0, **model):
  config = base_config()
  config.model.update(model)
  config.ema.decay = ema_decay
  config.data.train_split = 'train[:512]'
  config.data.validation_split = config.data.test_split = 'test[:500]'
  config.num_epochs = 1
  config.num_devices = 1
  config.progress = 'lines'
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope='module')
def mlp_run(base_config, tmp_path_factory):
  """The workdir of an MNIST MLP (32 hidden units) trained one epoch on 512 images."""
  return _train(base_config, tmp_path_factory.mktemp('mlp'), hidden_sizes=(32,))


@pytest.fixture(scope='module')
def cnn_run(tmp_path_factory):
  """The workdir of a tiny MNIST CNN (4 3x3 filters, max-pool), trained as mlp_run."""
  from experiments import mnist_cnn

  return _train(
    mnist_cnn.get_config, tmp_path_factory.mktemp('cnn'), layers='conv4 maxpool flatten'
  )


def _run(path, fmt, x_BxHxWxC):
  """The exported file run as a user would, without dnn_jax."""
  if fmt == 'stablehlo':
    return np.asarray(jax.export.deserialize(bytearray(path.read_bytes())).call(x_BxHxWxC))
  import onnxruntime

  session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
  return session.run(None, {session.get_inputs()[0].name: x_BxHxWxC})[0]


@pytest.mark.slow
@pytest.mark.parametrize('fmt', export.FORMATS)
@pytest.mark.parametrize('model', ['mlp', 'cnn'])
def test_the_exported_model_gives_the_checkpoints_logits_on_test_images(request, mnist, model, fmt):
  workdir = request.getfixturevalue(f'{model}_run')
  path = export.export_checkpoint(workdir, 'best', fmt)
  assert path == workdir / 'export' / f'model.{fmt}'
  x_NxHxWxC = mnist.test['image'][:NUM_IMAGES].astype(np.float32) / 255.0
  restored = inference.load(workdir, 'best')  # the run's own convolutions, not forced to XLA
  want_NxK = predict.logits(restored.model, x_NxHxWxC, 500)
  assert np.abs(_run(path, fmt, x_NxHxWxC) - want_NxK).max() <= TOLERANCE
  assert np.abs(_run(path, fmt, x_NxHxWxC[:3]) - want_NxK[:3]).max() <= TOLERANCE  # any batch
  description = json.loads(export.description_path(path).read_text())
  assert description['step'] == restored.step
  assert description['input']['shape'] == ['batch', 28, 28, 1]
  assert description['input']['dtype'] == 'float32'
  assert description['output']['shape'] == ['batch', 10]
  assert description['class_names'] == [str(i) for i in range(10)]
  if model == 'cnn':  # exported with XLA's convolutions, whatever the run trained with
    assert restored.config.model.conv_implementation == 'auto'
    assert description['model']['conv_implementation'] == 'xla'


@pytest.mark.e2e
def test_the_command_writes_stablehlo_without_importing_onnx(mlp_run, tmp_path):
  # The command as `python -m dnn_jax.export` runs it, then which ONNX modules it imported.
  code = (
    'import runpy, sys\n'
    'try:\n'
    "  runpy.run_module('dnn_jax.export', run_name='__main__')\n"
    'finally:\n'
    "  print('onnx modules:', [m for m in sys.modules if m.split('.')[0] in "
    "('jax2onnx', 'onnx', 'onnxruntime')])\n"
  )
  output = tmp_path / 'served' / 'mnist.stablehlo'
  result = run_python('-c', code, f'--workdir={mlp_run}', f'--output={output}')
  assert result.returncode == 0, result.stderr
  assert f'Exported stablehlo: {output}' in result.stdout
  assert 'onnx modules: []' in result.stdout
  assert json.loads(export.description_path(output).read_text())['format'] == 'stablehlo'
  exported = jax.export.deserialize(bytearray(output.read_bytes()))
  assert set(exported.platforms) == set(export.PLATFORMS)


@pytest.mark.parametrize('decay', [0.0, 0.9])
def test_the_average_of_the_weights_is_served_where_the_run_kept_one(base_config, tmp_path, decay):
  config = base_config()
  config.model.hidden_sizes = (32,)
  config.ema.decay = decay
  model = configs.create_model(config)
  _, params, model_state = nnx.split(model, nnx.Param, ...)
  average = jax.tree.map(lambda x: x + 1.0, params)  # a stand-in the params cannot be
  state = steps.TrainState(jax.numpy.zeros([], 'int32'), params, model_state, None, average)
  source = checkpoint.Checkpoints(tmp_path / 'checkpoints', async_save=False)
  meta = {'step': 1, 'steps_per_epoch': 1, 'config': json.loads(config.to_json())}
  source.save(state if decay else state.replace(ema=None), meta)
  source.close()
  restored = inference.load(tmp_path, 'latest')
  assert restored.weights == ('ema' if decay else 'params')
  served = jax.tree.leaves(nnx.state(restored.model, nnx.Param))
  want = jax.tree.leaves(average if decay else params)
  assert all(np.array_equal(a, b) for a, b in zip(served, want, strict=True))
