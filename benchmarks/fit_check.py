"""An outside check of the Keras peer: one plain model.fit over N batches, timed around the call.

  KERAS_BACKEND=tensorflow python -m benchmarks.fit_check --config experiments/mnist_cnn.py \
    --batches 150 --record benchmarks/records.jsonl

No callback, no stamps: a first short fit builds the model's step, then one fit over
`--batches` batches is timed with a stopwatch, as a Keras user would time it. Its samples/s
should agree (within noise) with `benchmarks.throughput --peers keras-tensorflow`; results.py
puts the two side by side.
"""

import os
import time

from absl import app, flags
from ml_collections import config_flags

from benchmarks import records

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
flags.DEFINE_integer('batches', 150, 'Batches in the timed model.fit call.')
flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'bfloat16: mixed_bfloat16.')
flags.DEFINE_string('record', '', 'Append the measurement to this records file (JSON lines).')
flags.mark_flags_as_required(['config'])


def main(argv):
  del argv
  import keras

  from benchmarks import keras_models
  from dnn_jax.data import splits as data_splits

  config = FLAGS.config
  if FLAGS.dtype == 'bfloat16':
    keras.mixed_precision.set_global_policy('mixed_bfloat16')
  splits = data_splits.load(config.data)
  count = FLAGS.batches * config.batch_size
  x = splits.train['image'][:count].astype('float32') / 255.0
  y = splits.train['label'][:count]
  model = keras_models.from_config(config.model, splits.image_shape, splits.num_classes)
  keras_models.compile_model(config, model)  # Keras's default jit_compile='auto'
  model.fit(x[: 10 * config.batch_size], y[: 10 * config.batch_size],
            batch_size=config.batch_size, verbose=0)  # fmt: skip
  start = time.perf_counter()
  model.fit(x, y, batch_size=config.batch_size, epochs=1, verbose=0, shuffle=False)
  seconds = time.perf_counter() - start
  result = {
    'config': config_flags.get_config_filename(FLAGS['config']),
    'peer': f'keras-{keras.backend.backend()}',
    'dtype': FLAGS.dtype,
    'batch_size': config.batch_size,
    'batches': len(y) // config.batch_size,
    'train_samples_per_sec': len(y) / seconds,
    'keras_backend_env': os.environ.get('KERAS_BACKEND', ''),
  }
  print(result)
  if FLAGS.record:
    records.append(FLAGS.record, 'fit_check', result)


if __name__ == '__main__':
  app.run(main)
