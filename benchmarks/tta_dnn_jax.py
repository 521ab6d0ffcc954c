"""dnn_jax's side of benchmarks.time_to_accuracy: dnn_jax.main's training, its phases timed.

Run by the harness in a process of its own:
  python -m benchmarks.tta_dnn_jax --recipe_json c.json --workdir /tmp/run
Imports what dnn_jax.main imports, stamps the wall clock (the harness, which stamped the
launch, takes start-up as the difference), then runs train.train_and_evaluate, the very loop
dnn_jax.main runs (checkpoints and all), with config.stop_at_accuracy set. Its output goes to
stderr; stdout gets one JSON object, the phases as train_and_evaluate measured them:
data = reading the splits, compile = XLA compiling every training call and the evaluators
(ahead of time), train = the epochs' training seconds, evaluate = the per-epoch validations.
No report is drawn: dnn_jax.main draws it after training, with the accuracy already reached.
"""

import contextlib
import json
import sys
import time

import ml_collections
from absl import app, flags

from dnn_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('recipe_json', None, 'The experiment config, as ConfigDict JSON.')
flags.DEFINE_string('workdir', None, 'Where the run writes metrics.json and its checkpoints.')
flags.mark_flags_as_required(['recipe_json', 'workdir'])


def main(argv):
  del argv
  from dnn_jax import train  # as dnn_jax.main imports it: JAX starts here

  imported_at = time.time()
  with open(FLAGS.recipe_json) as f:
    config = ml_collections.ConfigDict(json.load(f))
  with contextlib.redirect_stdout(sys.stderr):  # stdout is for the JSON line alone
    result = cli.run_reporting_errors(train.train_and_evaluate, config, FLAGS.workdir)
  history = result['history']
  print(
    json.dumps(
      {
        'imported_at': imported_at,
        'seconds_data': result['data_seconds'],
        'seconds_compile': result['compile_seconds'],
        'seconds_train': sum(h['train_seconds'] for h in history),
        'seconds_evaluate': sum(h['eval_seconds'] for h in history),
        'epochs': len(history),
        'accuracy': history[-1]['val_accuracy'],
        'val_accuracies': [h['val_accuracy'] for h in history],
      }
    )
  )


if __name__ == '__main__':
  app.run(main)
