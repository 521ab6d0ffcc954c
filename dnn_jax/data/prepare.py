"""Prepare a tfds dataset (array_record) from its original files; needs TensorFlow.

Usage: python -m dnn_jax.data.prepare mnist [--data_dir D] [--manual_dir M]
"""

import hashlib
import pathlib
import shutil
import subprocess
import sys
import tempfile

from dnn_jax.data import catalog, locate
from dnn_jax.errors import DataError


def sha256(path: pathlib.Path) -> str:
  """Hex sha256 of a file."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def check_originals(name: str, manual_dir: pathlib.Path) -> None:
  """Raises DataError naming the first original file that is missing or corrupt."""
  for filename, size, checksum, url in catalog.original_files(name):
    path = manual_dir / filename
    expected = f'sha256 {checksum}, {int(size):,} bytes'
    if not path.is_file():
      raise DataError(
        f'{name}: original file {path} is missing; expected {expected}. '
        f'Download it from {url} and put it in {manual_dir}/ '
        f'(or point --config.data.data_dirs at a prepared copy).'
      )
    actual_size = path.stat().st_size
    if actual_size != size or sha256(path) != checksum:
      raise DataError(
        f'{name}: original file {path} is corrupt ({actual_size:,} bytes); expected {expected}. '
        f'Replace it with a fresh download from {url}.'
      )


def prepare(name: str, data_dir: pathlib.Path, manual_dir: pathlib.Path) -> pathlib.Path:
  """Prepares `name` into data_dir, all or nothing; returns the prepared version dir."""
  version = catalog.version(name)
  target = locate.prepared_dir(data_dir, name, version)
  if locate.is_prepared(data_dir, name, version):
    return target
  check_originals(name, manual_dir)
  try:
    import tensorflow  # noqa: F401 -- tfds needs it to decode and encode while preparing
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise DataError(
      f'{name}: preparing needs TensorFlow ({e}); run `pip install -e ".[prepare]"` '
      'or point --config.data.data_dirs at a prepared copy.'
    ) from e
  data_dir.mkdir(parents=True, exist_ok=True)
  # tfds writes into a scratch dir on the same filesystem; only a finished dataset is moved
  # into place, so an interrupted or failed run leaves nothing half-written behind.
  scratch = pathlib.Path(tempfile.mkdtemp(prefix=f'.incomplete-{name}-', dir=data_dir))
  try:
    builder = tfds.builder(name, data_dir=str(scratch), file_format='array_record')
    builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
      (scratch / name / version).rename(target)
    except OSError:
      if not locate.is_prepared(data_dir, name, version):  # else a concurrent run won the race
        raise
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  return target


def prepare_in_subprocess(name: str, data_dir: pathlib.Path, manual_dir: pathlib.Path) -> None:
  """Prepares in a child process so that TensorFlow never enters the training process."""
  cmd = [sys.executable, '-m', 'dnn_jax.data.prepare', name]
  cmd += ['--data_dir', str(data_dir), '--manual_dir', str(manual_dir)]
  result = subprocess.run(cmd, stdout=sys.stdout, stderr=subprocess.PIPE, text=True, check=False)
  if result.returncode != 0:
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    raise DataError(lines[-1].removeprefix('error: ') if lines else f'preparing {name} failed')


def main(argv=None) -> int:
  import argparse

  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('name', choices=catalog.DATASETS)
  parser.add_argument('--data_dir', default='', help='writable tfds data dir')
  parser.add_argument('--manual_dir', default='', help='dir with the original files')
  args = parser.parse_args(argv)
  data_dir = locate.writable_data_dir(args.data_dir)
  try:
    path = prepare(args.name, data_dir, locate.manual_dir(args.name, args.manual_dir))
  except DataError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'{args.name} is prepared in {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
