"""Classify image files with a trained run: python -m dnn_jax.predict --workdir W a.png dir/ ...

Each file (of a directory: its image files, in sorted order) is opened with Pillow, converted
to the dataset's channels (L, gray, for MNIST; RGB for CIFAR-10), resized to its H x W
(stretched: the aspect ratio is not kept) and fed to the model as evaluation feeds it (x / 255,
then config.eval_augment), in batches. Each prints one line: the --top_k classes, named as
the dataset names them, and their probabilities. MNIST's digits are white on black: --invert
turns a dark digit on light paper into that (nothing guesses it for you). A file that cannot
be read is one `skipped <path>: <why>` line on stderr and the rest go on; the exit code is 2
only when no file could be read. --json prints one JSON list instead of the lines.
--checkpoint: best (default), latest or a step number.
"""

import functools
import json
import pathlib
import sys

import numpy as np
from absl import app, flags

from dnn_jax import cli
from dnn_jax.errors import UserError

FLAGS = flags.FLAGS
USAGE = 'python -m dnn_jax.predict --workdir W a.png b.jpg images/'


def define_flags() -> None:
  """The command's flags; defined only when run as a command (tests import this module)."""
  flags.DEFINE_string('workdir', None, "A training run's workdir (holds checkpoints/).")
  flags.DEFINE_string(
    'checkpoint', 'best', 'best (the latest if no epoch ended), latest, or a step.'
  )
  flags.DEFINE_integer('top_k', 3, 'How many of the likeliest classes to print per image.')
  flags.DEFINE_bool('invert', False, 'Invert the images first (dark digits on light paper).')
  flags.DEFINE_bool('json', False, 'Print one JSON list of the results instead of lines.')
  flags.mark_flags_as_required(['workdir'])


def predict_files(workdir, paths, which='best', top_k=3, invert=False, as_json=False) -> list:
  """Prints (and returns) [{path, top_k: [{class, name, probability}]}] of the readable images."""
  from dnn_jax import inference
  from dnn_jax.data import catalog
  from dnn_jax.report import predict

  if not paths:
    raise UserError(f'give the image files or directories to classify: {USAGE}')
  if top_k < 1:
    raise UserError(f'--top_k={top_k} must be at least 1')
  restored = inference.load(workdir, which)
  if restored.note:
    print(f'note: {restored.note}', file=sys.stderr)
  print(f'Checkpoint {restored.path} (step {restored.step})', file=sys.stderr)
  config = restored.config
  dataset = catalog.get(config.data.name)
  read, images = [], []
  for path in image_files(paths):
    try:
      images.append(read_image(path, dataset.image_shape, invert))
      read.append(path)
    except UnreadableImage as e:
      print(f'skipped {path}: {e}', file=sys.stderr)
  if not images:
    raise UserError(f'no image could be read from {" ".join(map(str, paths))}')
  batch = min(config.eval_batch_size, len(images))
  x_N = predict.model_inputs(np.stack(images), config.eval_augment, batch)
  logits_NxK = predict.logits(restored.model, x_N, batch, config.dtype).astype(np.float64)
  probabilities_NxK = np.exp(logits_NxK - logits_NxK.max(-1, keepdims=True))
  probabilities_NxK /= probabilities_NxK.sum(-1, keepdims=True)
  names = dataset.label_names()
  results = []
  for path, p_K in zip(read, probabilities_NxK, strict=True):
    best = np.argsort(-p_K, kind='stable')[:top_k]
    top = [{'class': int(k), 'name': names[k], 'probability': float(p_K[k])} for k in best]
    results.append({'path': str(path), 'top_k': top})
    if not as_json:
      print(f'{path}: ' + ', '.join(f'{t["name"]} {t["probability"]:.4f}' for t in top))
  if as_json:
    print(json.dumps(results, indent=2))
  return results


class UnreadableImage(Exception):
  """A file that is missing or not an image Pillow reads; its message says which."""


def image_files(paths) -> list:
  """The paths given, each directory replaced by its image files in sorted order."""
  from PIL import Image

  extensions = set(Image.registered_extensions())  # '.png', '.jpg', ...
  found = []
  for path in map(pathlib.Path, paths):
    if path.is_dir():
      inside = sorted(p for p in path.iterdir() if p.suffix.lower() in extensions and p.is_file())
      if not inside:
        print(f'skipped {path}: a directory without image files', file=sys.stderr)
      found.extend(inside)
    else:
      found.append(path)  # a missing or unreadable file says so when it is read
  return found


def read_image(path, image_shape, invert: bool = False) -> np.ndarray:
  """uint8 [H, W, C] of the image file in the dataset's shape, or UnreadableImage(why)."""
  from PIL import Image, ImageOps

  height, width, channels = image_shape
  try:
    with Image.open(path) as image:
      image = image.convert('L' if channels == 1 else 'RGB')  # decodes the whole file
  except FileNotFoundError:
    raise UnreadableImage('no such file') from None
  except Image.UnidentifiedImageError:
    raise UnreadableImage('not an image that Pillow can read') from None
  # Pillow reports a damaged file as any of these, and a huge one as a decompression bomb.
  except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
    raise UnreadableImage(getattr(e, 'strerror', None) or str(e) or type(e).__name__) from None
  if image.size != (width, height):
    image = image.resize((width, height), Image.Resampling.BILINEAR)
  if invert:
    image = ImageOps.invert(image)
  return np.asarray(image, np.uint8).reshape(height, width, channels)


def main(argv):
  cli.run_reporting_errors(
    predict_files, FLAGS.workdir, argv[1:], FLAGS.checkpoint, FLAGS.top_k, FLAGS.invert, FLAGS.json
  )


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=functools.partial(cli.parse_flags, positional=True))
