"""Evaluate a checkpoint on the test split: python -m dnn_jax.evaluate --workdir W.

--checkpoint picks it: latest (default), best (highest val_accuracy at an epoch's end) or a
step number. Prints `Test loss` and `Test accuracy` and writes W/eval.json.
"""

import pathlib

from absl import app, flags

from dnn_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, "A training run's workdir (holds checkpoints/).")
flags.DEFINE_string('checkpoint', 'latest', 'latest, best, or a step number.')
flags.mark_flags_as_required(['workdir'])


def evaluate_checkpoint(workdir, which: str = 'latest') -> dict:
  """Restores a checkpoint of workdir, evaluates it, writes workdir/eval.json; returns that."""
  import jax

  from dnn_jax import checkpoint, configs, experiment, trainer

  workdir = pathlib.Path(workdir)
  source = checkpoint.open_saved(workdir)
  step, _, note = checkpoint.choose_step(source, which)
  if note:
    print(note)
  meta = source.read_meta(step)
  config = configs.from_saved(meta['config'])
  if config.batch_size % len(jax.devices()):  # evaluation is per example: any count will do
    config.num_devices = 1
  else:
    config.num_devices = 0
  exp = experiment.setup(config)
  state, _ = source.restore(step, exp.learner.initial_state, items=checkpoint.WEIGHTS)
  programs = experiment.compile_programs(exp, train=False)
  path = workdir / 'checkpoints' / str(step)
  result = {
    'checkpoint': str(path),
    'step': step,
    'epochs_done': step / exp.steps_per_epoch,
    'test': experiment.evaluate(exp, programs, state, 'test'),
  }
  if not exp.data.splits.validation_is_test:
    result['validation'] = experiment.evaluate(exp, programs, state, 'validation')
  trainer.write_json(workdir / 'eval.json', result)
  print(f'Checkpoint {path} (step {step}, epoch {result["epochs_done"]:.2f})')
  print(f'Test loss: {result["test"]["loss"]:.4f}')
  print(f'Test accuracy: {result["test"]["accuracy"]:.4f}')
  return result


def main(argv):
  del argv  # cli.parse_flags refuses positional arguments
  cli.run_reporting_errors(evaluate_checkpoint, FLAGS.workdir, FLAGS.checkpoint)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
