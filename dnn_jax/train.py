"""train_and_evaluate(config, workdir): the run around a Trainer: workdir, lock, signals, logs."""

import contextlib
import io
import pathlib
import shutil

import jax

from dnn_jax import checkpoint, configs, experiment, logs, parallel, preemption, trainer
from dnn_jax import workdir as workdir_lib
from dnn_jax.errors import DiskFullError, UserError


def train_and_evaluate(config, workdir) -> dict:
  """Trains config's experiment into workdir, resuming from its latest checkpoint if any.

  Args:
    config: an experiment ConfigDict (see experiments/base.py).
    workdir: metrics.json and checkpoints/ go here; created if missing.

  Returns:
    What it writes to metrics.json; with 'preempted' if a SIGTERM/SIGINT stopped it.
  """
  configs.validated(config)  # a bad value must not leave an empty workdir behind
  logs.check_installed(config.log)
  created = not pathlib.Path(workdir).exists()
  workdir = workdir_lib.prepare(workdir)
  try:
    parallel.initialize_distributed(config.distributed)  # before the lock: process 0 holds it
    with workdir_lib.locked(workdir), preemption.StopRequests() as stop:
      exp = experiment.setup(config)
      ckpts = checkpoint.Checkpoints(
        workdir / 'checkpoints',
        config.checkpoint.max_to_keep,
        config.checkpoint.async_save,
        stream=exp.data.streams is not None,
        keep_improvement=config.early_stopping.restore_best_weights,
      )
      try:
        result = _run(trainer.Trainer(exp, checkpoints=ckpts, stop=stop, workdir=workdir))
      except BaseException:
        ckpts.close(raise_errors=False)  # the first error is the one to report
        raise
      ckpts.close()  # waits for the saves in flight
      return result
  except DiskFullError as e:
    raise DiskFullError(e.activity, e.detail, _last_complete(workdir)) from e
  except UserError:
    if created and not any(p.name.isdigit() for p in workdir.glob('checkpoints/*')):
      shutil.rmtree(workdir, ignore_errors=True)  # nothing worth keeping: leave no trace
    raise


def _run(run: trainer.Trainer) -> dict:
  """Starts or resumes, compiles, and trains; in a multi-process run process 0 speaks."""
  quiet = jax.process_index() != 0
  run.restore()  # before compiling: a checkpoint that does not fit fails fast
  run.compile()
  with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
    _print_header(run)
    # TensorBoard and config.log.wandb's run (process 0 writes); closed, as is a cut-short trace.
    sinks = logs.open_sinks(run.workdir, run.exp, run.progress)
    with sinks as run.board, contextlib.closing(run.profiler):
      return run.fit()


def _last_complete(workdir: pathlib.Path) -> str:
  """Where a run that stopped for a full disk can resume from, for its error line."""
  step = checkpoint.last_complete_step(workdir / 'checkpoints')
  if step is None:
    return 'no checkpoint is complete yet'
  return f'the last complete checkpoint is {workdir / "checkpoints" / str(step)}'


def _print_header(run: trainer.Trainer) -> None:
  exp = run.exp
  config, mesh = exp.config, exp.mesh
  print(exp.learner.summary)
  print(
    f'Train on {exp.num_train:,} samples, validate on '
    f'{exp.data.splits.size("validation"):,} samples; {mesh.size} '
    f'{mesh.devices.flat[0].platform} device(s), batch {config.batch_size} '
    f'({config.batch_size // mesh.size} per device), {exp.steps_per_epoch} steps per epoch in '
    f'{len(exp.calls)} compiled call(s); compiled in {run.programs.seconds:.1f}s',
    flush=True,
  )
  if run.start_note:
    print(run.start_note, flush=True)
