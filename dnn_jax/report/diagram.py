"""The network's structure as Keras's plot_model(show_shapes=True) draws it, from the NNX model.

One box per layer (name, type, output shape, parameters), arrows between them; residual blocks
show their main path, their shortcut beside it and the Add where the two meet.

Usage: python -m dnn_jax.report.diagram --config experiments/X.py --out /tmp/x [--max_blocks=N]
"""

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
from flax import nnx

from dnn_jax import files, summary
from dnn_jax.errors import UserError
from dnn_jax.models import layers as L

# A stage of more blocks than this shows its first MAX_BLOCKS - 1 and its last in full, the
# ones between as one box: ResNet-110's 12 blocks a stage would be a 20,000-pixel column.
MAX_BLOCKS = 3


@dataclasses.dataclass(frozen=True)
class Node:
  """One box: a layer, an Add, or several blocks summarized."""

  name: str
  kind: str  # the layer's type, e.g. 'Conv2D'
  shape: str  # Keras's output shape, e.g. '(None, 28, 28, 1)'
  params: int  # parameters and BatchNorm statistics, as Keras counts them
  lane: int = 0  # 0: the main column; 1: a shortcut branch beside it
  blocks: int = 0  # >0: a box that stands for this many blocks


@dataclasses.dataclass
class Graph:
  """Nodes in drawing order and edges (source index, target index, 'main' or 'shortcut')."""

  nodes: list[Node] = dataclasses.field(default_factory=list)
  edges: list[tuple[int, int, str]] = dataclasses.field(default_factory=list)

  def add(self, node: Node, *sources: int, role: str = 'main') -> int:
    self.nodes.append(node)
    self.edges += [(s, len(self.nodes) - 1, role) for s in sources]
    return len(self.nodes) - 1

  def incoming(self, index: int) -> list[tuple[int, str]]:
    return [(s, role) for s, t, role in self.edges if t == index]


def _shape(spec) -> str:
  return '(None, ' + ', '.join(str(d) for d in spec.shape[1:]) + ')'


def _through(layer, spec):
  return jax.eval_shape(lambda x: layer(x), spec)


def _add_residual(graph: Graph, block: L.Residual, name: str, source: int, spec):
  """Expands a residual block as its __call__ runs it; returns (Add node, its output spec)."""
  main, shortcut = block.branches()
  last, y = source, spec
  for attr, layer in main:
    y = _through(layer, y)
    node = Node(f'{name}/{attr}', type(layer).__name__, _shape(y), summary.count(layer, ...))
    last = graph.add(node, last)
  branch, s = source, spec  # the identity, unless the shortcut has layers
  for attr, layer in shortcut:
    s = _through(layer, s)
    node = Node(f'{name}/{attr}', type(layer).__name__, _shape(s), summary.count(layer, ...), 1)
    branch = graph.add(node, branch, role='shortcut')
  add = graph.add(Node(f'{name}/add', 'Add', _shape(y), 0), last)
  graph.edges.append((branch, add, 'shortcut'))
  return add, y


def _collapsed_runs(layers, max_blocks: int) -> dict[int, int]:
  """{first index: end index} of the runs of blocks drawn as one box each."""
  runs, stages, current = {}, [], None
  for i, layer in enumerate(layers):
    if not isinstance(layer, L.Residual):
      current = None
      continue
    if current is None or layer.branches()[1]:  # a projection starts a stage
      current = []
      stages.append(current)
    current.append(i)
  for stage in stages:
    if max_blocks and len(stage) > max_blocks:
      runs[stage[max_blocks - 1]] = stage[-1]
  return runs


def build_graph(model: nnx.Module, input_shape, max_blocks: int = MAX_BLOCKS) -> Graph:
  """The model's layers as a graph; max_blocks=0 expands every residual block."""
  if max_blocks < 0:
    raise UserError(f'max_blocks={max_blocks} must be 0 (every block) or positive')
  layers = list(getattr(model, 'layers', [model]))
  rows = summary.rows(model, input_shape)  # Keras names, types, shapes and counts
  runs = _collapsed_runs(layers, max_blocks)
  graph = Graph()
  spec = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  last = graph.add(Node('input', 'InputLayer', _shape(spec), 0))
  i = 0
  while i < len(layers):
    if i in runs:
      end = runs[i]
      for layer in layers[i:end]:
        spec = _through(layer, spec)
      params = sum(row[3] for row in rows[i:end])
      name = f'{rows[i][0]} … _{rows[end - 1][0].rsplit("_", 1)[-1]}'  # … _10
      kind = f'{end - i} \N{MULTIPLICATION SIGN} {rows[i][1]}'
      node = Node(name, kind, _shape(spec), params, blocks=end - i)
      last, i = graph.add(node, last), end
      continue
    name, kind, shape, params = rows[i]
    if isinstance(layers[i], L.Residual):
      last, spec = _add_residual(graph, layers[i], name, last, spec)
    else:
      spec = _through(layers[i], spec)
      last = graph.add(Node(name, kind, shape, params), last)
    i += 1
  return graph


# Layout, in inches: the figure's data coordinates are inches from its top-left corner.
ROW, BOX_H, GAP, MARGIN, TITLE, FONT_PT = 0.52, 0.38, 0.5, 0.25, 0.35, 8
CHAR = 0.6 * FONT_PT / 72  # DejaVu Sans Mono's advance
COLORS = {
  'InputLayer': '#f3f3f3',
  'Dense': '#cfe2f3',
  'Conv2D': '#c9daf8',
  'BatchNormalization': '#fff2cc',
  'Activation': '#fce5cd',
  'Dropout': '#eeeeee',
  'Flatten': '#d9ead3',
  'MaxPooling2D': '#d9d2e9',
  'AveragePooling2D': '#d9d2e9',
  'Add': '#f4cccc',
}


def _labels(node: Node) -> tuple[str, str]:
  return f'{node.name} ({node.kind})', f'{node.shape}   {node.params:,} params'


def _rows(graph: Graph) -> list[int]:
  """Each node's row: main-column nodes one per row, a branch node in the row after its source."""
  rows, row = [], -1
  for i, node in enumerate(graph.nodes):
    if node.lane == 0:
      row += 1
      rows.append(row)
    else:
      rows.append(rows[graph.incoming(i)[0][0]] + 1)
  return rows


def draw(graph: Graph, out_stem: pathlib.Path, title: str = '') -> list[pathlib.Path]:
  """Draws graph into out_stem.png and out_stem.svg (text kept as text); returns both paths."""
  import matplotlib
  from matplotlib import patches
  from matplotlib.figure import Figure
  from matplotlib.path import Path

  rows = _rows(graph)
  box_w = max(len(t) for n in graph.nodes for t in _labels(n)) * CHAR + 0.3
  lanes = 2 if any(n.lane for n in graph.nodes) else 1
  x_lane = [MARGIN + box_w / 2 + k * (box_w + GAP) for k in range(2)]
  x_skip = MARGIN + box_w + GAP / 2  # identity shortcuts run down here
  skips = any(role == 'shortcut' for _, _, role in graph.edges)
  top = MARGIN + (TITLE if title else 0.0)
  width = 2 * MARGIN + lanes * box_w + (lanes - 1) * GAP + (GAP if skips and lanes == 1 else 0)
  width = max(width, 2 * MARGIN + len(title) * CHAR)
  height = top + (max(rows) + 1) * ROW + MARGIN
  y_of = [top + r * ROW + BOX_H / 2 for r in rows]
  fig = Figure(figsize=(width, height))
  ax = fig.add_axes((0, 0, 1, 1))
  ax.set_xlim(0, width)
  ax.set_ylim(height, 0)
  ax.axis('off')
  text = dict(family='DejaVu Sans Mono', fontsize=FONT_PT, ha='center', va='center')
  if title:
    ax.text(MARGIN, MARGIN + 0.1, title, **{**text, 'ha': 'left', 'fontweight': 'bold'})
  for node, y in zip(graph.nodes, y_of, strict=True):
    x = x_lane[node.lane]
    color = COLORS.get(node.kind, '#e8e8e8')  # a summary of blocks: grey
    box = patches.FancyBboxPatch(
      (x - box_w / 2, y - BOX_H / 2), box_w, BOX_H, boxstyle='round,pad=0,rounding_size=0.05',
      facecolor=color, edgecolor='#444444', linewidth=0.8,
      linestyle='--' if node.blocks else '-',
    )  # fmt: skip
    ax.add_patch(box)
    first, second = _labels(node)
    ax.text(x, y - BOX_H / 4.5, first, fontweight='bold', **text)
    ax.text(x, y + BOX_H / 4.5, second, color='#333333', **text)
  placed = [(x_lane[n.lane], y, n.lane) for n, y in zip(graph.nodes, y_of, strict=True)]
  q = BOX_H / 4  # side edges leave a box below its middle and enter above it
  for s, t, _ in graph.edges:
    (xs, ys, lane_s), (xt, yt, lane_t) = placed[s], placed[t]
    right_s, right_t = xs + box_w / 2, xt + box_w / 2
    if lane_s == lane_t and rows[t] == rows[s] + 1:
      points = [(xs, ys + BOX_H / 2), (xt, yt - BOX_H / 2)]
    elif lane_t > lane_s:
      points = [(right_s, ys + q), (xt, ys + q), (xt, yt - BOX_H / 2)]
    elif lane_t < lane_s:
      points = [(xs, ys + BOX_H / 2), (xs, yt - q), (right_t, yt - q)]
    else:
      points = [(right_s, ys + q), (x_skip, ys + q), (x_skip, yt - q), (right_t, yt - q)]
    arrow = patches.FancyArrowPatch(
      path=Path(points), arrowstyle='-|>,head_length=4,head_width=2.5', color='#444444',
      linewidth=0.9, shrinkA=0, shrinkB=0,
    )  # fmt: skip
    ax.add_patch(arrow)
  out_stem = pathlib.Path(out_stem)
  out_stem.parent.mkdir(parents=True, exist_ok=True)
  paths = [out_stem.with_name(out_stem.name + suffix) for suffix in ('.png', '.svg')]
  with matplotlib.rc_context({'svg.fonttype': 'none'}):  # names stay searchable text
    for path in paths:
      files.save_figure(fig, path, dpi=100)
  return paths


def draw_model(model, input_shape, out_stem: pathlib.Path, max_blocks: int = MAX_BLOCKS):
  """Writes out_stem.png and out_stem.svg: model's structure; returns their paths.

  Args:
    model: a Flax NNX model of dnn_jax.models.
    input_shape: one example's shape, e.g. (28, 28, 1).
    out_stem: the path without its suffix.
    max_blocks: residual blocks drawn in full per stage (0: all); see MAX_BLOCKS.
  """
  graph = build_graph(model, input_shape, max_blocks)
  total, trainable = summary.count(model, ...), summary.count(model, nnx.Param)
  title = f'{type(model).__name__}: {total:,} params ({trainable:,} trainable)'
  return draw(graph, out_stem, title)


def main(argv):
  del argv  # cli.parse_flags refuses positional arguments
  cli.run_reporting_errors(_draw_config, FLAGS.config, FLAGS.out, FLAGS.max_blocks)


def _draw_config(config, out, max_blocks):
  from dnn_jax import configs
  from dnn_jax.data import catalog

  model = configs.create_model(configs.validated(config))
  input_shape = catalog.get(config.data.name).image_shape
  for path in draw_model(model, input_shape, pathlib.Path(out), max_blocks):
    print(path)


if __name__ == '__main__':
  from absl import app, flags
  from ml_collections import config_flags

  from dnn_jax import cli

  FLAGS = flags.FLAGS
  config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
  flags.DEFINE_string('out', None, 'Output path without suffix: writes OUT.png and OUT.svg.')
  flags.DEFINE_integer('max_blocks', MAX_BLOCKS, 'Residual blocks per stage drawn in full; 0: all.')
  flags.mark_flags_as_required(['config', 'out'])
  app.run(main, flags_parser=cli.parse_flags)
