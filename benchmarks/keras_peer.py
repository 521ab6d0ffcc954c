"""One Keras 3 peer of a dnn_jax experiment: the same layers, batch and optimizer, timed.

Run by `benchmarks.throughput --peers` in a process of its own per backend (Keras picks its
backend at import, from KERAS_BACKEND):
  KERAS_BACKEND=tensorflow python -m benchmarks.keras_peer --config_json c.json --steps 100
Prints one JSON object. Training is model.fit over `steps` batches of the experiment's data
(no augmentation, constant learning rate); the first fit call compiles, then the median of
`repeats` calls is taken, as dnn_jax's benchmark does. Evaluation is model.evaluate over the
validation split.
"""

import json
import os
import statistics
import time

import ml_collections
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string('config_json', None, 'The experiment config, as ConfigDict JSON.')
flags.DEFINE_integer('steps', 100, 'Optimizer steps per timed fit call.')
flags.DEFINE_integer('repeats', 5, 'Timed calls after the first (compiling) one.')
flags.DEFINE_bool('jit_compile', True, "False: TensorFlow's graph mode with its oneDNN kernels.")
flags.mark_flags_as_required(['config_json'])


def keras_optimizer(keras, opt):
  """Keras's optimizer of the same name and hyperparameters (the schedule left out)."""
  if opt.name == 'adam':
    return keras.optimizers.Adam(opt.learning_rate, opt.beta_1, opt.beta_2, opt.epsilon)
  if opt.name == 'rmsprop':
    return keras.optimizers.RMSprop(opt.learning_rate, opt.rho, opt.momentum, opt.epsilon)
  if opt.name == 'adadelta':
    return keras.optimizers.Adadelta(opt.learning_rate, opt.rho, opt.epsilon)
  return keras.optimizers.SGD(opt.learning_rate, opt.momentum, opt.nesterov)


def measure(config, steps: int, repeats: int, jit_compile: bool) -> dict:
  """Train and eval samples/s of the Keras twin of config's model on this machine."""
  import keras

  from benchmarks import keras_models
  from dnn_jax.data import splits as data_splits

  splits = data_splits.load(config.data)
  batch = config.batch_size
  count = min(steps * batch, len(splits.train['label']))
  x = splits.train['image'][:count].astype('float32') / 255.0
  y = splits.train['label'][:count]
  x_val = splits.validation['image'].astype('float32') / 255.0
  y_val = splits.validation['label']
  model = keras_models.from_config(config.model, splits.image_shape, splits.num_classes)
  from_logits = config.model.name != 'resnet_v2'  # keras-team's ResNet ends in softmax
  model.compile(
    optimizer=keras_optimizer(keras, config.optimizer),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
    metrics=['accuracy'],
    jit_compile=jit_compile,
  )

  def fit():
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)

  def evaluate():
    model.evaluate(x_val, y_val, batch_size=config.eval_batch_size, verbose=0)

  start = time.perf_counter()
  fit()
  evaluate()
  first_seconds = time.perf_counter() - start
  fit_times, eval_times = [], []
  for _ in range(repeats):
    start = time.perf_counter()
    fit()
    fit_times.append(time.perf_counter() - start)
    start = time.perf_counter()
    evaluate()
    eval_times.append(time.perf_counter() - start)
  fit_seconds, eval_seconds = statistics.median(fit_times), statistics.median(eval_times)
  backend = keras.backend.backend()
  return {
    'peer': f'keras-{backend}' + ('' if jit_compile else '-nojit'),
    'train_samples_per_sec': count / fit_seconds,
    'eval_samples_per_sec': len(y_val) / eval_seconds,
    'step_ms': 1e3 * fit_seconds / (count / batch),
    # The first calls' extra time over steady ones: tracing and compiling.
    'compile_seconds': max(first_seconds - fit_seconds - eval_seconds, 0.0),
    'keras_version': keras.__version__,
  }


def main(argv):
  del argv
  with open(FLAGS.config_json) as f:
    config = ml_collections.ConfigDict(json.load(f))
  result = measure(config, FLAGS.steps, FLAGS.repeats, FLAGS.jit_compile)
  result['keras_backend_env'] = os.environ.get('KERAS_BACKEND', '')
  print(json.dumps(result))


if __name__ == '__main__':
  app.run(main)
