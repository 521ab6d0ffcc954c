"""dnn_jax.logs: the CSV sink holds metrics.json's per-epoch history, row for row."""

import csv
import json

import pytest

from dnn_jax import logs, train


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
