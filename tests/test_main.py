"""dnn_jax.main: the command line, overrides, one-line errors, and no TensorFlow in training."""

import json
import shutil

import numpy as np
import pytest
from conftest import run_python

from dnn_jax.data import catalog, locate, read

pytestmark = pytest.mark.e2e

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
      '--config.optimizer.name=adamz',
      "unknown optimizer 'adamz'; choose one of adadelta, adam, rmsprop, sgd (Keras semantics) or",
    ),
    ('--config.model.name=resnet', "unknown model 'resnet'; choose one of cnn, mlp, resnet_v2,"),
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


@pytest.mark.parametrize(
  'source, message',
  [
    ('def get_config(:\n  pass\n', '{path}:1: SyntaxError: invalid syntax'),
    ('import os\n\nraise RuntimeError("no GPU here")\n', '{path}:3: RuntimeError: no GPU here'),
    ('X = 1\n', '{path} defines no get_config(); an experiment file returns its ConfigDict'),
    ('def get_config():\n  return int("3e-4")\n', '{path}:2: ValueError: invalid literal for'),
    ('def get_config():\n  return {"lr": 1}\n', '{path}: get_config() returned dict, not an ml_'),
  ],
)  # fmt: skip
def test_a_broken_config_file_is_one_line_naming_file_and_line(tmp_path, source, message):
  path = tmp_path / 'broken.py'
  path.write_text(source)
  result = run_python('-m', 'dnn_jax.main', '--config', str(path), '--workdir', str(tmp_path / 'w'))
  assert result.returncode == 2
  (line,) = result.stderr.splitlines()
  assert line.startswith('error: ' + message.format(path=path)), line
  assert not (tmp_path / 'w').exists()


def test_a_report_that_fails_is_one_line_saying_the_run_finished(tmp_path):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'report').write_text('a file where the report directory goes')
  result = run_python(
    '-m', 'dnn_jax.main', '--config', 'experiments/mnist_mlp.py', '--workdir', str(workdir),
    '--config.num_epochs=1', '--config.data.train_split=train[:512]', '--config.num_devices=1',
  )  # fmt: skip
  assert result.returncode == 1
  assert result.stderr.splitlines() == [
    f'error: the report could not be drawn (FileExistsError: [Errno 17] File exists: '
    f"'{workdir / 'report'}'); the run itself finished: {workdir / 'metrics.json'}; redraw it "
    f'with python -m dnn_jax.report --workdir {workdir}'
  ]
  assert 'test' in json.loads((workdir / 'metrics.json').read_text())


def _prepared_mnist_copy(data_dir):
  """A prepared MNIST in data_dir (its records linked, not copied), for runs to alter."""
  version = catalog.version('mnist')
  source = locate.prepared_dir(locate.writable_data_dir(), 'mnist', version)
  copy = locate.prepared_dir(data_dir, 'mnist', version)
  copy.mkdir(parents=True)
  for path in source.iterdir():
    if 'array_record' in path.name:
      (copy / path.name).symlink_to(path)
    else:
      shutil.copy(path, copy / path.name)
  return copy


def test_class_names_with_spaces_train_and_report(tmp_path):
  """MNIST's digits under fashion_mnist's class names ('T-shirt/top' ... 'Ankle boot')."""
  import tensorflow_datasets as tfds

  names = tfds.builder('fashion_mnist', data_dir=str(tmp_path / 'empty')).info.features['label']
  copy = _prepared_mnist_copy(tmp_path / 'data')
  (copy / 'label.labels.txt').write_text('\n'.join(names.names) + '\n')
  workdir = tmp_path / 'run'
  result = run_python(
    '-m', 'dnn_jax.main', '--config', 'experiments/mnist_mlp.py', '--workdir', str(workdir),
    f'--config.data.data_dir={tmp_path / "data"}', '--config.num_epochs=1',
    '--config.data.train_split=train[:512]', '--config.num_devices=1',
    '--config.data.validation_split=test[:500]', '--config.data.test_split=test[:500]',
  )  # fmt: skip
  assert result.returncode == 0, result.stderr
  rows = (workdir / 'report' / 'confusion.txt').read_text().splitlines()
  assert [row[: len('T-shirt/top')].strip() for row in rows[1:11]] == names.names
  assert rows[0].endswith('Bag  Ankle boot')  # 10 columns, one per class


def test_a_run_with_a_damaged_array_cache_warns_rebuilds_and_trains(tmp_path):
  data_dir = tmp_path / 'data'  # writable: the array cache goes here
  prepared = locate.writable_data_dir()  # read-only for this run
  version = catalog.version('mnist')
  for split in ('train[:512]', 'test[:500]'):
    read.read_split_cached('mnist', version, split, prepared, data_dir)
  (cache,) = data_dir.rglob('train_512_-*.npz')  # the spec's hash ends the name
  cache.write_bytes(cache.read_bytes()[:1000])  # a copy cut short
  result = run_python(
    '-m', 'dnn_jax.main', '--config', 'experiments/mnist_mlp.py', '--workdir', str(tmp_path / 'w'),
    f'--config.data.data_dir={data_dir}', f'--config.data.data_dirs={prepared}',
    '--config.num_epochs=1', '--config.data.train_split=train[:512]', '--config.num_devices=1',
    '--config.data.validation_split=test[:500]', '--config.data.test_split=test[:500]',
    '--noreport',
  )  # fmt: skip
  assert result.returncode == 0, result.stderr
  assert result.stderr.splitlines() == [
    f'warning: the decoded-array cache {cache} is damaged (BadZipFile: File is not a zip file); '
    f'rebuilding it from {prepared}'
  ]
  assert 'Test accuracy: ' in result.stdout
  with np.load(cache) as rebuilt:
    assert rebuilt['image'].shape == (512, 28, 28, 1)
