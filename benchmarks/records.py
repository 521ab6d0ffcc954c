"""Benchmark records: one JSON line per measurement, with the machine and the command that made it.

`python -m benchmarks.results` renders RESULTS.md and its chart from these lines alone.
"""

import json
import pathlib
import shlex
import sys

from dnn_jax import machine

DEFAULT_PATH = pathlib.Path(__file__).parent / 'records.jsonl'


def command_line() -> str:
  """How this process was started, as one would type it again."""
  argv = list(sys.argv)
  if argv and argv[0].endswith('.py') and '/benchmarks/' in argv[0]:
    argv[0] = '-m benchmarks.' + pathlib.Path(argv[0]).stem  # run as a module
  return 'python ' + ' '.join(shlex.quote(a) if not a.startswith('-m ') else a for a in argv)


def append(path, kind: str, fields: dict, where: dict | None = None) -> dict:
  """Appends one record (kind: 'throughput', 'time_to_accuracy', ...) to path; returns it."""
  record = {
    'kind': kind,
    **fields,
    'machine': where or machine.describe(),
    'command': command_line(),
  }
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'a') as f:
    f.write(json.dumps(record) + '\n')
  return record


def read(path) -> list:
  """Every record in path, oldest first."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def machine_label(record: dict) -> str:
  """Where a record was measured: CPU model, family/model, the deciding feature, cores."""
  where = record['machine']
  feature = machine.feature_label(where['cpu_features'])
  label = (f'{where["cpu_model"]} (family/model {where["cpu_family_model"]}, {feature}, '
           f'{where["cpu_cores"]} cores)')  # fmt: skip
  device = record.get('device', '')
  return label if not device or device.endswith('cpu') else f'{device} on {label}'
