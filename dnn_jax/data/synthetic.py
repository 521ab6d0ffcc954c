"""Random images and labels shaped like a dataset's splits: throughput without the data.

For benchmarks on machines the data cannot reach (a GPU machine takes 64 MiB per call;
CIFAR-10 is larger). Speed does not depend on pixel values; accuracy on this data means nothing.
"""

import re
import zlib

import numpy as np

from dnn_jax.data import catalog
from dnn_jax.errors import ConfigError

# tfds's slice forms that synthetic data sizes: 'train', 'train[:1000]', 'test[10%:]'.
SPEC = re.compile(r'^(\w+)(?:\[(-?\d*)(%?):(-?\d*)(%?)\])?$')


def split_size(name: str, spec: str) -> int:
  """How many examples the split spec selects from the dataset's full splits."""
  match = SPEC.match(spec.replace(' ', ''))
  sizes = catalog.SPLIT_SIZES[name]
  if not match or match.group(1) not in sizes:
    raise ConfigError(
      f'synthetic data: cannot size split {spec!r}; use one of {", ".join(sizes)}, '
      "optionally sliced as 'train[a:b]' or 'train[a%:b%]'"
    )
  total = sizes[match.group(1)]

  def bound(text: str, percent: str, default: int) -> int:
    if not text:
      return default
    value = int(text) * total / 100 if percent else int(text)
    value = round(value) if percent else value
    return max(0, min(total, value + total if value < 0 else value))

  start = bound(match.group(2), match.group(3), 0)
  return max(0, bound(match.group(4), match.group(5), total) - start)


def split(name: str, spec: str) -> dict:
  """{'image': uint8 [N, H, W, C], 'label': int32 [N]}, uniformly random, as read.read_split.

  Seeded by the spec: the same spec gives the same arrays, different specs different ones.
  """
  rng = np.random.default_rng(zlib.crc32(spec.encode()))
  n = split_size(name, spec)
  return {
    'image': rng.integers(0, 256, (n, *catalog.SHAPES[name]), np.uint8),
    'label': rng.integers(0, catalog.NUM_CLASSES[name], n).astype(np.int32),
  }
