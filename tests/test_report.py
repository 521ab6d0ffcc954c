"""dnn_jax.report: the run report drawn from real runs' files, and its parts on known arrays."""

import json
import re

import jax
import numpy as np
import pytest
from conftest import run_python
from flax import nnx
from PIL import Image

from dnn_jax import checkpoint, models, tensorboard
from dnn_jax.errors import CheckpointError
from dnn_jax.models import layers
from dnn_jax.report import build, filters, grids, patches
from dnn_jax.report import run as run_lib

PICTURES = ('curves', 'confusion', 'samples', 'predictions', 'misclassified', 'filters')


def _train(workdir, experiment, *overrides):
  result = run_python(
    '-m', 'dnn_jax.main', '--config', experiment, '--workdir', str(workdir),
    '--config.num_epochs=1', '--config.num_devices=1', *overrides,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr
  return result.stdout


@pytest.fixture(scope='module')
def mlp_run(tmp_path_factory):
  """(workdir, stdout) of a finished 1-epoch MNIST MLP run (64 hidden units), report and all."""
  workdir = tmp_path_factory.mktemp('mlp')
  stdout = _train(workdir, 'experiments/mnist_mlp.py', '--config.model.hidden_sizes=(64,)')
  return workdir, stdout


@pytest.fixture(scope='module')
def cnn_run(tmp_path_factory):
  """The workdir of a tiny CNN (4 3x3 filters) trained for one epoch on 2,048 images."""
  workdir = tmp_path_factory.mktemp('cnn')
  _train(
    workdir, 'experiments/mnist_cnn.py', '--config.model.layers=conv4 maxpool flatten',
    '--config.data.train_split=train[:2048]',
  )  # fmt: skip
  return workdir


def _decoded(path) -> np.ndarray:
  with Image.open(path) as image:
    return np.asarray(image.convert('RGB'))


def _near(pixels_HxWx3, hex_colour: str, tolerance: int = 40) -> int:
  """How many pixels are within tolerance of the colour (text is anti-aliased)."""
  rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
  return int((np.abs(pixels_HxWx3.astype(int) - rgb).max(-1) < tolerance).sum())


@pytest.mark.e2e
def test_a_finished_run_draws_every_picture_and_an_index_linking_them(mlp_run):
  workdir, stdout = mlp_run
  report = workdir / 'report'
  assert stdout.splitlines()[-1] == f'Report: {report / "index.html"}'
  for name in PICTURES:
    pixels = _decoded(report / f'{name}.png')
    assert min(pixels.shape[:2]) >= 150, name
    assert pixels.std() > 20, name  # not blank
  assert not (report / 'top9_patches.png').exists()  # an MLP has no convolution
  index = (report / 'index.html').read_text()
  linked = set(re.findall(r'(?:src|href)="([^"]+)"', index))
  assert {f'{name}.png' for name in PICTURES} <= linked
  for target in linked:
    assert not target.startswith(('/', 'http')) and '..' not in target  # a copyable folder
    assert (report / target).is_file(), target
  metrics = json.loads((workdir / 'metrics.json').read_text())
  assert f'{metrics["test"]["accuracy"]:.4f}' in index
  logged = tensorboard.written(tensorboard.logdir(workdir))
  assert {(f'report/{name}', 469) for name in (*PICTURES, 'diagram')} <= logged


@pytest.mark.e2e
def test_the_confusion_matrix_counts_the_test_set_at_the_runs_accuracy(mlp_run):
  workdir, _ = mlp_run
  lines = (workdir / 'report' / 'confusion.txt').read_text().splitlines()
  counts = np.array([[int(c) for c in line.split()[1:]] for line in lines[1:11]])
  assert counts.shape == (10, 10)
  assert counts.sum() == 10_000
  accuracy = json.loads((workdir / 'metrics.json').read_text())['test']['accuracy']
  assert np.trace(counts) == round(accuracy * 10_000)
  assert counts.sum(1).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.e2e
def test_prediction_titles_are_green_when_right_and_red_when_wrong(mlp_run):
  titles, colours = grids.prediction_titles([1, 2, 3], [1, 0, 3], ['a', 'b', 'c', 'd'])
  assert titles == ['b b', 'c a', 'd d']
  assert colours == [grids.RIGHT, grids.WRONG, grids.RIGHT]
  report = mlp_run[0] / 'report'
  wrong_only = _decoded(report / 'misclassified.png')
  assert _near(wrong_only, grids.WRONG) > 100 and _near(wrong_only, grids.RIGHT) == 0
  assert _near(_decoded(report / 'predictions.png'), grids.RIGHT) > 100


@pytest.mark.e2e
def test_the_cli_reports_the_best_checkpoint_and_prints_the_confusion_matrix(mlp_run):
  workdir, _ = mlp_run
  result = run_python('-m', 'dnn_jax.report', '--workdir', str(workdir))
  assert result.returncode == 0, result.stderr
  text = (workdir / 'report' / 'confusion.txt').read_text()
  assert text in result.stdout
  assert result.stdout.splitlines()[-1] == f'Report: {workdir / "report" / "index.html"}'
  assert 'step 469, epoch 1.00 (best)' in (workdir / 'report' / 'index.html').read_text()


@pytest.mark.e2e
def test_mlp_filters_are_the_trained_first_dense_kernels_columns(mlp_run):
  kernel_DxU = np.arange(12).reshape(6, 2)
  images = filters.dense_filters(kernel_DxU, (3, 2, 1))
  assert images.shape == (2, 3, 2, 1)
  np.testing.assert_array_equal(images[1, ..., 0], [[1, 3], [5, 7], [9, 11]])

  run = run_lib.load(mlp_run[0], 'latest')
  images, _ = filters.filter_images(run.model, (28, 28, 1))
  trained = np.asarray(run.model.layers[1].linear.kernel[...])
  assert images.shape == (64, 28, 28, 1)
  for j in (0, 17, 63):
    np.testing.assert_array_equal(images[j], trained[:, j].reshape(28, 28, 1))
  fresh = models.create(
    run.config.model, input_shape=(28, 28, 1), num_classes=10, seed=run.config.seed
  )
  assert not np.allclose(trained, fresh.layers[1].linear.kernel[...])  # restored, not initial


@pytest.mark.parametrize('padding', ['valid', 'same'])
def test_top_patches_of_a_bright_pixel_detector(padding):
  conv = layers.Conv2D(1, 2, 3, padding=padding, rngs=nnx.Rngs(0))
  kernel = np.zeros((3, 3, 1, 2), np.float32)
  kernel[1, 1, 0, 0] = 1.0  # filter 0: the centre pixel's brightness
  kernel[1, 1, 0, 1] = -1.0  # filter 1: its darkness (0 everywhere on black: all tie)
  conv.conv.kernel[...] = kernel
  rng = np.random.default_rng(0)
  low = 0 if padding == 'same' else 1  # 'valid' sees no window centred on the border
  where = rng.integers(low, 9 - low, size=(12, 2))
  where[11] = (low, low)  # the brightest in the corner: its window reaches beyond the edge
  x_N = np.zeros((12, 9, 9, 1), np.float32)
  for i, (r, c) in enumerate(where):
    x_N[i, r, c, 0] = (i + 1) / 20  # image 11 brightest
  top = patches.top_patches(conv, x_N, k=9, num_filters=2, margin=2, batch_size=5)
  np.testing.assert_array_equal(top.image_FxK[0], np.arange(11, 2, -1))
  np.testing.assert_allclose(top.value_FxK[0], np.arange(12, 3, -1) / 20)
  np.testing.assert_array_equal(top.top_FxK[0], where[11:2:-1, 0] - 1)
  np.testing.assert_array_equal(top.left_FxK[0], where[11:2:-1, 1] - 1)
  windows = top.patches_FxKxSxSxC[0, ..., 0]
  assert windows.shape == (9, 7, 7)
  np.testing.assert_allclose(windows[:, 3, 3], np.arange(12, 3, -1) / 20)  # centred
  assert (windows.sum((1, 2)) == windows[:, 3, 3]).all()  # and alone in its window
  beyond = top.outside_FxKxSxS[0, 0]  # rows and columns 0 .. 2 - low are beyond the edge
  edge = 3 - low
  assert beyond[:edge].all() and beyond[:, :edge].all() and not beyond[edge:, edge:].any()
  np.testing.assert_array_equal(top.image_FxK[1], np.arange(9))  # ties: earlier images first


@pytest.mark.e2e
def test_a_cnn_report_adds_its_kernels_and_their_top_9_patches(cnn_run):
  report = cnn_run / 'report'
  for name in (*PICTURES, 'top9_patches'):
    assert _decoded(report / f'{name}.png').std() > 20, name
  assert 'top9_patches.png' in (report / 'index.html').read_text()

  run = run_lib.load(cnn_run, 'latest')
  conv = filters.first_layer(run.model)
  kernel_KxKxCxF = np.asarray(conv.conv.kernel[...])
  images, _ = filters.filter_images(run.model, (28, 28, 1))
  np.testing.assert_array_equal(images[2], kernel_KxKxCxF[..., 2])
  x_N = run.splits.test['image'][:3000].astype(np.float32) / 255
  top = patches.top_patches(conv, x_N)
  responses = jax.lax.conv_general_dilated(
    x_N, kernel_KxKxCxF, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  ) + np.asarray(conv.conv.bias[...])
  best_per_image_NxF = np.asarray(responses).max((1, 2))
  for f in range(4):
    ranked = np.sort(best_per_image_NxF[:, f])[::-1][:9]
    np.testing.assert_allclose(top.value_FxK[f], ranked, rtol=1e-5)
    # Each window's receptive field times the kernel gives the response it was ranked by.
    fields = top.patches_FxKxSxSxC[f, :, 2:5, 2:5]
    dots = np.einsum('khwc,hwc->k', fields, kernel_KxKxCxF[..., f]) + conv.conv.bias[f]
    np.testing.assert_allclose(dots, top.value_FxK[f], rtol=1e-4, atol=1e-5)


class _Saved:
  """Stands in for Checkpoints where only the step lists matter."""

  def __init__(self, steps, best):
    self.steps, self.best = steps, best

  def all_steps(self):
    return self.steps

  def best_step(self):
    return self.best


def test_choosing_the_checkpoint():
  assert checkpoint.choose_step(_Saved([100, 469], 100), 'best') == (100, 'best', None)
  step, chosen, note = checkpoint.choose_step(_Saved([50, 100], None), 'best')
  assert (step, chosen) == (100, 'latest') and 'no epoch has ended' in note
  assert checkpoint.choose_step(_Saved([50, 100], None), '50')[0] == 50
  with pytest.raises(CheckpointError, match='saved steps: 50, 100'):
    checkpoint.choose_step(_Saved([50, 100], None), '70')


@pytest.mark.e2e
def test_a_workdir_without_a_run_is_one_line_naming_the_fix(tmp_path):
  result = run_python('-m', 'dnn_jax.report', '--workdir', str(tmp_path))
  assert result.returncode == 2
  assert result.stderr.splitlines() == [
    f'error: no metrics.json in {tmp_path}; train first: python -m dnn_jax.main --config '
    f'experiments/<name>.py --workdir {tmp_path}'
  ]
  (tmp_path / 'metrics.json').write_text('{}')
  with pytest.raises(CheckpointError, match=r'no checkpoint in .*checkpoints; train first'):
    build.build_report(tmp_path)
