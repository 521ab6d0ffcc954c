"""Per-epoch log sinks beside metrics.json and TensorBoard, fed the same records.

`config.log.csv`: <workdir>/metrics.csv, one row per finished epoch (stdlib csv, as Keras's
CSVLogger writes it).
"""

import csv
import io
import pathlib

import jax

from dnn_jax import files

CSV_FILE = 'metrics.csv'


def write_csv(workdir, history: list) -> None:
  """<workdir>/metrics.csv from the run's per-epoch records; process 0 only.

  Rewritten whole (atomically) after every epoch from the checkpointed history, so a resumed
  run's file never keeps a row its checkpoint does not (an epoch written before a kill).
  """
  if jax.process_index() != 0 or not history:
    return
  columns = list(dict.fromkeys(key for record in history for key in record))
  text = io.StringIO()
  writer = csv.DictWriter(text, fieldnames=columns, restval='', lineterminator='\n')
  writer.writeheader()
  writer.writerows(history)
  files.write_text(pathlib.Path(workdir) / CSV_FILE, text.getvalue())
