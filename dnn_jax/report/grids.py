"""Grids of titled images: training samples, test predictions, misclassified test images.

A grid is one image (a mosaic) with the titles written above its tiles: far faster to draw
than one matplotlib axes per tile.
"""

import numpy as np
from matplotlib.figure import Figure

from dnn_jax import files

RIGHT, WRONG = '#1a7f37', '#cf222e'  # green, red
GAP = 2  # pixels between tiles


def to_rgb(images_N) -> np.ndarray:
  """[N, H, W, 3] float in [0, 1] from uint8 (0..255) or float (0..1) images, gray or colour."""
  x = np.asarray(images_N)
  x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
  if x.ndim == 3:
    x = x[..., None]
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, axis=-1)
  return np.clip(x, 0.0, 1.0)


def upscale(images_NxHxWxC: np.ndarray, min_size: int = 24) -> np.ndarray:
  """Tiles smaller than min_size pixels repeated (nearest neighbour) to at least that size."""
  factor = -(-min_size // min(images_NxHxWxC.shape[1:3]))
  if factor <= 1:
    return images_NxHxWxC
  return np.repeat(np.repeat(images_NxHxWxC, factor, axis=1), factor, axis=2)


def mosaic(tiles_NxHxWx3: np.ndarray, cols: int, title_px: int = 0, fill: float = 1.0):
  """(canvas, tile top-left corners [N, 2]): tiles in rows of `cols`, title_px free above each."""
  n, h, w, c = tiles_NxHxWx3.shape
  rows = -(-n // cols)
  cell_h, cell_w = title_px + h + GAP, w + GAP
  canvas = np.full((GAP + rows * cell_h, GAP + cols * cell_w, c), fill, np.float32)
  corners = []
  for i, tile in enumerate(tiles_NxHxWx3):
    y0 = GAP + (i // cols) * cell_h + title_px
    x0 = GAP + (i % cols) * cell_w
    canvas[y0 : y0 + h, x0 : x0 + w] = tile
    corners.append((y0, x0))
  return canvas, np.array(corners, np.int32).reshape(-1, 2)


def draw_titled_grid(
  path, images_N, titles, colours=None, *, cols: int, tile_inches: float = 0.9,
  fontsize: float = 10, heading: str = '', fill: float = 1.0,
):  # fmt: skip
  """Writes a PNG of images_N in a grid, titles[i] above tile i in colours[i] (default black).

  fill: the grey level between tiles (1.0: white).
  """
  tiles = upscale(to_rgb(images_N))
  w = tiles.shape[2]
  px_per_inch = (w + GAP) / tile_inches
  title_px = -(-fontsize * 1.5 * px_per_inch // 72)  # a line of text at fontsize
  canvas, corners = mosaic(tiles, cols, int(title_px), fill)
  grid_h, grid_w = canvas.shape[0] / px_per_inch, canvas.shape[1] / px_per_inch
  heading_h = 0.45 if heading else 0.0
  fig = Figure(figsize=(grid_w, grid_h + heading_h), facecolor=str(fill))
  ax = fig.add_axes((0, 0, 1, grid_h / (grid_h + heading_h)))
  ax.imshow(canvas, interpolation='nearest')
  ax.set_axis_off()
  colours = colours or ['black'] * len(titles)
  for (y0, x0), title, colour in zip(corners, titles, colours, strict=True):
    ax.text(x0 + w / 2, y0 - 0.8, title, ha='center', va='bottom', color=colour, fontsize=fontsize)
  if heading:
    fig.text(0.5, 1 - heading_h / 2 / (grid_h + heading_h), heading, ha='center', va='center')
  files.save_figure(fig, path, dpi=100)


def fitting_fontsize(titles, tile_inches: float, largest: float = 11) -> float:
  """A font size at which the longest title fits a tile's width (a character ~0.6 em wide)."""
  longest = max((len(t) for t in titles), default=1)
  return min(largest, tile_inches * 72 / (0.62 * longest))


def prediction_titles(labels_N, predictions_N, class_names) -> tuple[list, list]:
  """('true pred' titles, green where the prediction is right and red where it is wrong)."""
  pairs = list(zip(labels_N, predictions_N, strict=True))
  titles = [f'{class_names[t]} {class_names[p]}' for t, p in pairs]
  colours = [RIGHT if t == p else WRONG for t, p in pairs]
  return titles, colours


def draw_samples(path, images_N, labels_N, class_names, count: int = 100, seed: int = 0):
  """A 10-column grid of `count` training images drawn at random (fixed seed), labelled."""
  pick = np.sort(np.random.default_rng(seed).choice(len(labels_N), count, replace=False))
  titles = [class_names[y] for y in labels_N[pick]]
  draw_titled_grid(
    path, images_N[pick], titles, cols=10, heading=f'{count} training images and their labels',
    fontsize=fitting_fontsize(titles, 0.9),
  )  # fmt: skip


def draw_predictions(path, images_N, labels_N, predictions_N, class_names, heading: str):
  """Test images titled 'true pred', green when right, red when wrong (8 columns)."""
  titles, colours = prediction_titles(labels_N, predictions_N, class_names)
  draw_titled_grid(
    path, images_N, titles, colours, cols=8, tile_inches=1.2, heading=heading,
    fontsize=fitting_fontsize(titles, 1.2),
  )  # fmt: skip


def draw_message(path, message: str) -> None:
  """A small PNG saying message, where a grid would have nothing to show."""
  fig = Figure(figsize=(6, 1.5))
  fig.text(0.5, 0.5, message, ha='center', va='center', fontsize=12)
  files.save_figure(fig, path, dpi=100)
