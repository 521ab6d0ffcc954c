"""dnn_jax.tensorboard: event files as `tensorboard --logdir` reads them; resumes; images; no TF."""

import io
import json
import shutil
import sys
import types

import numpy as np
import pytest
from conftest import run_python
from PIL import Image

from dnn_jax import tensorboard
from experiments import mnist_mlp

# TensorBoard's own switch to its TensorFlow stub (//tensorboard/compat:no_tensorflow): reading
# event files here must not import TensorFlow into the test process.
sys.modules.setdefault('tensorboard.compat.notf', types.ModuleType('tensorboard.compat.notf'))
from tensorboard.backend.event_processing import event_accumulator  # noqa: E402
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader  # noqa: E402
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2  # noqa: E402

NUM_TRAIN, BATCH = 2048, 128
STEPS_PER_EPOCH = NUM_TRAIN // BATCH
EPOCH_TAGS = {
  'loss/train': 'loss',
  'accuracy/train': 'accuracy',
  'loss/val': 'val_loss',
  'accuracy/val': 'val_accuracy',
  'learning_rate': 'learning_rate',
}

# Trains a tiny MLP in a process where importing tensorflow fails (writing events needs none).
TRAIN_WITHOUT_TF = (
  'import sys\n'
  "sys.modules['tensorflow'] = None\n"
  'from dnn_jax import tensorboard, train\n'
  'from experiments import mnist_mlp\n'
  'config = mnist_mlp.get_config()\n'
  'config.num_epochs = int(sys.argv[2])\n'
  'config.num_devices = 1\n'
  f'config.batch_size = {BATCH}\n'
  f"config.data.train_split = 'train[:{NUM_TRAIN}]'\n"
  "config.data.validation_split = config.data.test_split = 'test[:1000]'\n"
  'config.model.hidden_sizes = (32,)\n'
  "config.progress = 'lines'\n"
  'train.train_and_evaluate(config, sys.argv[1])\n'
)


@pytest.fixture(scope='module', autouse=True)
def decoded_splits():
  """Caches the decoded splits first: a process without TensorFlow cannot decode PNGs."""
  from dnn_jax.data import splits

  config = mnist_mlp.get_config().data
  config.train_split = f'train[:{NUM_TRAIN}]'
  config.validation_split = config.test_split = 'test[:1000]'
  splits.load(config)


def train(workdir, epochs: int) -> dict:
  result = run_python('-c', TRAIN_WITHOUT_TF, str(workdir), str(epochs))
  assert result.returncode == 0, result.stderr
  return json.loads((workdir / 'metrics.json').read_text())


def accumulator(workdir):
  """The event files as TensorBoard's backend reads them, purges applied."""
  everything = {event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0}
  acc = event_accumulator.EventAccumulator(str(workdir / 'tensorboard'), size_guidance=everything)
  return acc.Reload()


def raw_points(workdir) -> list[tuple[str, int]]:
  """(tag, step) of every summary value in the files, hidden (purged) ones included."""
  points = []
  for path in sorted((workdir / 'tensorboard').glob('events.out.tfevents.*')):
    for event in EventFileLoader(str(path)).Load():
      points += [(value.tag, event.step) for value in event.summary.value]
  return points


@pytest.fixture(scope='module')
def resumed(tmp_path_factory):
  """A run of 1 epoch, resumed to 2 on the same workdir: (workdir, metrics after 1, after 2)."""
  workdir = tmp_path_factory.mktemp('tensorboard') / 'run'
  first = train(workdir, 1)
  return workdir, first, train(workdir, 2)


@pytest.mark.e2e
def test_epoch_scalars_equal_the_metrics_history(resumed):
  workdir, first, metrics = resumed
  acc = accumulator(workdir)
  expected_tags = {*EPOCH_TAGS, 'samples_per_sec/train', 'loss/test', 'accuracy/test'}
  assert set(acc.Tags()['scalars']) == expected_tags
  history = metrics['history']
  assert [h['epoch'] for h in history] == [1, 2]
  for tag, key in EPOCH_TAGS.items():
    points = acc.Scalars(tag)
    assert [p.step for p in points] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH], tag
    assert [p.value for p in points] == pytest.approx([h[key] for h in history], rel=1e-6)
  speeds = [p.value for p in acc.Scalars('samples_per_sec/train')]
  assert speeds == pytest.approx([NUM_TRAIN / h['train_seconds'] for h in history], rel=1e-6)
  for tag, key in (('loss/test', 'loss'), ('accuracy/test', 'accuracy')):
    points = acc.Scalars(tag)  # each session ended with a test: after epoch 1, after epoch 2
    assert [p.step for p in points] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    assert [p.value for p in points] == pytest.approx([first['test'][key], metrics['test'][key]])


@pytest.mark.e2e
def test_resumed_run_writes_each_point_once(resumed):
  workdir, first, metrics = resumed
  assert len(list((workdir / 'tensorboard').glob('events.out.tfevents.*'))) == 2  # 2 sessions
  assert first['history'][0] == metrics['history'][0]
  scalars = [p for p in raw_points(workdir) if not p[0].startswith('_hparams_')]
  assert sorted(scalars) == sorted(set(scalars))  # not even hidden duplicates
  assert ('loss/train', STEPS_PER_EPOCH) in scalars
  assert ('loss/test', STEPS_PER_EPOCH) in scalars  # the first session's test result stays


@pytest.mark.e2e
def test_hparams_hold_the_config_and_the_test_metrics(resumed):
  workdir, _, _ = resumed
  content = accumulator(workdir).PluginTagToContent('hparams')

  def parse(tag):
    return plugin_data_pb2.HParamsPluginData.FromString(content[tag])

  hparams = parse('_hparams_/session_start_info').session_start_info.hparams
  assert hparams['optimizer.name'].string_value == 'adam'
  assert hparams['optimizer.learning_rate'].number_value == pytest.approx(1e-3)
  assert hparams['model.hidden_sizes'].string_value == '(32,)'
  assert hparams['data.train_split'].string_value == f'train[:{NUM_TRAIN}]'
  assert hparams['num_epochs'].number_value in (1, 2)  # written by the first session
  assert hparams['checkpoint.async_save'].bool_value is True
  metrics = parse('_hparams_/experiment').experiment.metric_infos
  assert [m.name.tag for m in metrics] == ['loss/test', 'accuracy/test']
  end = parse('_hparams_/session_end_info').session_end_info
  assert end.status == api_pb2.STATUS_SUCCESS


@pytest.mark.e2e
def test_points_past_the_checkpoint_are_hidden_and_rewritten(resumed, tmp_path):
  source, _, old = resumed
  workdir = tmp_path / 'run'
  shutil.copytree(source, workdir)
  # As if killed after writing epoch 2's points but before its checkpoint was saved.
  shutil.rmtree(workdir / 'checkpoints' / str(2 * STEPS_PER_EPOCH))
  new = train(workdir, 2)
  assert raw_points(workdir).count(('samples_per_sec/train', 2 * STEPS_PER_EPOCH)) == 2
  acc = accumulator(workdir)
  for tag in (*EPOCH_TAGS, 'samples_per_sec/train'):
    assert [p.step for p in acc.Scalars(tag)] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH], tag
  [_, speed] = acc.Scalars('samples_per_sec/train')
  assert speed.value == pytest.approx(NUM_TRAIN / new['history'][1]['train_seconds'], rel=1e-6)
  assert new['history'][1]['train_seconds'] != old['history'][1]['train_seconds']
  assert [p.step for p in acc.Scalars('accuracy/test')] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]


def test_report_images_read_back_with_their_size(tmp_path):
  rng = np.random.default_rng(0)
  pixels = {
    'report/curves': rng.integers(0, 256, (30, 40, 3), np.uint8),
    'report/diagram': rng.integers(0, 256, (23, 17, 4), np.uint8),
  }
  pngs = {}
  for tag, array in pixels.items():
    pngs[tag] = tmp_path / f'{tag.split("/")[1]}.png'
    Image.fromarray(array).save(pngs[tag])
  tensorboard.log_report_images(tmp_path, pngs, step=7)
  tensorboard.log_report_images(tmp_path, pngs, step=7)  # again, as a re-drawn report would
  acc = accumulator(tmp_path)
  assert set(acc.Tags()['images']) == set(pixels)
  for tag, array in pixels.items():
    [image] = acc.Images(tag)
    assert (image.step, image.height, image.width) == (7, *array.shape[:2])
    decoded = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))
    np.testing.assert_array_equal(decoded, array)


def test_hparams_flatten_the_config_to_plain_values():
  flat = tensorboard.flat_hparams(mnist_mlp.get_config())
  assert flat['model.hidden_sizes'] == '(512, 512, 512)'
  assert flat['optimizer.learning_rate'] == 1e-3 and flat['checkpoint.max_to_keep'] == 3
  assert all(isinstance(v, bool | int | float | str) for v in flat.values())
  assert not any(key.startswith('augment') for key in flat)  # an empty chain has no entries
