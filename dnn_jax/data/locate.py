"""Where datasets live: the writable data dir, read-only extra dirs, and manual (originals) dirs."""

import os
import pathlib

# A fresh clone keeps everything inside the repository: originals in data/<name>/,
# prepared datasets in data/tfds/ (ignored by git).
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA_DIR_ENV = 'DNN_JAX_DATA_DIR'
EXTRA_DATA_DIRS_ENV = 'DNN_JAX_DATA_DIRS'


def writable_data_dir(configured: str = '') -> pathlib.Path:
  """The dir where datasets are prepared and decoded arrays cached."""
  path = configured or os.environ.get(DATA_DIR_ENV) or REPO_ROOT / 'data' / 'tfds'
  return pathlib.Path(path).expanduser()


def extra_data_dirs(configured: str = '') -> list[pathlib.Path]:
  """Read-only dirs searched for prepared datasets: config first, then the env var."""
  joined = f'{configured}{os.pathsep}{os.environ.get(EXTRA_DATA_DIRS_ENV, "")}'
  dirs = [d for d in joined.split(os.pathsep) if d]
  return [pathlib.Path(d).expanduser() for d in dirs]


def manual_dir(name: str, configured: str = '') -> pathlib.Path:
  """The dir that holds the dataset's original files (tfds's manual_dir)."""
  return pathlib.Path(configured).expanduser() if configured else REPO_ROOT / 'data' / name


def prepared_dir(data_dir: pathlib.Path, name: str, version: str) -> pathlib.Path:
  """The dir tfds writes `name:version` to inside data_dir."""
  return data_dir / name / version


def is_prepared(data_dir: pathlib.Path, name: str, version: str) -> bool:
  """Whether data_dir holds the dataset: its array_record preparation, or the decoded arrays of
  its whole train and test splits beside its metadata (what benchmarks/gpu.sh carries to a
  machine without tensorflow-datasets; only those two splits can be read there).
  """
  path = prepared_dir(data_dir, name, version)
  if not (path / 'dataset_info.json').is_file():
    return False
  decoded = data_dir / 'dnn_jax_arrays' / name / version
  whole = all((decoded / f'{split}.npz').is_file() for split in ('train', 'test'))
  return any(path.glob(f'{name}-*.array_record-*')) or whole


def find_prepared(name: str, version: str, search_dirs) -> pathlib.Path | None:
  """The first dir of search_dirs that holds the prepared dataset, or None."""
  for data_dir in search_dirs:
    if is_prepared(data_dir, name, version):
      return data_dir
  return None
