"""dnn_jax.report.diagram: the layer graph of each model family, its PNG and SVG, the CLI."""

import functools
import xml.etree.ElementTree as ET

import jax
import numpy as np
import pytest
from conftest import run_python
from flax import nnx
from PIL import Image

from dnn_jax import models
from dnn_jax.errors import UserError
from dnn_jax.report import diagram
from experiments import cifar10_cnn, cifar10_resnet110_aug, mnist_cnn, mnist_mlp

CIFAR = (32, 32, 3)
MNIST = (28, 28, 1)


def build(config, input_shape):
  return models.create(config.model, input_shape=input_shape, num_classes=10, seed=0)


def total_size(model) -> int:
  """Every array of the model (params and BatchNorm statistics), as Keras's total."""
  return sum(x.size for x in jax.tree.leaves(nnx.state(model)))


def dims(shape: str) -> tuple[int, ...]:
  """'(None, 8, 8, 256)' -> (8, 8, 256)."""
  return tuple(int(d) for d in shape.strip('()').split(', ')[1:])


@functools.cache
def resnet(depth: int):
  config = cifar10_resnet110_aug.get_config()
  config.model.depth = depth
  return build(config, CIFAR)


def test_mlp_graph_is_the_keras_layer_sequence():
  model = build(mnist_mlp.get_config(), MNIST)
  graph = diagram.build_graph(model, MNIST)
  assert [(n.name, n.kind, n.shape) for n in graph.nodes] == [
    ('input', 'InputLayer', '(None, 28, 28, 1)'),
    ('flatten', 'Flatten', '(None, 784)'),
    ('dense', 'Dense', '(None, 512)'),
    ('dropout', 'Dropout', '(None, 512)'),
    ('dense_1', 'Dense', '(None, 512)'),
    ('dropout_1', 'Dropout', '(None, 512)'),
    ('dense_2', 'Dense', '(None, 512)'),
    ('dropout_2', 'Dropout', '(None, 512)'),
    ('dense_3', 'Dense', '(None, 10)'),
  ]
  assert [n.params for n in graph.nodes if n.kind == 'Dense'] == [784 * 512 + 512] + [
    512 * 512 + 512
  ] * 2 + [512 * 10 + 10]
  assert sum(n.params for n in graph.nodes) == total_size(model) == 932_362
  assert graph.edges == [(i, i + 1, 'main') for i in range(len(graph.nodes) - 1)]


@pytest.mark.parametrize(
  'experiment, input_shape, expected',
  [
    (mnist_cnn, MNIST, [('Conv2D', 26), ('Conv2D', 24), ('MaxPooling2D', 12)]),
    (
      cifar10_cnn,
      CIFAR,
      [
        ('Conv2D', 32),
        ('Conv2D', 30),
        ('MaxPooling2D', 15),
        ('Conv2D', 15),
        ('Conv2D', 13),
        ('MaxPooling2D', 6),
      ],
    ),
  ],
)
def test_cnn_convs_and_pools_appear_in_order(experiment, input_shape, expected):
  model = build(experiment.get_config(), input_shape)
  graph = diagram.build_graph(model, input_shape)
  spatial = [
    (n.kind, dims(n.shape)[0]) for n in graph.nodes if n.kind in ('Conv2D', 'MaxPooling2D')
  ]
  assert spatial == expected
  assert sum(n.params for n in graph.nodes) == total_size(model)
  assert graph.nodes[-1].shape == '(None, 10)'


@pytest.mark.slow
def test_resnet_blocks_add_a_main_path_and_a_shortcut():
  model = resnet(20)  # 2 blocks a stage: every block in full
  graph = diagram.build_graph(model, CIFAR)
  nodes = graph.nodes
  adds = [i for i, n in enumerate(nodes) if n.kind == 'Add']
  assert len(adds) == 6
  stem = next(i for i, n in enumerate(nodes) if n.name == 'activation')
  block_inputs = [stem, *adds[:-1]]
  blocks = [layer for layer in model.layers if type(layer).__name__ == 'PreactBottleneck']
  for k, (add, block_input) in enumerate(zip(adds, block_inputs, strict=True)):
    prefix = nodes[add].name.removesuffix('/add')
    incoming = dict((role, s) for s, role in graph.incoming(add))
    assert len(graph.incoming(add)) == 2 and set(incoming) == {'main', 'shortcut'}
    assert nodes[incoming['main']].name == f'{prefix}/conv3'
    inner = [n.name.split('/')[1] for n in nodes[block_input + 1 : add] if n.lane == 0]
    preact = ['bn1', 'relu1'] if k else []  # the stem's BN-ReLU preactivates the first
    assert inner == [*preact, 'conv1', 'bn2', 'relu2', 'conv2', 'bn3', 'relu3', 'conv3']
    shortcut = incoming['shortcut']
    if k % 2 == 0:  # each stage's first block projects
      assert (nodes[shortcut].name, nodes[shortcut].kind) == (f'{prefix}/shortcut', 'Conv2D')
      assert nodes[shortcut].lane == 1 and nodes[shortcut].params > 0
      assert graph.incoming(shortcut) == [(block_input, 'shortcut')]
      assert nodes[shortcut].shape == nodes[add].shape
    else:
      assert shortcut == block_input  # identity
    # The expansion mirrors the block's own __call__: same output shape.
    spec = jax.ShapeDtypeStruct((1, *dims(nodes[block_input].shape)), np.float32)
    out = jax.eval_shape(lambda x, b=blocks[k]: b(x), spec)
    assert dims(nodes[add].shape) == out.shape[1:]
  assert [nodes[a].shape for a in adds[::2]] == [
    '(None, 32, 32, 64)',
    '(None, 16, 16, 128)',
    '(None, 8, 8, 256)',
  ]
  assert sum(n.params for n in nodes) == total_size(model) == 574_090
  assert nodes[-1].shape == '(None, 10)'


def test_resnet110_collapses_the_middle_blocks_of_each_stage():
  model = resnet(110)  # 12 blocks a stage
  graph = diagram.build_graph(model, CIFAR)
  summaries = [n for n in graph.nodes if n.blocks]
  assert [n.blocks for n in summaries] == [9, 9, 9]  # 2 first and the last in full
  assert summaries[0].name == 'preact_bottleneck_2 … _10'
  assert sum(n.kind == 'Add' for n in graph.nodes) == 9
  assert sum(n.params for n in graph.nodes) == total_size(model)
  full = diagram.build_graph(model, CIFAR, max_blocks=0)
  assert sum(n.kind == 'Add' for n in full.nodes) == 36 and not any(n.blocks for n in full.nodes)
  assert sum(n.params for n in full.nodes) == total_size(model)
  assert len(full.nodes) > 3 * len(graph.nodes) - 10
  with pytest.raises(UserError, match='max_blocks=-1 must be 0'):
    diagram.build_graph(model, CIFAR, max_blocks=-1)


def non_white_runs(column_RGB) -> int:
  dark = (column_RGB < 250).any(axis=-1)
  return int(np.sum(dark[1:] & ~dark[:-1]) + dark[0])


def test_png_and_svg_show_every_layer(tmp_path):
  model = build(mnist_mlp.get_config(), MNIST)
  paths = diagram.draw_model(model, MNIST, tmp_path / 'mlp')
  assert paths == [tmp_path / 'mlp.png', tmp_path / 'mlp.svg']
  image = np.asarray(Image.open(paths[0]).convert('RGB'))
  graph = diagram.build_graph(model, MNIST)
  height = diagram.MARGIN + diagram.TITLE + len(graph.nodes) * diagram.ROW + diagram.MARGIN
  assert image.shape[0] == round(height * 100)
  # A column just inside the boxes' left edges crosses each box once, and nothing else.
  top = round((diagram.MARGIN + diagram.TITLE) * 100)
  column = image[top:, round(diagram.MARGIN * 100) + 3]
  assert non_white_runs(column) == len(graph.nodes)
  svg = ET.parse(paths[1]).getroot()
  texts = [''.join(t.itertext()) for t in svg.iter('{http://www.w3.org/2000/svg}text')]
  assert 'MLP: 932,362 params (932,362 trainable)' in texts
  for node in graph.nodes:
    assert f'{node.name} ({node.kind})' in texts
    assert f'{node.shape}   {node.params:,} params' in texts


def test_resnet_png_is_tall_and_has_the_branch_column(tmp_path):
  png, svg = diagram.draw_model(resnet(20), CIFAR, tmp_path / 'resnet20')
  image = np.asarray(Image.open(png).convert('RGB'))
  height, width, _ = image.shape
  assert height > 4 * width
  right = image[:, width // 2 + 20 :]  # the shortcut convs' column
  assert (right < 250).any(axis=-1).mean() > 0.01
  text = svg.read_text()
  assert 'preact_bottleneck_4/shortcut (Conv2D)' in text and 'preact_bottleneck_5/add (Add)' in text


@pytest.mark.e2e
def test_command_line_draws_a_config_without_training(tmp_path):
  out = tmp_path / 'cnn'
  result = run_python(
    '-m', 'dnn_jax.report.diagram', '--config', 'experiments/mnist_cnn.py', '--out', str(out)
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.split() == [f'{out}.png', f'{out}.svg']
  assert Image.open(f'{out}.png').size[1] > 500
  assert 'conv2d_1 (Conv2D)' in (tmp_path / 'cnn.svg').read_text()
