"""Read a prepared tfds split into uint8 numpy arrays, without TensorFlow."""

import os
import pathlib
import re

import numpy as np

Shard = tuple[int, int]  # (index, count): the index-th of count even, contiguous parts


def _cache_path(
  cache_dir: pathlib.Path, name: str, version: str, split: str, shard: Shard | None
) -> pathlib.Path:
  safe_split = re.sub(r'[^A-Za-z0-9_.-]+', '_', split)
  part = f'.shard{shard[0]}of{shard[1]}' if shard else ''
  return cache_dir / 'dnn_jax_arrays' / name / version / f'{safe_split}{part}.npz'


def read_split(
  name: str, version: str, split: str, data_dir: pathlib.Path, shard: Shard | None = None
) -> dict:
  """{'image': uint8 [N, H, W, C], 'label': int32 [N]} read with tfds.data_source.

  shard=(i, n) reads only the i-th of tfds.even_splits(split, n): contiguous parts which,
  concatenated in order, are the whole split.
  """
  import tensorflow_datasets as tfds  # no TensorFlow import on this path

  if shard is not None:
    split = tfds.even_splits(split, n=shard[1])[shard[0]]
  source = tfds.data_source(
    f'{name}:{version}', split=split, data_dir=str(data_dir), download=False
  )
  examples = source.__getitems__(range(len(source)))
  return {
    'image': np.stack([e['image'] for e in examples]).astype(np.uint8),
    'label': np.asarray([e['label'] for e in examples], np.int32),
  }


def read_split_cached(
  name: str, version: str, split: str, data_dir: pathlib.Path, cache_dir: pathlib.Path,
  shard: Shard | None = None,
) -> dict:  # fmt: skip
  """read_split, with the decoded arrays cached as .npz (decoding PNGs takes seconds)."""
  path = _cache_path(cache_dir, name, version, split, shard)
  source = str(data_dir.resolve())
  if path.is_file():
    try:
      with np.load(path) as cached:
        if str(cached['source']) == source:
          return {'image': cached['image'], 'label': cached['label']}
    except (OSError, ValueError, KeyError):
      pass  # unreadable cache: decode again and overwrite it
  arrays = read_split(name, version, split, data_dir, shard)
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f'.tmp{os.getpid()}.npz')
    np.savez(tmp, source=source, **arrays)
    os.replace(tmp, path)  # atomic: readers never see a half-written cache
  except OSError:
    pass  # a read-only cache dir only costs speed
  return arrays
