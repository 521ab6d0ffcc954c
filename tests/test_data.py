"""dnn_jax.data: real MNIST from the vendored originals, data dirs, errors, no TensorFlow."""

import shutil

import numpy as np
import pytest
from conftest import REPO, run_python

from dnn_jax.data import catalog, locate, prepare, read, splits, synthetic
from dnn_jax.errors import ConfigError, DataError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_mnist_shapes_dtypes_and_label_counts(mnist):
  assert mnist.train['image'].shape == (60000, 28, 28, 1)
  assert mnist.test['image'].shape == (10000, 28, 28, 1)
  assert mnist.train['image'].dtype == np.uint8
  assert mnist.train['label'].dtype == np.int32
  assert np.bincount(mnist.train['label'], minlength=10).tolist() == MNIST_TRAIN_COUNTS
  assert mnist.num_classes == 10
  assert mnist.image_shape == (28, 28, 1)
  assert mnist.validation_is_test
  assert 0 < mnist.train['image'].mean() < 255  # real pixels, not a blank array


def test_reading_imports_no_tensorflow():
  code = (
    'import sys\n'
    'from dnn_jax.data import splits\n'
    'from experiments import mnist_mlp\n'
    'loaded = splits.load(mnist_mlp.get_config().data)\n'
    'assert len(loaded.train["label"]) == 60000\n'
    'print(sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow"))\n'
  )
  result = run_python('-c', code)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip().splitlines()[-1] == '[]'


def test_vendored_originals_match_tfds_checksums():
  prepare.check_originals('mnist', locate.manual_dir('mnist'))  # raises if not


def test_missing_original_names_file_checksum_size_and_place(tmp_path):
  manual = tmp_path / 'originals'
  shutil.copytree(REPO / 'data' / 'mnist', manual)
  (manual / 'train-labels-idx1-ubyte.gz').unlink()
  with pytest.raises(DataError) as e:
    prepare.check_originals('mnist', manual)
  message = str(e.value)
  assert 'train-labels-idx1-ubyte.gz is missing' in message
  assert '3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c' in message
  assert '28,881 bytes' in message
  assert str(manual) in message
  assert '\n' not in message


def test_corrupt_original_is_reported(tmp_path):
  manual = tmp_path / 'originals'
  shutil.copytree(REPO / 'data' / 'mnist', manual)
  path = manual / 't10k-labels-idx1-ubyte.gz'
  content = bytearray(path.read_bytes())
  content[100] ^= 0xFF  # same size, one byte flipped
  path.write_bytes(bytes(content))
  with pytest.raises(DataError, match='t10k-labels-idx1-ubyte.gz is corrupt'):
    prepare.check_originals('mnist', manual)


@pytest.mark.slow
def test_failed_preparation_leaves_nothing_behind(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds

  class FailingBuilder:
    def __init__(self, data_dir):
      self.data_dir = data_dir

    def download_and_prepare(self, download_config):
      partial = tmp_path.joinpath(self.data_dir, 'mnist', '3.0.1')
      partial.mkdir(parents=True)
      (partial / 'mnist-train.array_record-00000-of-00001').write_bytes(b'half')
      raise RuntimeError('killed halfway')

  monkeypatch.setattr(tfds, 'builder', lambda name, data_dir, file_format: FailingBuilder(data_dir))
  data_dir = tmp_path / 'tfds'
  with pytest.raises(RuntimeError, match='killed halfway'):
    prepare.prepare('mnist', data_dir, locate.manual_dir('mnist'))
  assert list(data_dir.iterdir()) == []  # neither the dataset nor the scratch dir


def test_preparation_failure_in_subprocess_is_one_line(tmp_path):
  manual = tmp_path / 'empty'
  manual.mkdir()
  with pytest.raises(DataError, match='original file .* is missing'):
    prepare.prepare_in_subprocess('mnist', tmp_path / 'tfds', manual)
  assert not (tmp_path / 'tfds' / 'mnist').exists()


def test_extra_read_only_dirs_are_searched(tmp_path, monkeypatch, base_config):
  config = base_config().data
  config.data_dir = str(tmp_path / 'writable')  # empty: the dataset must come from data_dirs
  config.manual_dir = str(tmp_path / 'no-originals')  # preparing would fail
  config.data_dirs = f'{tmp_path / "nothing-here"}:{locate.writable_data_dir()}'
  data_dir, version = splits.ensure_prepared(config)
  assert data_dir == locate.writable_data_dir()
  monkeypatch.setenv(locate.EXTRA_DATA_DIRS_ENV, str(locate.writable_data_dir()))
  config.data_dirs = ''
  assert splits.ensure_prepared(config) == (locate.writable_data_dir(), version)


def test_cached_arrays_equal_a_fresh_read(tmp_path):
  version = catalog.version('mnist')
  data_dir = locate.writable_data_dir()
  fresh = read.read_split('mnist', version, 'test[:300]', data_dir)
  cached = read.read_split_cached('mnist', version, 'test[:300]', data_dir, tmp_path)
  again = read.read_split_cached('mnist', version, 'test[:300]', data_dir, tmp_path)
  assert list(tmp_path.rglob('*.npz'))
  for arrays in (cached, again):
    np.testing.assert_array_equal(arrays['image'], fresh['image'])
    np.testing.assert_array_equal(arrays['label'], fresh['label'])


def test_splits_whose_names_differ_only_in_punctuation_are_cached_apart(tmp_path):
  # Both once read test_300_.npz, so the second split was the first one's images.
  version = catalog.version('mnist')
  data_dir = locate.writable_data_dir()
  for spec in ('test[:300]', 'test[300:]', 'test[:300]'):
    cached = read.read_split_cached('mnist', version, spec, data_dir, tmp_path)
    fresh = read.read_split('mnist', version, spec, data_dir)
    for key in ('image', 'label'):
      np.testing.assert_array_equal(cached[key], fresh[key])
  assert len(list(tmp_path.rglob('*.npz'))) == 2


def _truncate(path):
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path):
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0xFF  # inside the image array: only its CRC-32 can tell
  path.write_bytes(bytes(data))


def _other_split(path):
  other = read.read_split(
    'mnist', catalog.version('mnist'), 'test[:299]', locate.writable_data_dir()
  )
  np.savez(path, source=str(locate.writable_data_dir().resolve()), **other)


def _same_size_other_split(path):
  spec = 'test[300:600]'
  other = read.read_split('mnist', catalog.version('mnist'), spec, locate.writable_data_dir())
  np.savez(path, source=str(locate.writable_data_dir().resolve()), split=spec, **other)


def _wrong_shape(path):
  with np.load(path) as cached:
    arrays = dict(cached)
  np.savez(path, **{**arrays, 'image': arrays['image'].reshape(-1, 28 * 28, 1, 1)})


@pytest.mark.parametrize(
  'damage, reason',
  [
    (_truncate, 'BadZipFile: File is not a zip file'),
    (_flip_a_byte, "BadZipFile: Bad CRC-32 for file 'image.npy'"),
    (_other_split, 'ValueError: 299 examples where test[:300] has 300'),
    (_same_size_other_split, 'ValueError: it holds split test[300:600], not test[:300]'),
    (_wrong_shape, 'ValueError: images are uint8 (784, 1, 1), not uint8 (28, 28, 1)'),
  ],
)
def test_a_damaged_array_cache_is_reported_and_rebuilt(tmp_path, capsys, damage, reason):
  version = catalog.version('mnist')
  data_dir = locate.writable_data_dir()
  fresh = read.read_split_cached('mnist', version, 'test[:300]', data_dir, tmp_path)
  (path,) = tmp_path.rglob('*.npz')
  damage(path)
  capsys.readouterr()
  rebuilt = read.read_split_cached('mnist', version, 'test[:300]', data_dir, tmp_path)
  assert capsys.readouterr().err.splitlines() == [
    f'warning: the decoded-array cache {path} is damaged ({reason}); rebuilding it from {data_dir}'
  ]
  again = read.read_split_cached('mnist', version, 'test[:300]', data_dir, tmp_path)
  assert not capsys.readouterr().err  # the rebuilt cache is whole
  for arrays in (rebuilt, again):
    for key in ('image', 'label'):
      np.testing.assert_array_equal(arrays[key], fresh[key])
  assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


def test_process_shards_concatenate_to_the_whole_split(tmp_path):
  # What each process of a multi-process run reads: 301 examples do not split evenly in 3.
  version = catalog.version('mnist')
  data_dir = locate.writable_data_dir()
  whole = read.read_split('mnist', version, 'test[:301]', data_dir)
  parts = [
    read.read_split_cached('mnist', version, 'test[:301]', data_dir, tmp_path, shard=(i, 3))
    for i in range(3)
  ]
  assert sorted(len(p['label']) for p in parts) == [100, 100, 101]
  for key in ('image', 'label'):
    np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])
  assert len(list(tmp_path.rglob('*.shard*of3.npz'))) == 3


def test_split_slices_select_subsets(base_config):
  config = base_config().data
  config.train_split = 'train[:1000]'
  config.validation_split = 'test[5000:]'
  config.test_split = 'test[:5000]'
  loaded = splits.load(config)
  assert len(loaded.train['label']) == 1000
  assert len(loaded.validation['label']) == len(loaded.test['label']) == 5000
  assert not loaded.validation_is_test


def test_unknown_dataset_lists_the_choices(base_config):
  config = base_config().data
  config.name = 'imagenet'
  with pytest.raises(ConfigError, match='unknown dataset .*mnist, fashion_mnist, cifar10'):
    splits.ensure_prepared(config)


def test_cifar10_goes_through_the_same_code(base_config):
  found = locate.find_prepared('cifar10', catalog.version('cifar10'), locate.extra_data_dirs())
  if found is None:
    pytest.skip('no prepared cifar10 in $DNN_JAX_DATA_DIRS (CI points it at ../shared/data/tfds)')
  config = base_config().data
  config.name = 'cifar10'
  config.train_split = 'train[:500]'
  config.validation_split = config.test_split = 'test[:200]'
  loaded = splits.load(config)
  assert loaded.train['image'].shape == (500, 32, 32, 3)
  assert loaded.train['image'].dtype == np.uint8
  assert loaded.class_names[:3] == ('airplane', 'automobile', 'bird')


@pytest.mark.parametrize('name', catalog.DATASETS)
def test_label_feature_from_json_equals_tfds_class_label(name, tmp_path):
  """Class names as tfds writes and reads them, spaces included ('Ankle boot' is one class)."""
  import tensorflow_datasets as tfds

  version = catalog.version(name)
  # A prepared copy's feature files, written by tfds from the builder's own info.
  prepared = locate.prepared_dir(tmp_path, name, version)
  prepared.mkdir(parents=True)
  features = tfds.builder(name, data_dir=str(tmp_path / 'empty')).info.features
  features.save_config(str(prepared))
  features.save_metadata(str(prepared))
  theirs = tfds.features.FeatureConnector.from_config(str(prepared))
  theirs.load_metadata(str(prepared))
  ours = splits.read_label_feature(name, version, tmp_path)
  assert ours.num_classes == theirs['label'].num_classes == features['label'].num_classes
  assert ours.names == tuple(theirs['label'].names) == tuple(features['label'].names)


def test_label_names_that_disagree_with_the_class_count_are_refused(tmp_path):
  version = catalog.version('mnist')
  prepared = locate.prepared_dir(locate.writable_data_dir(), 'mnist', version)
  copy = locate.prepared_dir(tmp_path, 'mnist', version)
  copy.mkdir(parents=True)
  (copy / 'features.json').write_text((prepared / 'features.json').read_text())
  (copy / 'label.labels.txt').write_text('zero\none\n')
  with pytest.raises(DataError, match='label.labels.txt names 2 classes, mnist has 10'):
    splits.read_label_feature('mnist', version, tmp_path)


def test_pinned_versions_are_the_tfds_builders():
  for name, dataset in catalog.DATASETS.items():
    assert str(catalog.builder_class(name).VERSION) == dataset.version


@pytest.mark.parametrize('name', catalog.DATASETS)
def test_pinned_shapes_and_split_sizes_are_the_tfds_builders(name):
  dataset = catalog.DATASETS[name]
  image_shape, num_classes = catalog.builder_shape_and_classes(name)
  assert dataset.image_shape == image_shape and dataset.num_classes == num_classes
  search = [locate.writable_data_dir(), *locate.extra_data_dirs()]
  found = locate.find_prepared(name, catalog.version(name), search)
  if found is None:
    pytest.skip(f'{name} is not prepared here: its split sizes are in its dataset_info.json')
  info = catalog.builder_class(name)(data_dir=str(found)).info
  assert dataset.split_sizes == {k: v.num_examples for k, v in info.splits.items()}


@pytest.mark.parametrize(
  'spec', ['test', 'test[:1000]', 'test[10%:]', 'test[-300:]', 'test[5%:7%]', 'test[9999:]']
)
def test_synthetic_splits_are_sized_as_tfds_slices_them(spec):
  import tensorflow_datasets as tfds

  version = catalog.version('mnist')
  data_dir = locate.writable_data_dir()
  real = tfds.data_source(f'mnist:{version}', split=spec, data_dir=str(data_dir), download=False)
  arrays = synthetic.split('mnist', spec)
  assert len(arrays['label']) == len(real)
  assert arrays['image'].shape[1:] == (28, 28, 1) and arrays['image'].dtype == np.uint8


def test_synthetic_data_loads_without_reading_and_refuses_unsizable_splits(base_config):
  config = base_config().data
  config.name, config.synthetic = 'cifar10', True
  config.data_dir = '/nonexistent'  # nothing is read or prepared
  config.train_split, config.validation_split = 'train[:512]', 'train[-100:]'
  loaded = splits.load(config)
  assert loaded.train['image'].shape == (512, 32, 32, 3)
  assert len(loaded.validation['label']) == 100 and len(loaded.test['label']) == 10_000
  assert loaded.num_classes == 10 and not loaded.validation_is_test
  config.train_split = 'train+test'
  with pytest.raises(ConfigError, match="synthetic data: cannot size split 'train\\+test'"):
    splits.load(config)


def test_decoded_whole_splits_beside_the_metadata_count_as_prepared(tmp_path):
  info = locate.prepared_dir(tmp_path, 'cifar10', '3.0.2')
  info.mkdir(parents=True)
  (info / 'dataset_info.json').write_text('{}')
  assert not locate.is_prepared(tmp_path, 'cifar10', '3.0.2')  # metadata alone: not yet
  decoded = tmp_path / 'dnn_jax_arrays' / 'cifar10' / '3.0.2'
  decoded.mkdir(parents=True)
  (decoded / 'train.npz').write_bytes(b'')
  assert not locate.is_prepared(tmp_path, 'cifar10', '3.0.2')  # the test split is missing
  (decoded / 'test.npz').write_bytes(b'')
  assert locate.is_prepared(tmp_path, 'cifar10', '3.0.2')  # what gpu.sh carries
