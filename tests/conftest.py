"""Test setup: 4 fake CPU devices (set before JAX starts), real MNIST, tiny configs."""

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

# Every test process sees 4 CPU devices; single-device runs ask for num_devices=1.
os.environ.setdefault('JAX_NUM_CPU_DEVICES', '4')
# Keras (for parity tests) on its JAX backend: no TensorFlow in the test process.
os.environ.setdefault('KERAS_BACKEND', 'jax')
# One XLA compilation cache for the session, its workers and every subprocess they start: the
# many runs of the same tiny configs compile each program once. A size limit turns on JAX's
# file lock around each read and write, which processes sharing the cache need. (dnn_jax's own
# cache, config.compilation_cache_dir, is tested in test_main.py with a directory of its own.)
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  SESSION_CACHE = tempfile.mkdtemp(prefix='dnn_jax_tests_xla_cache_')
  os.environ['JAX_COMPILATION_CACHE_DIR'] = SESSION_CACHE
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_COMPILATION_CACHE_MAX_SIZE'] = str(8 << 30)
else:
  SESSION_CACHE = None  # made by the process that started this one, which removes it

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


# `make test-fast` leaves these out: the edit-test loop in a few minutes; `make test` runs all.
MARKERS = {
  'e2e': 'runs a command or a training run in a subprocess',
  'multiprocess': 'runs several processes at once, or signals one',
  'slow': 'in-process, among the slowest: trains a model or compiles many programs',
}


def pytest_configure(config):
  for name, meaning in MARKERS.items():
    config.addinivalue_line('markers', f'{name}: {meaning}')


# The modules holding CI's longest tests (make test prints the slowest 25), started first.
LONGEST_FIRST = (
  'test_gpu_script.py', 'test_throughput.py', 'test_new_model.py', 'test_multihost.py',
  'test_experiments.py', 'test_resume.py',
)  # fmt: skip


def pytest_collection_modifyitems(config, items):
  """The modules of LONGEST_FIRST first, then the rest in their usual order.

  pytest-xdist hands tests out in this order: with the long ones first, the short ones at the
  end fill both workers evenly, and no long test starts late and holds the run up alone.
  Each module's tests stay together, so its module-scoped fixtures are built once per worker.
  """
  del config
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept


def pytest_unconfigure(config):
  del config
  if SESSION_CACHE:
    shutil.rmtree(SESSION_CACHE, ignore_errors=True)


@pytest.fixture(scope='session')
def base_config():
  """A factory for the default experiment's config."""
  from experiments import mnist_mlp

  return mnist_mlp.get_config


@pytest.fixture(scope='session')
def mnist(base_config):
  """The real MNIST splits, read from the vendored originals (prepared once)."""
  from dnn_jax.data import splits

  return splits.load(base_config().data)


def run_python(*args, env=None, timeout=600):
  """Runs `python *args` from the repo root; returns the CompletedProcess (text)."""
  full_env = {**os.environ, **(env or {})}
  return subprocess.run(
    [sys.executable, *args],
    cwd=REPO,
    env=full_env,
    capture_output=True,
    text=True,
    timeout=timeout,
    check=False,
  )


def natural_image(shape, seed=0):
  """A natural-looking uint8 image: smooth shading, a gradient, a dark patch and noise."""
  rng = np.random.default_rng(seed)
  height, width = shape[:2]
  y, x = np.mgrid[0:height, 0:width]
  base = 128 + 90 * np.sin(x / 7.0) * np.cos(y / 11.0) + 0.8 * (x - y)
  channels = shape[2] if len(shape) == 3 else 1
  image = base[..., None] + rng.normal(0, 12, (height, width, channels))
  image[height // 3 : height // 2, width // 4 : width // 2] -= 60
  image = np.clip(np.round(image), 0, 255)
  image[0, 0], image[-1, -1] = 0, 255  # the full range, so skimage does not stretch the input
  return image.astype(np.uint8).reshape(shape)


@pytest.fixture
def small_disk(tmp_path):
  """mount(size) -> a fresh directory on a tmpfs of that size ('2m'), unmounted afterwards.

  Real full-disk errors need a real small filesystem; CI runs as root, so these tests run there.
  """
  mounts = []

  def mount(size: str) -> pathlib.Path:
    if os.geteuid() != 0:
      pytest.skip('mounting a tmpfs needs root (CI runs as root)')
    point = tmp_path / f'disk{len(mounts)}'
    point.mkdir()
    subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(point)], check=True)
    mounts.append(point)
    return point

  yield mount
  for point in mounts:
    subprocess.run(['umount', '-l', str(point)], check=False)


def resize_disk(point: pathlib.Path, size: str) -> None:
  """Gives a small_disk tmpfs a new size (space freed, as a user would)."""
  subprocess.run(['mount', '-o', f'remount,size={size}', str(point)], check=True)


def fill_disk(point: pathlib.Path, leave_bytes: int = 0) -> None:
  """Fills the filesystem at point, leaving about leave_bytes free, with one filler file."""
  stat = os.statvfs(point)
  size = stat.f_bavail * stat.f_frsize - leave_bytes
  try:
    with open(point / 'filler', 'wb') as f:
      for _ in range(max(0, size) // 4096):
        f.write(b'\0' * 4096)
  except OSError:  # full already: that is what was asked
    pass
