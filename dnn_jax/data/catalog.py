"""The datasets dnn_jax trains on, by tfds name."""

import functools
import re

# Image classification datasets with uint8 `image` and int `label` features.
DATASETS = ('mnist', 'fashion_mnist', 'cifar10')
# The tfds versions dnn_jax prepares and reads; a test keeps them equal to tfds's builders.
# Written out so that reading prepared data needs no tensorflow_datasets (e.g. on a GPU image).
VERSIONS = {'mnist': '3.0.1', 'fashion_mnist': '3.0.1', 'cifar10': '3.0.2'}
# Image shape, class count and split sizes, for synthetic data (a test checks them likewise).
SHAPES = {'mnist': (28, 28, 1), 'fashion_mnist': (28, 28, 1), 'cifar10': (32, 32, 3)}
NUM_CLASSES = {'mnist': 10, 'fashion_mnist': 10, 'cifar10': 10}
SPLIT_SIZES = {
  'mnist': {'train': 60_000, 'test': 10_000},
  'fashion_mnist': {'train': 60_000, 'test': 10_000},
  'cifar10': {'train': 50_000, 'test': 10_000},
}

# tfds's slice forms that split_size sizes: 'train', 'train[:1000]', 'test[10%:]'.
SLICE = re.compile(r'^(\w+)(?:\[(-?\d*)(%?):(-?\d*)(%?)\])?$')


def split_size(name: str, spec: str) -> int | None:
  """How many examples tfds's split spec selects (None for a form not sized here, e.g. a+b)."""
  match = SLICE.match(spec.replace(' ', ''))
  sizes = SPLIT_SIZES[name]
  if not match or match.group(1) not in sizes:
    return None
  total = sizes[match.group(1)]

  def bound(text: str, percent: str, default: int) -> int:
    if not text:
      return default
    value = int(text) * total / 100 if percent else int(text)
    value = round(value) if percent else value
    return max(0, min(total, value + total if value < 0 else value))

  start = bound(match.group(2), match.group(3), 0)
  return max(0, bound(match.group(4), match.group(5), total) - start)


@functools.cache
def builder_class(name: str):
  """The stock tfds builder class (importing it does not import TensorFlow)."""
  import tensorflow_datasets as tfds  # slow import, only when data is needed

  return tfds.builder_cls(name)


def version(name: str) -> str:
  """The tfds version dnn_jax reads and prepares, e.g. '3.0.1' for mnist."""
  return VERSIONS[name]


def original_files(name: str) -> list[tuple[str, int, str, str]]:
  """(filename, size, sha256, url) of each original file the builder downloads."""
  infos = builder_class(name).url_infos or {}
  return sorted((i.filename, i.size, i.checksum, url) for url, i in infos.items())


@functools.cache
def image_shape_and_classes(name: str) -> tuple[tuple[int, ...], int]:
  """(image shape, class count) from the builder's own info; needs no prepared data."""
  import tempfile

  import tensorflow_datasets as tfds

  with tempfile.TemporaryDirectory() as empty:  # keeps tfds from touching any real data dir
    features = tfds.builder(name, data_dir=empty).info.features
  return tuple(features['image'].shape), features['label'].num_classes
