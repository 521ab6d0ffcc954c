"""Submit a training run to SLURM with submitit (or run it here), requeued when preempted.

  python -m dnn_jax.launch --config experiments/X.py --workdir runs/X \\
      --nodes 2 --gpus_per_node 8 --partition gpu --time_min 240
  python -m dnn_jax.launch --config experiments/X.py --workdir runs/X --executor local

One process per GPU (one per node without GPUs); the processes find each other through
SLURM's variables (dnn_jax.parallel). SLURM sends USR2 config --signal_delay_s before the time
limit: every process saves the same step, and the job is requeued and resumes from the
workdir. SIGTERM (scancel, or preemption, which SLURM requeues itself) saves and exits.
Any config value can be overridden, e.g. --config.optimizer.learning_rate=3e-4.
"""

import json
import pathlib
import signal
import socket
import sys

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from dnn_jax import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags; defined only when run as a command (the job imports this too)."""
  config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
  flags.DEFINE_string('workdir', None, 'Run directory (default: runs/<config file name>).')
  flags.DEFINE_enum('executor', 'auto', ['auto', 'slurm', 'local'], 'auto: SLURM if sbatch exists.')
  flags.DEFINE_integer('nodes', 1, 'Nodes (SLURM).')
  flags.DEFINE_integer('gpus_per_node', 0, 'GPUs per node; one process each.')
  flags.DEFINE_integer('tasks_per_node', 0, 'Processes per node (0: gpus_per_node, or 1).')
  flags.DEFINE_string('partition', '', 'SLURM partition.')
  flags.DEFINE_integer('time_min', 60, 'Time limit per submission, minutes.')
  flags.DEFINE_integer('signal_delay_s', 120, 'USR2 this long before the time limit.')
  flags.DEFINE_bool('wait', None, 'Wait for the job and print its result (default: local only).')
  flags.DEFINE_bool('report', True, 'Draw <workdir>/report/ when the run has finished.')
  flags.mark_flags_as_required(['config'])


REQUEUE_SIGNAL = 'SIGUSR2'  # submitit's: the time limit is near, or the job is preempted


class TrainJob:
  """A training run that submitit runs in every task and requeues when preempted.

  Requeuing submits the same job again: it resumes from the workdir's latest checkpoint.
  """

  def __init__(self, config_json: str, workdir: str, coordinator_port: int = 0, report=True):
    self.config_json, self.workdir, self.coordinator_port = config_json, workdir, coordinator_port
    self.report = report

  def __call__(self) -> dict:
    import submitit

    from dnn_jax import train

    config = ml_collections.ConfigDict(json.loads(self.config_json))
    job = submitit.JobEnvironment()
    if job.num_tasks > 1 and not _under_slurm(job):  # the local executor's tasks on this host
      config.distributed.coordinator_address = f'127.0.0.1:{self.coordinator_port}'
      config.distributed.num_processes = job.num_tasks
      config.distributed.process_id = job.global_rank
    requeue = signal.getsignal(signal.SIGUSR2)  # submitit's handler, until training replaces it
    result = train.train_and_evaluate(config, pathlib.Path(self.workdir))
    if result.get('preempted', {}).get('signal') == REQUEUE_SIGNAL and callable(requeue):
      requeue(signal.SIGUSR2, None)  # saved already: submitit checkpoints this job and requeues
    if self.report and 'test' in result and job.global_rank == 0:
      _draw_report(self.workdir)
    return {k: result[k] for k in ('test', 'best', 'preempted') if k in result}

  def checkpoint(self, *args, **kwargs):
    """What submitit submits again on requeue: this same job, which resumes from the workdir."""
    import submitit

    return submitit.helpers.DelayedSubmission(self)


def _draw_report(workdir: str) -> None:
  """The finished run's report, as dnn_jax.main draws it; a failure is one line, not the job's."""
  from dnn_jax.report import build

  try:
    build.report_finished_run(workdir)
  except Exception as e:  # the run's results are saved; only the pictures are missing
    print(
      f'error: the report could not be drawn ({type(e).__name__}: {e}); redraw it with '
      f'python -m dnn_jax.report --workdir {workdir}',
      file=sys.stderr,
    )


def _under_slurm(job) -> bool:
  return type(job).__name__.startswith('Slurm')


def make_executor(
  folder, executor: str, nodes: int, tasks_per_node: int, gpus_per_node: int, partition: str,
  time_min: int, signal_delay_s: int, name: str,
):  # fmt: skip
  """A submitit executor with the job's resources; 'auto' picks SLURM where sbatch exists."""
  import submitit

  cluster = None if executor == 'auto' else executor
  submitter = submitit.AutoExecutor(folder=folder, cluster=cluster)
  parameters = dict(
    nodes=nodes, tasks_per_node=tasks_per_node, timeout_min=time_min, name=name,
    stderr_to_stdout=True,
  )  # fmt: skip
  if gpus_per_node:
    parameters['gpus_per_node'] = gpus_per_node
  if submitter.cluster == 'slurm':
    parameters['slurm_signal_delay_s'] = signal_delay_s
    if partition:
      parameters['slurm_partition'] = partition
  elif nodes > 1:
    from dnn_jax.errors import ConfigError

    raise ConfigError(f'--nodes={nodes} needs SLURM (sbatch not found); use --nodes=1 here')
  submitter.update_parameters(**parameters)
  return submitter


def submit(config, workdir, *, executor='auto', nodes=1, gpus_per_node=0, tasks_per_node=0,
           partition='', time_min=60, signal_delay_s=120, report=True):  # fmt: skip
  """Submits config's training run (its report drawn at the end); returns the submitit job."""
  from dnn_jax import configs

  configs.validated(config)  # a bad value fails here, not in the queue
  workdir = pathlib.Path(workdir).absolute()
  tasks = tasks_per_node or gpus_per_node or 1
  submitter = make_executor(
    workdir / 'submitit', executor, nodes, tasks, gpus_per_node, partition, time_min,
    signal_delay_s, workdir.name,
  )  # fmt: skip
  port = _free_port() if nodes * tasks > 1 else 0
  return submitter.submit(TrainJob(config.to_json(), str(workdir), port, report))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def main(argv):
  del argv
  config_path = config_flags.get_config_filename(FLAGS['config'])
  workdir = FLAGS.workdir or str(pathlib.Path('runs') / pathlib.Path(config_path).stem)
  job = cli.run_reporting_errors(
    submit, FLAGS.config, workdir, executor=FLAGS.executor, nodes=FLAGS.nodes,
    gpus_per_node=FLAGS.gpus_per_node, tasks_per_node=FLAGS.tasks_per_node,
    partition=FLAGS.partition, time_min=FLAGS.time_min, signal_delay_s=FLAGS.signal_delay_s,
    report=FLAGS.report,
  )  # fmt: skip
  print(f'Submitted job {job.job_id}; its logs: {job.paths.stdout}', flush=True)
  wait = FLAGS.wait if FLAGS.wait is not None else job.__class__.__name__.startswith('Local')
  if wait:
    result = job.result()
    print(json.dumps(result), flush=True)
    sys.exit(0 if 'test' in result else 1)


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
