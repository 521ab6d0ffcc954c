"""Read a prepared tfds split into uint8 numpy arrays, without TensorFlow."""

import hashlib
import logging
import pathlib
import re
import sys

import numpy as np

from dnn_jax import files
from dnn_jax.data import catalog


class _QuietOpenCvHint(logging.Filter):
  """tfds suggests OpenCV for faster decoding; dnn_jax decodes a split once, then caches it."""

  def filter(self, record: logging.LogRecord) -> bool:
    return 'OpenCV is not installed' not in record.getMessage()


logging.getLogger('absl').addFilter(_QuietOpenCvHint())

Shard = tuple[int, int]  # (index, count): the index-th of count even, contiguous parts


def _cache_path(
  cache_dir: pathlib.Path, name: str, version: str, split: str, shard: Shard | None
) -> pathlib.Path:
  safe_split = re.sub(r'[^A-Za-z0-9_.-]+', '_', split)
  if safe_split != split:  # test[:5000] and test[5000:] would share test_5000_: the hash parts them
    safe_split += '-' + hashlib.sha256(split.encode()).hexdigest()[:12]
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
  """read_split, with the decoded arrays cached as .npz (decoding PNGs takes seconds).

  A damaged cache (cut short, a flipped byte: the zip's CRC-32s catch it, or arrays that
  are not the split it names) is reported in one line and rebuilt.
  """
  path = _cache_path(cache_dir, name, version, split, shard)
  source = str(data_dir.resolve())
  if path.is_file():
    try:
      cached = _load_cache(path, name, split, count=shard is None)
    except Exception as e:
      reason = f'{type(e).__name__}: {(str(e).splitlines() or [""])[0]}'
      print(
        f'warning: the decoded-array cache {path} is damaged ({reason}); rebuilding it from '
        f'{data_dir}',
        file=sys.stderr,
        flush=True,
      )
    else:
      if cached['source'] == source:  # else the same split prepared elsewhere: decode that
        return {'image': cached['image'], 'label': cached['label']}
  arrays = read_split(name, version, split, data_dir, shard)
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    with files.atomic_path(path) as tmp:  # readers never see a half-written cache
      np.savez(tmp, source=source, split=split, **arrays)
  except OSError as e:  # DiskFullError is one too: the cache only saves time
    print(f'warning: cannot cache the decoded arrays in {path} ({e}); the next run decodes again')
  return arrays


def _load_cache(path: pathlib.Path, name: str, split: str, count: bool) -> dict:
  """The cached arrays and their source dir; raises ValueError where they are not the split.

  count: check the example count against the split's (not for a process's shard).
  """
  with np.load(path) as cached:  # reads every array whole: the zip checks each one's CRC-32
    arrays = {key: cached[key] for key in ('source', 'image', 'label')}
    stored = str(cached['split']) if 'split' in cached.files else split  # older caches: none
  if stored != split:
    raise ValueError(f'it holds split {stored}, not {split}')
  images, labels = arrays['image'], arrays['label']
  shape = catalog.DATASETS[name].image_shape
  if images.dtype != np.uint8 or images.shape[1:] != shape:
    raise ValueError(f'images are {images.dtype} {images.shape[1:]}, not uint8 {shape}')
  if labels.dtype != np.int32 or labels.shape != images.shape[:1]:
    raise ValueError(f'{len(labels)} int32 labels expected, found {labels.dtype} {labels.shape}')
  expected = catalog.split_size(name, split) if count else None
  if expected is not None and len(labels) != expected:
    raise ValueError(f'{len(labels):,} examples where {split} has {expected:,}')
  return {**arrays, 'source': str(arrays['source'])}
