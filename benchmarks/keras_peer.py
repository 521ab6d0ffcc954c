"""One Keras 3 peer of a dnn_jax experiment: the same layers, batch and optimizer, timed.

Run by `benchmarks.throughput --peers` in a process of its own per backend (Keras picks its
backend at import, from KERAS_BACKEND):
  KERAS_BACKEND=tensorflow python -m benchmarks.keras_peer --config_json c.json \
    --jit_compile=auto --dtype=bfloat16
Prints one JSON object. Training is one long `model.fit`, as Keras users run it, over the
experiment's training images (no augmentation, constant learning rate), with a callback that
stamps every batch and stops the fit once `benchmarks.steady.Budget` has enough steps; the
median step time gives samples/s. Evaluation is model.evaluate over the validation split.
--jit_compile=auto is Keras's default: on a CPU-only machine the TensorFlow backend then runs
TensorFlow's own (oneDNN) kernels, without XLA; the JAX backend always compiles with XLA.
--dtype=bfloat16 is Keras's mixed precision (`mixed_bfloat16`: float32 variables, bfloat16
compute, float32 logits).
"""

import json
import os
import statistics
import time

import ml_collections
from absl import app, flags

from benchmarks import steady

FLAGS = flags.FLAGS
flags.DEFINE_string('config_json', None, 'The experiment config, as ConfigDict JSON.')
flags.DEFINE_enum('jit_compile', 'auto', ['auto', 'true', 'false'], "Keras's compile.jit_compile.")
flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'bfloat16: mixed_bfloat16.')
steady.define_budget_flags()
flags.DEFINE_integer('eval_repeats', 3, 'Timed model.evaluate calls after a first one.')
flags.mark_flags_as_required(['config_json'])


def peer_name(backend: str, jit_compile: str) -> str:
  """keras-tensorflow (its default), keras-tensorflow-xla, keras-tensorflow-nojit, keras-jax."""
  suffix = {'auto': '', 'true': '-xla', 'false': '-nojit'}[jit_compile]
  return f'keras-{backend}' + ('' if backend == 'jax' and jit_compile != 'false' else suffix)


def step_stamper(keras, budget: steady.Budget, step_seconds: list):
  """A callback that records every batch's wall time and stops the fit once budget is met."""

  class StepStamper(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
      self.last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
      # Reading the loss waits for the step (JAX dispatches ahead), as Keras's progress bar does.
      float((logs or {}).get('loss', 0.0))
      now = time.perf_counter()
      step_seconds.append(now - self.last)
      self.last = now
      if budget.enough(step_seconds):
        self.model.stop_training = True

  return StepStamper()


def measure(config, jit_compile: str, dtype: str, budget: steady.Budget, eval_repeats: int):
  """Train and eval samples/s of the Keras twin of config's model on this machine."""
  import keras

  from benchmarks import keras_models
  from dnn_jax.data import splits as data_splits

  if dtype == 'bfloat16':
    keras.mixed_precision.set_global_policy('mixed_bfloat16')
  splits = data_splits.load(config.data)
  x = splits.train['image'].astype('float32') / 255.0
  y = splits.train['label']
  x_val = splits.validation['image'].astype('float32') / 255.0
  y_val = splits.validation['label']
  model = keras_models.from_config(config.model, splits.image_shape, splits.num_classes)
  keras_models.compile_model(config, model, jit_compile)
  step_seconds = []
  # Epochs enough for any budget: the callback ends the fit.
  epochs = 1 + (budget.warmup_steps + budget.min_steps) * config.batch_size // len(y)
  epochs = max(epochs, 1000)
  model.fit(
    x, y, batch_size=config.batch_size, epochs=epochs, verbose=0,
    callbacks=[step_stamper(keras, budget, step_seconds)],
  )  # fmt: skip
  eval_times = []
  for _ in range(eval_repeats + 1):  # the first one compiles the test step
    start = time.perf_counter()
    model.evaluate(x_val, y_val, batch_size=config.eval_batch_size, verbose=0)
    eval_times.append(time.perf_counter() - start)
  return {
    'peer': peer_name(keras.backend.backend(), jit_compile),
    'framework': 'keras',
    'dtype': dtype,
    'batch_size': config.batch_size,
    **steady.summary(step_seconds, config.batch_size, budget),
    'eval_samples_per_sec': len(y_val) / statistics.median(eval_times[1:] or eval_times),
    # The warm-up steps' extra time over steady ones: tracing and compiling.
    'compile_seconds': max(
      sum(step_seconds[: budget.warmup_steps])
      - budget.warmup_steps * statistics.median(step_seconds[budget.warmup_steps :]),
      0.0,
    ),
    'keras_version': keras.__version__,
    'keras_backend': keras.backend.backend(),
    'jit_compile': jit_compile,
    'model_params': model.count_params(),
  }


def main(argv):
  del argv
  with open(FLAGS.config_json) as f:
    config = ml_collections.ConfigDict(json.load(f))
  budget = steady.budget_from_flags()
  result = measure(config, FLAGS.jit_compile, FLAGS.dtype, budget, FLAGS.eval_repeats)
  result['keras_backend_env'] = os.environ.get('KERAS_BACKEND', '')
  print(json.dumps(result))


if __name__ == '__main__':
  app.run(main)
