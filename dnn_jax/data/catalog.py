"""The datasets dnn_jax trains on, by tfds name."""

import dataclasses
import functools
import re

from dnn_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Dataset:
  """An image classification dataset (uint8 `image`, int `label`) that dnn_jax trains on.

  Written out, so that reading prepared data, the summary and the diagram need no
  tensorflow_datasets (e.g. on a GPU image); tests/test_data.py keeps every field equal to
  tfds's builder. Adding a dataset that tfds builds is one more record here.
  """

  name: str  # the tfds name
  version: str  # the tfds version dnn_jax prepares and reads
  image_shape: tuple[int, int, int]
  num_classes: int
  split_sizes: dict[str, int]  # also what synthetic data makes
  # tfds's label names, for what reads no prepared data (dnn_jax.predict); () = the indices
  class_names: tuple[str, ...] = ()

  def label_names(self) -> tuple[str, ...]:
    """class_names, or '0', '1', ... as tfds names classes that its builder leaves unnamed."""
    return self.class_names or tuple(str(i) for i in range(self.num_classes))


FASHION = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker',
           'Bag', 'Ankle boot')  # fmt: skip
CIFAR10 = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
           'truck')  # fmt: skip
DATASETS = {
  d.name: d
  for d in (
    Dataset('mnist', '3.0.1', (28, 28, 1), 10, {'train': 60_000, 'test': 10_000}),
    Dataset('fashion_mnist', '3.0.1', (28, 28, 1), 10, {'train': 60_000, 'test': 10_000}, FASHION),
    Dataset('cifar10', '3.0.2', (32, 32, 3), 10, {'train': 50_000, 'test': 10_000}, CIFAR10),
  )
}


def get(name: str) -> Dataset:
  """The dataset's record, or ConfigError listing the known ones."""
  if name not in DATASETS:
    raise ConfigError(f'unknown dataset {name!r}; choose one of {", ".join(DATASETS)}')
  return DATASETS[name]


# tfds's slice forms that split_size sizes: 'train', 'train[:1000]', 'test[10%:]'.
SLICE = re.compile(r'^(\w+)(?:\[(-?\d*)(%?):(-?\d*)(%?)\])?$')


def split_size(name: str, spec: str) -> int | None:
  """How many examples tfds's split spec selects (None for a form not sized here, e.g. a+b)."""
  match = SLICE.match(spec.replace(' ', ''))
  sizes = DATASETS[name].split_sizes
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
  return get(name).version


def original_files(name: str) -> list[tuple[str, int, str, str]]:
  """(filename, size, sha256, url) of each original file the builder downloads."""
  infos = builder_class(name).url_infos or {}
  return sorted((i.filename, i.size, i.checksum, url) for url, i in infos.items())


@functools.cache
def builder_shape_and_classes(name: str) -> tuple[tuple[int, ...], int]:
  """(image shape, class count) from tfds's builder info, to check the records against."""
  import tempfile

  import tensorflow_datasets as tfds

  with tempfile.TemporaryDirectory() as empty:  # keeps tfds from touching any real data dir
    features = tfds.builder(name, data_dir=empty).info.features
  return tuple(features['image'].shape), features['label'].num_classes
