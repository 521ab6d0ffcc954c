"""A full disk: one line and exit 2, the last complete checkpoint kept, no file left half-written.

Each test mounts a small tmpfs (CI runs as root) and lets real writes fail on it.
"""

import collections
import json
import os

import jax
import jax.numpy as jnp
import pytest
from conftest import fill_disk, resize_disk, run_python
from PIL import Image

from dnn_jax import checkpoint, files, steps, tensorboard
from dnn_jax.errors import DiskFullError

pytestmark = pytest.mark.e2e

# A 784-80-10 MLP: 63,610 params, ~0.75 MiB per checkpoint with Adam's two moments, so a
# 2 MiB disk holds two checkpoints and refuses the third; 47 steps per epoch.
SMALL_RUN = (
  '-m', 'dnn_jax.main', '--config', 'experiments/mnist_mlp.py', '--config.num_devices=1',
  '--config.num_epochs=4', '--config.data.train_split=train[:6000]',
  '--config.model.hidden_sizes=(80,)', '--config.checkpoint.max_to_keep=5',
  '--config.progress=lines', '--noreport',  # the report's full disk: its own test below
)  # fmt: skip


def test_a_full_disk_stops_the_run_in_one_line_and_it_resumes_once_freed(small_disk):
  disk = small_disk('2m')
  workdir = disk / 'run'
  full = run_python(*SMALL_RUN, '--workdir', str(workdir))
  assert full.returncode == 2, full.stderr
  assert 'Traceback' not in full.stderr
  checkpoints = workdir / 'checkpoints'
  assert full.stderr.splitlines() == [
    f'error: no space left on device while saving checkpoint 141 in {checkpoints} (it needs '
    f'about 1,001 KiB, {_free_kib(disk)} are free); free space or pass another --workdir; '
    f'the last complete checkpoint is {checkpoints / "94"}'
  ]
  assert sorted(p.name for p in checkpoints.iterdir()) == ['47', '94']  # nothing half-written
  metrics = json.loads((workdir / 'metrics.json').read_text())
  assert [h['epoch'] for h in metrics['history']] == [1, 2]  # as the checkpoints say

  resize_disk(disk, '16m')  # space freed: the same command resumes from the last checkpoint
  resumed = run_python(*SMALL_RUN, '--workdir', str(workdir))
  assert resumed.returncode == 0, resumed.stderr
  assert f'Resuming from {checkpoints / "94"} (epoch 3/4, step 0/47)' in resumed.stdout
  assert sorted(int(p.name) for p in checkpoints.iterdir()) == [47, 94, 141, 188]
  metrics = json.loads((workdir / 'metrics.json').read_text())
  assert [h['epoch'] for h in metrics['history']] == [1, 2, 3, 4] and 'test' in metrics


def _free_kib(disk) -> str:
  stat = os.statvfs(disk)
  return f'{stat.f_bavail * stat.f_frsize / 1024:,.0f} KiB'


def _state(megabytes: float):
  """A TrainState with about that many MB of random float32 params."""
  n = int(megabytes * 2**20 / 4)
  params = {'w': jax.random.normal(jax.random.key(0), (n,))}
  return steps.TrainState(step=jnp.int32(0), params=params, opt_state={}, model_state={})


def _meta(step):
  return {'step': step}


def test_a_save_that_fails_mid_write_is_one_error_and_no_checkpoint(small_disk, monkeypatch, capfd):
  """When space runs out after the free-space check (another writer), orbax's write fails."""
  disk = small_disk('3m')
  ckpts = checkpoint.Checkpoints(disk / 'checkpoints', max_to_keep=5)
  ckpts.save(_state(1), _meta(1))
  ckpts.wait()
  Usage = collections.namedtuple('Usage', 'total used free')
  monkeypatch.setattr(checkpoint.shutil, 'disk_usage', lambda _: Usage(2**40, 0, 2**40))
  with pytest.raises(DiskFullError, match=r'while saving checkpoint 2 in .*checkpoints; free'):
    ckpts.save(_state(2.5), _meta(2))
    ckpts.wait()
  ckpts.close(raise_errors=False)
  errors = capfd.readouterr().err
  assert 'Traceback' not in errors and 'Event loop is closed' not in errors, errors
  assert checkpoint.last_complete_step(disk / 'checkpoints') == 1
  assert [p.name for p in (disk / 'checkpoints').iterdir() if 'tmp' in p.name]  # half a save

  again = checkpoint.Checkpoints(disk / 'checkpoints', max_to_keep=5)  # the next start
  assert again.all_steps() == [1]  # the half save is not taken for a checkpoint
  restored = again.restore_latest(_state(1))
  assert restored is not None and restored[2] == 1
  again.save(_state(1), _meta(2))  # and step 2 saves normally where it had failed
  again.close()
  assert sorted(p.name for p in (disk / 'checkpoints').iterdir()) == ['1', '2']


def test_an_atomic_write_on_a_full_disk_keeps_the_old_file(small_disk):
  disk = small_disk('1m')
  path = disk / 'metrics.json'
  files.write_json(path, {'epoch': 1})
  fill_disk(disk)
  with pytest.raises(DiskFullError, match=f'while writing {path}; free space'):
    files.write_json(path, {'epoch': 2, 'padding': 'x' * 100_000})
  assert json.loads(path.read_text()) == {'epoch': 1}
  assert sorted(p.name for p in disk.iterdir()) == ['filler', 'metrics.json']  # no temporary


def test_a_failed_events_write_is_cut_off_the_file(small_disk):
  disk = small_disk('1m')
  events = tensorboard.EventFile(disk / 'tensorboard')
  from tensorboardX.summary import scalar

  events.add([scalar('loss/train', 0.5)], step=1)
  size = events.path.stat().st_size
  fill_disk(disk)
  big = [scalar(f'tag{i}', float(i)) for i in range(20_000)]  # ~0.5 MB of records
  with pytest.raises(DiskFullError, match='while writing TensorBoard events'):
    events.add(big, step=2)
  assert events.path.stat().st_size == size  # whole records only: the file reads to its end
  assert tensorboard.written(disk / 'tensorboard') == {('loss/train', 1)}


def test_a_report_on_a_full_disk_leaves_no_cut_off_picture(small_disk, tmp_path):
  """main.py's report fails in one line; each picture is whole or absent."""
  disk = small_disk('4m')
  workdir = disk / 'run'
  result = run_python(
    *SMALL_RUN[:-6], '--config.num_epochs=1', '--config.data.train_split=train[:1024]',
    '--config.model.hidden_sizes=(16,)', '--workdir', str(workdir), '--noreport',
  )  # fmt: skip
  assert result.returncode == 0, result.stderr
  fill_disk(disk, leave_bytes=120_000)  # room for some pictures, not all
  drawn = run_python('-m', 'dnn_jax.report', '--workdir', str(workdir))
  assert drawn.returncode == 2 and 'Traceback' not in drawn.stderr, drawn.stderr
  (line,) = drawn.stderr.splitlines()
  assert line.startswith('error: no space left on device while writing ') and '/report/' in line
  left = list((workdir / 'report').iterdir())
  assert not [p for p in left if '.tmp' in p.name]
  for png in (p for p in left if p.suffix == '.png'):
    with Image.open(png) as image:
      image.load()  # a cut-off PNG fails here
