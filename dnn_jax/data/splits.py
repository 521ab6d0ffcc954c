"""Locate (or prepare) a dataset and load its splits as uint8 arrays, or open them to stream."""

import dataclasses
import functools
import json
import pathlib

import jax
import numpy as np
from jax.experimental import multihost_utils

from dnn_jax.data import catalog, locate, prepare, read, synthetic
from dnn_jax.errors import DataError


@dataclasses.dataclass(frozen=True)
class Splits:
  """Train / validation / test arrays and what the model needs to know about them."""

  train: dict
  validation: dict
  test: dict
  num_classes: int
  class_names: tuple
  image_shape: tuple
  validation_is_test: bool  # the tutorial validates on the test set: evaluate it once

  def size(self, split: str) -> int:
    """The number of examples in 'train', 'validation' or 'test'."""
    return len(getattr(self, split)['label'])


@dataclasses.dataclass(frozen=True)
class Sources:
  """Train / validation / test as random-access sources, read as they are streamed."""

  train: object  # len() and __getitems__(indices) -> [{'image', 'label'}], as tfds.data_source
  validation: object
  test: object
  num_classes: int
  class_names: tuple
  image_shape: tuple
  validation_is_test: bool

  def size(self, split: str) -> int:
    """The number of examples in 'train', 'validation' or 'test'."""
    return len(getattr(self, split))


def ensure_prepared(data_config):
  """Returns (data_dir, version) holding the dataset, preparing it first if needed."""
  name = data_config.name
  version = catalog.get(name).version
  writable = locate.writable_data_dir(data_config.data_dir)
  found = locate.find_prepared(
    name, version, [writable, *locate.extra_data_dirs(data_config.data_dirs)]
  )
  if found is None:
    manual = locate.manual_dir(name, data_config.manual_dir)
    prepare.check_originals(name, manual)  # fail fast, with the file named, before spawning
    print(f'Preparing {name} {version} in {writable} from {manual} ...', flush=True)
    prepare.prepare_in_subprocess(name, writable, manual)
    found = writable
  return found, version


def load(data_config) -> Splits:
  """Loads the configured splits (decoded once, then from the array cache), or synthetic ones.

  In a multi-process run each process reads and decodes only its own contiguous shard of
  each split; the shards are then exchanged, so every process ends with the whole split in
  order (training shuffles over all examples, as a single process does).
  """
  name = data_config.name
  if data_config.synthetic:
    split = functools.partial(synthetic.split, name)
    num_classes = catalog.get(name).num_classes
    class_names = tuple(f'class {i}' for i in range(num_classes))
  else:
    data_dir, version = ensure_prepared(data_config)
    split = _reader(data_config, data_dir, version)
    label = read_label_feature(name, version, data_dir)
    num_classes, class_names = label.num_classes, tuple(label.names)
  train = split(data_config.train_split)
  test = split(data_config.test_split)
  same = data_config.validation_split == data_config.test_split
  validation = test if same else split(data_config.validation_split)
  return Splits(
    train=train,
    validation=validation,
    test=test,
    num_classes=num_classes,
    class_names=class_names,
    image_shape=tuple(int(d) for d in train['image'].shape[1:]),
    validation_is_test=same,
  )


def open_sources(data_config) -> Sources:
  """The configured splits as sources to stream from; nothing is read yet (synthetic: made)."""
  from dnn_jax.data import stream  # grain is imported by streaming runs only

  name = data_config.name
  dataset = catalog.get(name)
  if data_config.synthetic:
    make = lambda spec: stream.ArraySource(synthetic.split(name, spec))
    num_classes = dataset.num_classes
    class_names = tuple(f'class {i}' for i in range(num_classes))
  else:
    data_dir, version = ensure_prepared(data_config)

    def make(spec):
      try:
        return stream.open_source(name, version, spec, data_dir)
      except (ValueError, KeyError) as e:
        raise DataError(f'{name}: cannot open split {spec!r} in {data_dir}: {e}') from e

    label = read_label_feature(name, version, data_dir)
    num_classes, class_names = label.num_classes, tuple(label.names)
  same = data_config.validation_split == data_config.test_split
  test = make(data_config.test_split)
  return Sources(
    train=make(data_config.train_split),
    validation=test if same else make(data_config.validation_split),
    test=test,
    num_classes=num_classes,
    class_names=class_names,
    image_shape=dataset.image_shape,
    validation_is_test=same,
  )


def _reader(data_config, data_dir: pathlib.Path, version: str):
  """spec -> arrays of the prepared dataset: this process's shard, then the whole split."""
  cache_dir = locate.writable_data_dir(data_config.data_dir)
  name = data_config.name
  shard = (jax.process_index(), jax.process_count()) if jax.process_count() > 1 else None

  def split(spec: str) -> dict:
    try:
      arrays = read.read_split_cached(name, version, spec, data_dir, cache_dir, shard)
    except (ValueError, KeyError) as e:
      raise DataError(f'{name}: cannot read split {spec!r} from {data_dir}: {e}') from e
    if shard is None:
      return arrays
    whole = _gather_from_processes(arrays)
    print(
      f'Process {shard[0]} of {shard[1]} read {len(arrays["label"]):,} of the '
      f'{len(whole["label"]):,} examples of {spec}',
      flush=True,
    )
    return whole

  return split


def _gather_from_processes(local: dict) -> dict:
  """Each process's rows of every array, concatenated in process order, on every process."""
  sizes = multihost_utils.process_allgather(np.int32(len(next(iter(local.values())))))
  whole = {}
  for key, rows in local.items():
    padded = np.zeros((int(sizes.max()), *rows.shape[1:]), rows.dtype)  # equal shapes to gather
    padded[: len(rows)] = rows
    gathered = multihost_utils.process_allgather(padded)  # [processes, max rows, ...]
    whole[key] = np.concatenate([part[:size] for part, size in zip(gathered, sizes, strict=True)])
  return whole


@dataclasses.dataclass(frozen=True)
class LabelFeature:
  """What tfds's ClassLabel says of a prepared dataset: the class count and names."""

  num_classes: int
  names: tuple


def read_label_feature(name: str, version: str, data_dir) -> LabelFeature:
  """The label feature from the prepared dataset's features.json (and label.labels.txt).

  Read as plain JSON, so a dataset whose arrays are cached loads without tensorflow_datasets.
  """
  path = locate.prepared_dir(pathlib.Path(data_dir), name, version)
  features = json.loads((path / 'features.json').read_text())
  label = features['featuresDict']['features']['label']['classLabel']
  num_classes = int(label['numClasses'])
  names_file = path / 'label.labels.txt'
  if names_file.is_file():  # one name per line, as tfds reads it: 'Ankle boot' is one class
    names = tuple(line.strip() for line in names_file.read_text().split('\n') if line.strip())
  else:  # tfds names classes by their index when the builder gives no names
    names = tuple(str(i) for i in range(num_classes))
  if len(names) != num_classes:
    raise DataError(
      f'{names_file} names {len(names)} classes, {name} has {num_classes}; prepare {name} again'
    )
  return LabelFeature(num_classes, names)
