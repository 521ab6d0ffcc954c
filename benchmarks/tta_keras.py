"""Keras's side of benchmarks.time_to_accuracy: the experiment's recipe, fit until the target.

Run by the harness in a process of its own:
  KERAS_BACKEND=tensorflow python -m benchmarks.tta_keras --recipe_json c.json
The Keras twin of the model (benchmarks.keras_models), the same optimizer, hyperparameters and
learning-rate schedule (keras_models.keras_optimizer), batch size, loss from logits and data
(dnn_jax's splits, x / 255), trained as the Keras tutorial trains: one model.fit of up to
config.num_epochs epochs, shuffled each epoch (an augmented recipe through a tf.data pipeline of
Keras's preprocessing layers, keras_models.augmentation, as Keras's guide augments), validating
on the validation split after each, plus a callback that stops the fit after the first epoch
whose val_accuracy reaches config.stop_at_accuracy. Keras's default compile (jit_compile='auto':
on a CPU-only machine TensorFlow's own oneDNN kernels, no XLA).
config.dtype bfloat16 is Keras's mixed_bfloat16 policy; the loss computes in float32 either way
(a Keras loss casts its inputs to float32). Epoch lines go to stderr (verbose=2), and stdout
gets one JSON object. Phases, from time stamps the callback takes as the batches begin:
  data      reading the splits and scaling them to [0, 1];
  compile   the extra time of the first training batch over the median of the first epoch's
            others (Keras traces its train function, TensorFlow optimizes the graph and
            creates its kernels), plus the same for the first validation's first batch;
  train     each epoch from its start to its validation's start (the first one also builds
            the validation pipeline there), less the compile share;
  evaluate  each validation from its start to its end, less the compile share.
Start-up is the harness's: its launch stamp to `imported_at`, after importing Keras and the
helpers above; those import dnn_jax's layer-line parser and so flax, which a Keras user would
not (`seconds_helper_imports`, about half a second, says how long). What fit does before its
first epoch (the tf.data pipeline from the arrays, the optimizer's variables) is in none of them.
"""

import contextlib
import importlib
import itertools
import json
import statistics
import sys
import time

import ml_collections
from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string('recipe_json', None, 'The experiment config, as ConfigDict JSON.')
flags.mark_flags_as_required(['recipe_json'])
# What run() imports besides Keras: the twin models, the optimizer mapping, dnn_jax's data.
HELPERS = ('benchmarks.keras_models', 'dnn_jax.data.splits')


def phase_timer(keras, target: float):
  """A callback that stamps epochs, batches and validations, and stops at the target."""

  class PhaseTimer(keras.callbacks.Callback):
    def __init__(self):
      super().__init__()
      self.train_seconds, self.eval_seconds = 0.0, 0.0
      self.train_starts, self.eval_starts = [], []  # the first epoch's and validation's batches
      self.val_accuracies = []

    # Batch *begin* hooks only: Keras calls them in line, whereas a batch-end hook would
    # turn off its asynchronous dispatch of the others.
    def on_epoch_begin(self, epoch, logs=None):
      self.epoch_began = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
      if not self.val_accuracies:
        self.train_starts.append(time.perf_counter())

    def on_test_begin(self, logs=None):
      self.eval_began = time.perf_counter()
      self.train_seconds += self.eval_began - self.epoch_began

    def on_test_batch_begin(self, batch, logs=None):
      if not self.val_accuracies:
        self.eval_starts.append(time.perf_counter())

    def on_test_end(self, logs=None):
      now = time.perf_counter()
      self.eval_seconds += now - self.eval_began
      if not self.val_accuracies:
        self.train_starts.append(self.eval_began)  # the last batch's end, near enough
        self.eval_starts.append(now)

    def on_epoch_end(self, epoch, logs=None):
      self.val_accuracies.append(float(logs['val_accuracy']))
      if target and self.val_accuracies[-1] >= target:  # 0: every epoch
        self.model.stop_training = True

  return PhaseTimer()


def first_call_extra(starts: list) -> float:
  """The first interval's excess over the median of the others (0 with fewer than two)."""
  seconds = [b - a for a, b in itertools.pairwise(starts)]
  if len(seconds) < 2:
    return 0.0
  return max(seconds[0] - statistics.median(seconds[1:]), 0.0)


def augmented(layers, train: dict, seed: int):
  """fit's arrays as Keras's guide augments them: a tf.data pipeline of the layers, in parallel."""
  import tensorflow as tf  # the backend: what KERAS_BACKEND=tensorflow's fit runs on

  return (
    tf.data.Dataset.from_tensor_slices((train['x'], train['y']))
    .shuffle(len(train['x']), seed=seed, reshuffle_each_iteration=True)
    .batch(train['batch_size'])
    .map(lambda x, y: (layers(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    .prefetch(tf.data.AUTOTUNE)
  )


def run(keras, config) -> dict:
  """Fits config's recipe until config.stop_at_accuracy; the phases and the accuracies."""
  from benchmarks import keras_models
  from dnn_jax.data import splits as data_splits

  start = time.perf_counter()
  splits = data_splits.load(config.data)
  x = splits.train['image'].astype('float32') / 255.0
  x_val = splits.validation['image'].astype('float32') / 255.0
  seconds_data = time.perf_counter() - start
  if config.dtype == 'bfloat16':
    keras.mixed_precision.set_global_policy('mixed_bfloat16')  # before the layers are made
  keras.utils.set_random_seed(config.seed)
  model = keras_models.from_config(config.model, splits.image_shape, splits.num_classes)
  steps_per_epoch = -(-len(x) // config.batch_size)  # Keras keeps the last, smaller batch
  model.compile(
    optimizer=keras_models.keras_optimizer(
      keras, config.optimizer, steps_per_epoch, config.num_epochs
    ),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=config.model.name != 'resnet_v2'),
    metrics=['accuracy'],
  )  # jit_compile='auto', Keras's default
  timer = phase_timer(keras, config.stop_at_accuracy)
  train = {'x': x, 'y': splits.train['label'], 'batch_size': config.batch_size, 'shuffle': True}
  if config.augment:
    layers = keras_models.augmentation(config.augment)
    # The pipeline shuffles; fit's own shuffle=True would only warn that it ignores itself.
    train = {'x': augmented(layers, train, config.seed), 'shuffle': False}
  with contextlib.redirect_stdout(sys.stderr):  # stdout is for the JSON line alone
    model.fit(
      **train, epochs=config.num_epochs, verbose=2, callbacks=[timer],
      validation_data=(x_val, splits.validation['label']),
      validation_batch_size=config.eval_batch_size,
    )  # fmt: skip
  compile_train = first_call_extra(timer.train_starts)
  compile_eval = first_call_extra(timer.eval_starts)
  return {
    'seconds_data': seconds_data,
    'seconds_compile': compile_train + compile_eval,
    'seconds_train': timer.train_seconds - compile_train,
    'seconds_evaluate': timer.eval_seconds - compile_eval,
    'epochs': len(timer.val_accuracies),
    'accuracy': timer.val_accuracies[-1],
    'val_accuracies': timer.val_accuracies,
    'jit_compile': bool(model.jit_compile),
    'keras_backend': keras.backend.backend(),
    'keras_version': keras.__version__,
  }


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # as dnn_jax's commands: not JAX's note on TPUs
  import keras  # the backend from KERAS_BACKEND; TensorFlow starts here

  start = time.perf_counter()
  for name in HELPERS:
    importlib.import_module(name)
  helper_imports = time.perf_counter() - start
  imported_at = time.time()
  with open(FLAGS.recipe_json) as f:
    config = ml_collections.ConfigDict(json.load(f))
  result = run(keras, config)
  print(
    json.dumps({'imported_at': imported_at, 'seconds_helper_imports': helper_imports, **result})
  )


if __name__ == '__main__':
  app.run(main)
