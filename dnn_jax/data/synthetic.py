"""Random images and labels shaped like a dataset's splits: throughput without the data.

For benchmarks on machines the data cannot reach (a GPU machine takes 64 MiB per call;
CIFAR-10 is larger). Speed does not depend on pixel values; accuracy on this data means nothing.
"""

import zlib

import numpy as np

from dnn_jax.data import catalog
from dnn_jax.errors import ConfigError


def split(name: str, spec: str) -> dict:
  """{'image': uint8 [N, H, W, C], 'label': int32 [N]}, uniformly random, as read.read_split.

  Seeded by the spec: the same spec gives the same arrays, different specs different ones.
  """
  rng = np.random.default_rng(zlib.crc32(spec.encode()))
  n = catalog.split_size(name, spec)
  if n is None:
    raise ConfigError(
      f'synthetic data: cannot size split {spec!r}; use one of '
      f"{', '.join(catalog.DATASETS[name].split_sizes)}, optionally sliced as 'train[a:b]' or "
      "'train[a%:b%]'"
    )
  return {
    'image': rng.integers(0, 256, (n, *catalog.DATASETS[name].image_shape), np.uint8),
    'label': rng.integers(0, catalog.DATASETS[name].num_classes, n).astype(np.int32),
  }
