"""dnn_jax.data.pipeline and stream: which pipeline a run takes, and what the stream reads."""

import numpy as np
import pytest

from dnn_jax import experiment, parallel
from dnn_jax.data import pipeline, stream
from dnn_jax.errors import ConfigError

CIFAR10 = {'train': 50_000, 'validation': 10_000, 'test': 10_000}


def data_config(base_config, pipeline_name, budget_mb=0, name='cifar10'):
  config = base_config().data
  config.name, config.pipeline, config.device_budget_mb = name, pipeline_name, budget_mb
  return config


def test_cifar10_takes_184_mb_on_a_device_validated_on_its_test_split(base_config):
  config = data_config(base_config, 'auto')
  assert pipeline.resident_bytes(config, CIFAR10) == 60_000 * (32 * 32 * 3 + 4)  # 184.6 MB
  config.validation_split = 'train[45000:]'  # a split of its own is on the device too
  assert pipeline.resident_bytes(config, CIFAR10) == 70_000 * (32 * 32 * 3 + 4)


def test_auto_streams_what_exceeds_the_budget_and_says_why(base_config):
  chosen, why = pipeline.choose(data_config(base_config, 'auto', budget_mb=100), CIFAR10)
  assert chosen == 'grain'
  assert why == (
    'Data pipeline: grain, streaming (the splits take 184.6 MB, the budget is 100 MB: '
    'config.data.device_budget_mb=100)'
  )
  chosen, why = pipeline.choose(data_config(base_config, 'auto', budget_mb=200), CIFAR10)
  assert chosen == 'device' and why.startswith('Data pipeline: device (the splits take 184.6 MB')


def test_auto_without_a_budget_takes_a_quarter_of_the_devices_memory(base_config):
  class Tiny:  # a device with 400 MB: 100 MB for the splits
    platform, device_kind = 'gpu', 'tiny'

    def memory_stats(self):
      return {'bytes_limit': 400 * 10**6}

  chosen, why = pipeline.choose(data_config(base_config, 'auto'), CIFAR10, Tiny())
  assert chosen == 'grain' and why.endswith('the budget is 100 MB: 1/4 of the tiny memory)')


def test_device_over_a_set_budget_is_one_line_naming_the_fix(base_config):
  with pytest.raises(ConfigError, match=r'--config.data.pipeline=grain \(or auto\)'):
    pipeline.choose(data_config(base_config, 'device', budget_mb=100), CIFAR10)
  # Without a budget the device pipeline is today's default: nothing is checked or said.
  assert pipeline.choose(data_config(base_config, 'device'), CIFAR10) == ('device', '')


def test_a_streamed_batch_reads_its_columns_and_pads_with_example_0():
  images = np.arange(5 * 2 * 2 * 1, dtype=np.uint8).reshape(5, 2, 2, 1)
  source = stream.ArraySource({'image': images, 'label': np.arange(5, dtype=np.int32)})
  batch = stream.ReadBatch(source, np.array([[4, 0], [3, -1]], np.int32))(1)
  np.testing.assert_array_equal(batch['label'], [3, 0])
  np.testing.assert_array_equal(batch['image'], images[[3, 0]])


def test_a_stream_hands_out_calls_on_the_mesh_and_resumes_from_its_state():
  images = np.arange(10 * 2 * 2 * 1, dtype=np.uint8).reshape(10, 2, 2, 1)
  source = stream.ArraySource({'image': images, 'label': np.arange(10, dtype=np.int32)})
  mesh = parallel.make_mesh(4)
  order = np.random.default_rng(0).permutation(12).reshape(3, 4) % 11 - 1  # some -1 padding
  split = stream.SplitStream(source, mesh, 4, (2, 2, 1))
  split.start(order, pass_id=0)
  got_images, got_labels = split.next_call(2)
  assert got_images.shape == (2, 4, 2, 2, 1) and got_images.sharding == split.sharding
  np.testing.assert_array_equal(np.asarray(got_labels), np.maximum(order[:2], 0))
  saved = split.state()
  assert saved['pass'] == 0 and saved['steps_read'] == 2
  split.start(order, pass_id=0, state=saved)  # as a resumed run does
  _, last = split.next_call(1)
  np.testing.assert_array_equal(np.asarray(last), np.maximum(order[2:], 0))
  with pytest.raises(StopIteration):
    split.next_call(1)


def test_auto_with_a_small_budget_streams_real_mnist(base_config, capsys):
  config = base_config()
  config.data.train_split, config.data.validation_split = 'train[:2048]', 'test[:500]'
  config.data.test_split = 'test[:500]'
  config.data.pipeline, config.data.device_budget_mb = 'auto', 1
  exp = experiment.setup(config)
  assert exp.data.pipeline == 'grain' and exp.data.arrays is None
  assert 'Data pipeline: grain, streaming (the splits take 2.0 MB' in capsys.readouterr().out
  assert exp.data.splits.size('train') == 2048 and exp.num_train == 2048


@pytest.mark.multiprocess
def test_worker_processes_read_the_same_batches_as_threads():
  images = np.arange(16 * 2 * 2 * 1, dtype=np.uint8).reshape(16, 2, 2, 1)
  source = stream.ArraySource({'image': images, 'label': np.arange(16, dtype=np.int32)})
  order = np.random.default_rng(1).permutation(16).reshape(4, 4)
  labels = {}
  for workers in (0, 1):
    split = stream.SplitStream(source, parallel.make_mesh(1), 4, (2, 2, 1), workers=workers)
    split.start(order, pass_id=0)
    labels[workers] = np.asarray(split.next_call(4)[1])
    split.close()
  np.testing.assert_array_equal(labels[1], order)
  np.testing.assert_array_equal(labels[0], labels[1])
