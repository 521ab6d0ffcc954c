"""dnn_jax.logs: the CSV sink holds metrics.json's per-epoch history, row for row."""

import csv
import json
import struct
import urllib.parse

import pytest

from dnn_jax import logs, train
from dnn_jax.errors import ConfigError


def read_rows(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def test_csv_rows_are_the_records_and_a_shorter_history_rewrites_the_file(tmp_path):
  history = [
    {'epoch': 1, 'loss': 0.5, 'val_accuracy': 0.9},
    {'epoch': 2, 'loss': 0.25, 'val_accuracy': 0.95, 'nonfinite_steps': 0},  # a newer key
  ]
  logs.write_csv(tmp_path, history)
  rows = read_rows(tmp_path / logs.CSV_FILE)
  assert list(rows[0]) == ['epoch', 'loss', 'val_accuracy', 'nonfinite_steps']
  assert rows == [
    {'epoch': '1', 'loss': '0.5', 'val_accuracy': '0.9', 'nonfinite_steps': ''},
    {'epoch': '2', 'loss': '0.25', 'val_accuracy': '0.95', 'nonfinite_steps': '0'},
  ]
  logs.write_csv(tmp_path, history[:1])  # a resumed run's checkpoint holds one epoch
  assert [row['epoch'] for row in read_rows(tmp_path / logs.CSV_FILE)] == ['1']


@pytest.mark.slow
def test_a_run_with_log_csv_writes_its_history_there(base_config, tmp_path):
  config = base_config()
  config.data.train_split = 'train[:1024]'
  config.data.validation_split = config.data.test_split = 'test[:500]'
  config.num_epochs, config.num_devices, config.progress = 2, 1, 'lines'
  config.log.csv = True
  train.train_and_evaluate(config, tmp_path)
  history = json.loads((tmp_path / 'metrics.json').read_text())['history']
  rows = read_rows(tmp_path / logs.CSV_FILE)
  assert [{k: float(v) for k, v in row.items()} for row in rows] == history


def wandb_runs(workdir):
  """[(run id, [history rows])] of each W&B run file in <workdir>/wandb, oldest first.

  A .wandb file is a LevelDB-style log (a 7-byte header, then 32 KiB blocks of records with a
  CRC, a length and a type: whole, first, middle or last piece) of wandb's Record protos.
  """
  from wandb.proto import wandb_internal_pb2

  runs = []
  for path in sorted((workdir / logs.WANDB_DIR).glob('offline-run-*/run-*.wandb')):
    data, start, pieces, rows, run_id = path.read_bytes(), 7, b'', [], None
    assert data[:4] == b':W&B'
    while start + 7 <= len(data):
      if 32768 - start % 32768 < 7:  # a block's tail too short for a header is padding
        start += 32768 - start % 32768
        continue
      _, length, kind = struct.unpack_from('<IHB', data, start)
      pieces += data[start + 7 : start + 7 + length]
      start += 7 + length
      if kind in (1, 4):  # whole, or the last piece
        record = wandb_internal_pb2.Record.FromString(pieces)
        pieces = b''
        if record.HasField('run'):
          run_id = record.run.run_id
        if record.HasField('history'):
          items = record.history.item
          rows.append({i.key or '/'.join(i.nested_key): json.loads(i.value_json) for i in items})
    runs.append((run_id, rows))
  return runs


def test_log_wandb_without_wandb_installed_is_one_line(base_config, monkeypatch):
  config = base_config()
  logs.check_installed(config.log)  # off: nothing asked
  config.log.wandb = True
  monkeypatch.setattr(logs.importlib.util, 'find_spec', lambda name: None)
  with pytest.raises(ConfigError, match=r'needs the wandb package: pip install wandb \(or -e'):
    logs.check_installed(config.log)


def test_wandb_goes_online_only_with_credentials_it_finds_without_the_network(
  tmp_path, monkeypatch
):
  import wandb

  for name in ('WANDB_API_KEY', 'WANDB_IDENTITY_TOKEN_FILE'):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv('NETRC', str(tmp_path / 'netrc'))
  assert not logs._has_credentials()  # no .netrc
  host = urllib.parse.urlsplit(wandb.Settings().base_url).hostname
  (tmp_path / 'netrc').write_text(f'machine {host}\n  login user\n  password {"k" * 40}\n')
  assert logs._has_credentials()  # as `wandb login` leaves it
  monkeypatch.setenv('NETRC', str(tmp_path / 'none'))
  monkeypatch.setenv('WANDB_API_KEY', 'k' * 40)
  assert logs._has_credentials()


@pytest.mark.slow
def test_a_wandb_run_offline_logs_each_epoch_once_across_a_resume(
  base_config, tmp_path, monkeypatch, capsys
):
  for name in ('WANDB_API_KEY', 'WANDB_IDENTITY_TOKEN_FILE', 'WANDB_DIR', 'WANDB_PROJECT'):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.delenv('WANDB_MODE', raising=False)  # no credentials: offline by default
  monkeypatch.setenv('NETRC', str(tmp_path / 'no_netrc'))
  for name in ('WANDB_CACHE_DIR', 'WANDB_CONFIG_DIR', 'WANDB_DATA_DIR', 'WANDB_ARTIFACT_DIR'):
    monkeypatch.setenv(name, str(tmp_path / name.lower()))
  workdir = tmp_path / 'run'
  config = base_config()
  config.model.hidden_sizes = (32,)
  config.data.train_split = 'train[:1024]'  # 8 steps per epoch
  config.data.validation_split = config.data.test_split = 'test[:500]'
  config.num_epochs, config.num_devices, config.progress = 1, 1, 'lines'
  config.log.wandb = True
  train.train_and_evaluate(config, workdir)
  config.num_epochs = 2  # resumed: epoch 2 is new, epoch 1 must not be logged again
  monkeypatch.setenv('WANDB_MODE', 'offline')  # as the user may set it
  train.train_and_evaluate(config, workdir)

  directory = workdir / logs.WANDB_DIR
  line = f'W&B: offline run in {directory}; upload it with `wandb sync {directory}`'
  assert capsys.readouterr().out.count(line) == 2
  saved = json.loads((directory / logs.WANDB_RUN_FILE).read_text())
  runs = wandb_runs(workdir)
  assert [run_id for run_id, _ in runs] == [saved['id']] * 2  # one W&B run, resumed
  rows = [row for _, rows in runs for row in rows]
  epochs = [row for row in rows if 'epoch' in row]
  history = json.loads((workdir / 'metrics.json').read_text())['history']
  assert [row['_step'] for row in epochs] == [8, 16]  # each epoch once, at the run's step
  assert [row['val_accuracy'] for row in epochs] == [h['val_accuracy'] for h in history]
  assert [row['loss'] for row in epochs] == [h['loss'] for h in history]
  test = json.loads((workdir / 'metrics.json').read_text())['test']
  assert rows[-1]['test_accuracy'] == test['accuracy']
  assert runs[0][1][-1]['test_accuracy'] != test['accuracy']  # the 1-epoch run's own test
