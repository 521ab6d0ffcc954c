"""Read a prepared tfds split into uint8 numpy arrays, without TensorFlow."""

import os
import pathlib
import re

import numpy as np


def _cache_path(cache_dir: pathlib.Path, name: str, version: str, split: str) -> pathlib.Path:
  safe_split = re.sub(r'[^A-Za-z0-9_.-]+', '_', split)
  return cache_dir / 'dnn_jax_arrays' / name / version / f'{safe_split}.npz'


def read_split(name: str, version: str, split: str, data_dir: pathlib.Path) -> dict:
  """{'image': uint8 [N, H, W, C], 'label': int32 [N]} read with tfds.data_source."""
  import tensorflow_datasets as tfds  # no TensorFlow import on this path

  source = tfds.data_source(
    f'{name}:{version}', split=split, data_dir=str(data_dir), download=False
  )
  examples = source.__getitems__(range(len(source)))
  return {
    'image': np.stack([e['image'] for e in examples]).astype(np.uint8),
    'label': np.asarray([e['label'] for e in examples], np.int32),
  }


def read_split_cached(
  name: str, version: str, split: str, data_dir: pathlib.Path, cache_dir: pathlib.Path
) -> dict:
  """read_split, with the decoded arrays cached as .npz (decoding PNGs takes seconds)."""
  path = _cache_path(cache_dir, name, version, split)
  source = str(data_dir.resolve())
  if path.is_file():
    try:
      with np.load(path) as cached:
        if str(cached['source']) == source:
          return {'image': cached['image'], 'label': cached['label']}
    except (OSError, ValueError, KeyError):
      pass  # unreadable cache: decode again and overwrite it
  arrays = read_split(name, version, split, data_dir)
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f'.tmp{os.getpid()}.npz')
    np.savez(tmp, source=source, **arrays)
    os.replace(tmp, path)  # atomic: readers never see a half-written cache
  except OSError:
    pass  # a read-only cache dir only costs speed
  return arrays
