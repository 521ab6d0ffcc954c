"""The model contract: a model added in one file outside the package gets every feature."""

import json
import shutil

import pytest
from conftest import run_python

pytestmark = pytest.mark.e2e

SOURCES = 'tests/new_model'


@pytest.fixture(scope='module')
def outside(tmp_path_factory):
  """A directory outside the package holding zoo/wide_resnet.py and the experiment wrn_mnist.py."""
  from conftest import REPO

  root = tmp_path_factory.mktemp('outside')
  (root / 'zoo').mkdir()
  shutil.copy(REPO / SOURCES / 'wide_resnet.py', root / 'zoo' / 'wide_resnet.py')
  shutil.copy(REPO / SOURCES / 'wrn_mnist.py', root / 'wrn_mnist.py')
  return root


def _run(outside, *args):
  """stdout of `python *args` with the outside directory importable, as a user would set it."""
  result = run_python(*args, env={'PYTHONPATH': str(outside)})
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def test_summary_counts_the_new_model(outside, monkeypatch, capsys):
  from dnn_jax import summary

  summary.print_summary(_experiment(outside, monkeypatch).get_config())
  stdout = capsys.readouterr().out
  rows = [line for line in stdout.splitlines() if '(WideBlock)' in line]
  assert len(rows) == 3  # one block per stage at depth 10
  # By hand: stem 3*3*1*16+16; per block convs (+ projection) and 2 BNs (4 numbers a channel).
  blocks = [(16, 16), (16, 32), (32, 64)]
  total = 3 * 3 * 1 * 16 + 16
  for c_in, c in blocks:
    projection = c_in * c + c if c_in != c else 0
    total += 9 * c_in * c + c + 9 * c * c + c + projection + 4 * c_in + 4 * c
  total += 4 * 64 + 64 * 10 + 10
  assert f'Total params: {total:,}' in stdout


def test_trains_checkpoints_resumes_and_reports_the_new_model(outside, tmp_path):
  experiment = str(outside / 'wrn_mnist.py')
  first = _run(outside, '-m', 'dnn_jax.main', '--config', experiment, '--workdir', str(tmp_path))
  metrics = json.loads((tmp_path / 'metrics.json').read_text())
  assert metrics['config']['model']['name'] == 'zoo.wide_resnet'
  assert metrics['config']['optimizer']['weight_decay'] == 1e-4  # optax's adamw, by name
  # It learns (chance is 0.1). Training accuracy: 32 steps are too few for BatchNorm's moving
  # averages (momentum 0.99) to serve evaluation yet.
  assert metrics['history'][0]['accuracy'] > 0.3, first
  report = tmp_path / 'report'
  for picture in ('diagram.png', 'filters.png', 'curves.png', 'confusion.png'):
    assert (report / picture).stat().st_size > 1000, picture
  # The checkpoint resumes: a second epoch continues from the first, not from scratch.
  second = _run(
    outside, '-m', 'dnn_jax.main', '--config', experiment, '--workdir', str(tmp_path),
    '--config.num_epochs=2', '--noreport',  # the report was checked above
  )  # fmt: skip
  assert 'Resuming from ' in second and 'Epoch 1/2' not in second
  assert 'Epoch 2/2' in second
  history = json.loads((tmp_path / 'metrics.json').read_text())['history']
  assert [record['epoch'] for record in history] == [1, 2]
  assert history[0]['val_accuracy'] == metrics['history'][0]['val_accuracy']


def test_the_diagram_walks_the_new_blocks_branches(outside, monkeypatch):
  from dnn_jax import models
  from dnn_jax.report import diagram

  config = _experiment(outside, monkeypatch).get_config()
  model = models.create(config.model, input_shape=(28, 28, 1), num_classes=10, seed=0)
  graph = diagram.build_graph(model, (28, 28, 1))
  names = {node.name: node for node in graph.nodes}
  assert sum(node.kind == 'Add' for node in graph.nodes) == 3
  assert names['wide_block/dropout'].kind == 'Dropout'  # inside the block's main path
  assert 'wide_block/projection' not in names  # 16 -> 16 channels, stride 1: identity
  projection = names['wide_block_1/projection']
  assert (projection.kind, projection.lane, projection.shape) == ('Conv2D', 1, '(None, 14, 14, 32)')


def _experiment(outside, monkeypatch):
  """The experiment module wrn_mnist.py, loaded from its file as config_flags does."""
  import importlib.util

  monkeypatch.syspath_prepend(str(outside))
  spec = importlib.util.spec_from_file_location('wrn_mnist', outside / 'wrn_mnist.py')
  experiment = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(experiment)
  return experiment
