"""Per-epoch log sinks beside metrics.json and TensorBoard, fed the same records.

`config.log.csv`: <workdir>/metrics.csv, one row per finished epoch (stdlib csv, as Keras's
CSVLogger writes it). `config.log.wandb`: a Weights & Biases run (WandbRun).
"""

import csv
import importlib.util
import io
import json
import os
import pathlib
import secrets

import jax

from dnn_jax import files, tensorboard
from dnn_jax.errors import ConfigError, UserError

CSV_FILE = 'metrics.csv'
WANDB_DIR = 'wandb'  # <workdir>/wandb: W&B's own files, and WANDB_RUN_FILE
WANDB_RUN_FILE = 'dnn_jax_run.json'  # the W&B run's id and the last steps it was sent


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


def check_installed(log_config) -> None:
  """Raises ConfigError if config.log.wandb is set and wandb is not installed (nothing imported)."""
  if log_config.wandb and importlib.util.find_spec('wandb') is None:
    raise ConfigError(
      "config.log.wandb=True needs the wandb package: pip install wandb (or -e '.[wandb]'), "
      'or set --config.log.wandb=False'
    )


def open_sinks(workdir, exp, run) -> 'Sinks':
  """TensorBoard's writer, and with config.log.wandb a W&B run, opened at run's step."""
  sinks = [tensorboard.Writer(workdir, exp, run)]
  if exp.config.log.wandb:
    sinks.append(WandbRun(workdir, exp, run))
  return Sinks(sinks)


class Sinks:
  """The sinks the trainer writes each epoch's record and the test metrics to, as one.

  A context manager: leaving it closes them (finishes the W&B run, failed on an exception).
  """

  def __init__(self, sinks: list):
    self.sinks = sinks

  def write_epoch(self, record: dict) -> None:
    for sink in self.sinks:
      sink.write_epoch(record)

  def write_test(self, test: dict, step: int) -> None:
    for sink in self.sinks:
      sink.write_test(test, step)

  def __enter__(self) -> 'Sinks':
    return self

  def __exit__(self, kind, error, traceback) -> None:
    for sink in self.sinks:
      if hasattr(sink, 'close'):
        sink.close(failed=kind is not None)


class WandbRun:
  """config.log.wandb: the run's epoch records and test metrics in one W&B run per workdir.

  Logged at the run's optimizer step, with the config as the W&B config; process 0 only; files
  in <workdir>/wandb. The id is made once and kept there (WANDB_RUN_FILE) with the last steps
  logged: a resumed run continues the same W&B run (resume='allow'), logs each epoch once, and
  adds the epochs its checkpoint holds that a crash left unlogged. W&B runs offline (files only;
  `wandb sync <workdir>/wandb` uploads them) unless WANDB_MODE is set or it finds credentials
  (WANDB_API_KEY, `wandb login`): a run never waits on a login prompt or the network unasked.
  Console capture is off: the progress bar stays out of W&B's logs.
  """

  def __init__(self, workdir, exp, run):
    """Starts or resumes the W&B run of workdir, at run's (a trainer.Progress) step."""
    self._run = None
    if jax.process_index() != 0:
      return
    import wandb  # only here: config.log.wandb runs alone pay its import

    directory = pathlib.Path(workdir) / WANDB_DIR
    directory.mkdir(exist_ok=True)
    self._path = directory / WANDB_RUN_FILE
    if run.step and self._path.exists():  # resuming: the W&B run this workdir began
      self._logged = json.loads(self._path.read_text())
    else:  # from step 0: a W&B run of its own (random: a path may recur on another machine)
      self._logged = {'id': secrets.token_hex(6), 'epoch_step': -1, 'test_step': -1}
    self._steps_per_epoch = exp.steps_per_epoch
    mode = _mode()
    offline = mode == 'offline'
    try:
      self._run = wandb.init(
        project=exp.config.log.wandb_project,
        id=self._logged['id'],
        name=pathlib.Path(workdir).name,
        dir=str(workdir),
        resume='allow',
        mode=mode,
        config=json.loads(exp.config.to_json()),
        settings=wandb.Settings(console='off', silent=offline),
      )
    except wandb.Error as e:
      raise UserError(
        f'W&B could not start the run ({e}); set WANDB_MODE=offline to log offline, or '
        f'--config.log.wandb=False'
      ) from None
    self._save()
    if offline:
      print(f'W&B: offline run in {directory}; upload it with `wandb sync {directory}`')
    for record in run.history:  # epochs a crash left unlogged
      self.write_epoch(record)

  def write_epoch(self, record: dict) -> None:
    """Logs a metrics.json history record at the step of its epoch's end, once."""
    step = record['epoch'] * self._steps_per_epoch
    if self._run is None or step <= self._logged['epoch_step']:
      return
    self._logged['epoch_step'] = step
    self._save()  # before logging: a crash in between loses the point rather than doubling it
    self._run.log(record, step=step)

  def write_test(self, test: dict, step: int) -> None:
    """Logs the test metrics (test_loss, test_accuracy) at step, once."""
    if self._run is None or step <= self._logged['test_step']:
      return
    self._logged['test_step'] = step
    self._save()
    self._run.log({f'test_{k}': v for k, v in test.items()}, step=step)

  def close(self, failed: bool = False) -> None:
    if self._run is not None:
      self._run.finish(exit_code=1 if failed else 0)
      self._run = None

  def _save(self) -> None:
    files.write_json(self._path, self._logged)


def _mode() -> str:
  """$WANDB_MODE, else online with credentials, else offline; passed to wandb.init, since
  wandb reads the environment once per process."""
  mode = os.environ.get('WANDB_MODE') or ('online' if _has_credentials() else 'offline')
  mode = {'dryrun': 'offline', 'run': 'online'}.get(mode, mode)  # wandb's older names
  if mode not in ('online', 'offline', 'disabled', 'shared'):
    raise UserError(f'WANDB_MODE={mode!r} is not a W&B mode; use online, offline or disabled')
  return mode


def _has_credentials() -> bool:
  """Whether W&B would find an API key without a prompt or the network: the environment, or
  the .netrc entry `wandb login` writes (read with wandb's own reader where it has one)."""
  if os.environ.get('WANDB_API_KEY') or os.environ.get('WANDB_IDENTITY_TOKEN_FILE'):
    return True
  try:
    import wandb
    from wandb.sdk.lib.wbauth import wbnetrc

    return wbnetrc.read_netrc_auth(host=wandb.Settings().base_url) is not None
  except Exception:  # another wandb version's internals, a malformed .netrc: stay offline
    return False
