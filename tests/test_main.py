"""dnn_jax.main: the command line, overrides, one-line errors, and no TensorFlow in training."""

import json

import pytest
from conftest import run_python

# Runs main in-process, then prints which TensorFlow modules training imported.
RUN_MAIN_THEN_LIST_TF = (
  'import runpy, sys\n'
  'sys.argv = ["main"] + sys.argv[1:]\n'
  'try:\n'
  '  runpy.run_module("dnn_jax.main", run_name="__main__")\n'
  'except SystemExit as e:\n'
  '  assert not e.code, e.code\n'
  'print(sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow"))\n'
)


def test_train_from_the_command_line_with_overrides(tmp_path):
  result = run_python(
    '-c', RUN_MAIN_THEN_LIST_TF,
    '--config', 'experiments/mnist_mlp.py',
    '--workdir', str(tmp_path),
    '--config.optimizer.learning_rate=3e-4',
    '--config.num_epochs=1',
    '--config.data.train_split=train[:1024]',
    '--config.num_devices=2',
  )  # fmt: skip
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert lines[-1] == '[]'  # training imported no TensorFlow
  assert any(line.startswith('Epoch 1/1 - ') and 'val_accuracy: ' in line for line in lines)
  assert any(line.startswith('Test accuracy: ') for line in lines)
  metrics = json.loads((tmp_path / 'metrics.json').read_text())
  assert metrics['config']['optimizer']['learning_rate'] == 3e-4
  assert metrics['devices']['count'] == 2


@pytest.mark.parametrize(
  'override, message',
  [
    (
      '--config.optimizer.name=adamw',
      "unknown optimizer 'adamw'; choose one of adadelta, adam, rmsprop, sgd",
    ),
    ('--config.model.name=resnet', "unknown model 'resnet'; choose one of cnn, mlp"),
    ('--config.data.name=svhn', "unknown dataset 'svhn'; choose one of mnist, fashion_mnist"),
    ('--config.optimizer.learning_rate=-0.1', 'config.optimizer.learning_rate=-0.1 must be a'),
    ('--config.batch_size=0', 'config.batch_size=0 must be a positive integer'),
    ('--config.num_epochs=-2', 'config.num_epochs=-2 must be a positive integer'),
    ('--config.model.dropout=1.0', 'config.model.dropout=1.0 must be in [0, 1)'),
    ('--config.batch_size=130', 'batch_size=130 is not divisible by the 4 devices'),
    ('--config.num_devices=16', 'num_devices=16 but only 4 cpu device(s) exist'),
    (
      '--config.optimizer.schedule=exp',
      "unknown schedule 'exp'; choose one of constant, cosine, inverse_time, piecewise",
    ),
    ('--config.on_nonfinite=ignore', "unknown on_nonfinite 'ignore'; choose one of stop, skip_"),
    ('--config.init_from=/no/run', "config.init_from='/no/run' does not exist; give a workdir"),
    ('--config.batch_size=100000', 'batch_size=100000 is larger than the 60,000 training'),
    (
      '--config.optimizer.learnig_rate=0.1',
      "--config.optimizer.learnig_rate names no config key; did you mean 'learning_rate'?",
    ),
    ('--config=experiments/nope.py', 'no config file experiments/nope.py; experiments are in'),
    ('num_epochs=3', 'unexpected arguments: num_epochs=3; flags take the form --name=value'),
  ],
)
def test_bad_config_is_one_line_without_traceback(tmp_path, override, message):
  workdir = tmp_path / 'run'
  result = run_python(
    '-m', 'dnn_jax.main', '--config', 'experiments/mnist_mlp.py', '--workdir', str(workdir),
    override,
  )  # fmt: skip
  assert result.returncode == 2
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1 and message in errors[0], result.stderr
  assert 'Traceback' not in result.stderr
  assert not workdir.exists()  # nothing half-written


def test_a_second_run_takes_every_program_from_the_compilation_cache(tmp_path):
  cache = tmp_path / 'xla_cache'
  runs = []
  for name in ('first', 'second'):
    result = run_python(
      '-m', 'dnn_jax.main', '--config', 'experiments/mnist_mlp.py',
      '--workdir', str(tmp_path / name), '--config.num_epochs=1',
      '--config.data.train_split=train[:512]', f'--config.compilation_cache_dir={cache}',
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    runs.append(sorted(p.name for p in cache.iterdir()))
  assert runs[0]  # the first run filled the cache ...
  assert runs[1] == runs[0]  # ... and the second compiled nothing new
  first, second = (
    json.loads((tmp_path / n / 'metrics.json').read_text()) for n in ('first', 'second')
  )
  assert first['test'] == second['test']
