"""Device mesh and data parallelism: batch sharded over the `data` axis, params replicated."""

import importlib.util
import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dnn_jax import xla_options
from dnn_jax.errors import ConfigError

DATA_AXIS = 'data'


def initialize_distributed(distributed_config) -> None:
  """jax.distributed.initialize for a multi-process run; nothing for a single process.

  Inside SLURM, Open MPI, a Kubernetes indexed job or a TPU slice, JAX finds the coordinator,
  the process count and this process's id by itself (one line names the environment); the
  values in config.distributed, or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
  JAX_PROCESS_ID, override it. Must run before JAX touches a device.
  """
  if jax.distributed.is_initialized():
    return
  address = distributed_config.coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS')
  count = distributed_config.num_processes or int(os.environ.get('JAX_NUM_PROCESSES', '0'))
  index = distributed_config.process_id
  # A Kubernetes indexed job numbers its pods: the index is the process id.
  default_index = os.environ.get('JAX_PROCESS_ID', os.environ.get('JOB_COMPLETION_INDEX', '-1'))
  index = index if index >= 0 else int(default_index)
  cluster = None if address else detect_cluster(distributed_config.get('cluster', 'auto'))
  if not address and cluster is None:
    return
  if address and (not count >= 1 or not 0 <= index < count):
    raise ConfigError(
      f'a multi-process run at {address} needs config.distributed.num_processes >= 1 and '
      f'0 <= process_id < num_processes (got {count} and {index}); set both, or '
      f'JAX_NUM_PROCESSES and JAX_PROCESS_ID'
    )
  # CPU devices of different processes reduce over gloo (GPUs use NCCL whatever this says).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(
    address or None,
    num_processes=count or None,
    process_id=index if index >= 0 else None,
    cluster_detection_method=(cluster.name or None) if cluster else None,
  )
  if cluster:
    print(
      f'Cluster: {_name(cluster)} found; process {jax.process_index()} of '
      f'{jax.process_count()}, coordinator {_coordinator()}',
      flush=True,
    )


def detect_cluster(wanted: str = 'auto'):
  """JAX's cluster environment that this process runs in with other processes, or None.

  wanted: 'auto' (any), 'none', or one of JAX's names (slurm, ompi, k8s, gke_tpu, ...).
  """
  if wanted == 'none':
    return None
  from jax._src import clusters  # JAX's detectors, as jax.distributed.initialize() uses them

  for env in clusters.ClusterEnv._cluster_types:
    if wanted == 'auto' and env.opt_in_only_method:
      continue
    if wanted not in ('auto', _name(env)):
      continue
    # JAX's Kubernetes detector needs the kubernetes package; without it, it only warns.
    if _name(env) == 'k8s' and importlib.util.find_spec('kubernetes') is None:
      continue
    if env.is_env_present() and env.get_process_count() > 1:
      return env
  return None


def cluster_names() -> list:
  """The names config.distributed.cluster accepts."""
  from jax._src import clusters

  return ['auto', 'none', *(_name(env) for env in clusters.ClusterEnv._cluster_types)]


def _name(env) -> str:
  return env.name or env.__name__.removesuffix('Cluster').lower()  # JAX's K8sCluster has none


def _coordinator() -> str:
  state = jax._src.distributed.global_state
  return getattr(state, 'coordinator_address', None) or '?'


def put(tree, sharding: NamedSharding):
  """jax.device_put, also onto devices of other processes: each passes the same host data."""
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def put_leaf(x):
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree.map(put_leaf, tree)


def all_processes_agree(ok: bool) -> bool:
  """True when ok holds on every process (a collective: every process must call it)."""
  if jax.process_count() == 1:
    return ok
  return bool(multihost_utils.process_allgather(np.asarray(ok)).all())


def any_process(flag: bool) -> bool:
  """True when flag holds on any process (a collective: every process must call it)."""
  if jax.process_count() == 1:
    return flag
  return bool(multihost_utils.process_allgather(np.asarray(flag)).any())


def make_mesh(num_devices: int = 0) -> Mesh:
  """A 1-D mesh over the first num_devices devices (0: all of them)."""
  available = jax.devices()
  count = num_devices or len(available)
  if count > len(available):
    raise ConfigError(
      f'num_devices={count} but only {len(available)} {available[0].platform} device(s) exist; '
      f'lower --config.num_devices (on CPU, JAX_NUM_CPU_DEVICES=N simulates N devices)'
    )
  return Mesh(available[:count], (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array (params, optimizer state, device-resident datasets)."""
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
  """The array is split along batch_axis across the data axis."""
  return NamedSharding(mesh, P(*([None] * batch_axis), DATA_AXIS))


def data_parallel(per_device_fn, mesh: Mesh, in_specs, out_specs):
  """Runs per_device_fn on each device's shard; it reduces across devices with DATA_AXIS."""
  return jax.shard_map(
    per_device_fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False
  )


def sum_over_devices(tree, axis_name: str = DATA_AXIS):
  """psum over the device axis, skipped on one device, where XLA would still copy the tree."""
  if jax.lax.axis_size(axis_name) == 1:
    return tree
  return jax.lax.psum(tree, axis_name)


def check_divisible(batch_size: int, mesh: Mesh, what: str = 'batch_size') -> None:
  """Raises ConfigError when the global batch cannot be split evenly across the mesh."""
  count = mesh.shape[DATA_AXIS]
  if batch_size % count:
    lower, upper = batch_size - batch_size % count, batch_size - batch_size % count + count
    raise ConfigError(
      f'{what}={batch_size} is not divisible by the {count} devices; '
      f'use a multiple of {count} (e.g. {lower or upper} or {upper}) or --config.num_devices'
    )


def sharded(per_device_fn, mesh: Mesh, in_specs, out_specs, donate_argnums=()):
  """jit(shard_map): the one way a per-device fn becomes a program over the mesh."""
  return xla_options.jit(
    data_parallel(per_device_fn, mesh, in_specs, out_specs), donate_argnums=donate_argnums
  )


def train_program(train_chunk, mesh: Mesh, mode: str = 'sharded', streamed: bool = False):
  """steps.make_train_chunk's fn over the mesh: state replicated and donated, order sharded.

  mode: 'sharded' (jit of shard_map) or 'pmap' (the design card's jax.pmap); same results.
  streamed: images and labels are the call's batches, sharded like the order (else the
  device-resident split, replicated).
  """
  if mode == 'pmap':
    split = (1, 2, 3) if streamed else (3,)
    return _pmapped(train_chunk, mesh, 5, split, out_axes=(None, None), donate_argnums=0)
  data = P(None, DATA_AXIS) if streamed else P()
  in_specs = (P(), data, data, P(None, DATA_AXIS), P())
  return sharded(train_chunk, mesh, in_specs, out_specs=(P(), P()), donate_argnums=0)


def evaluate_program(evaluate, mesh: Mesh, mode: str = 'sharded', streamed: bool = False):
  """steps.make_evaluate's fn over the mesh: state replicated, order (and streamed data) sharded."""
  if mode == 'pmap':
    return _pmapped(evaluate, mesh, 4, (1, 2, 3) if streamed else (3,), out_axes=None)
  data = P(None, DATA_AXIS) if streamed else P()
  return sharded(evaluate, mesh, in_specs=(P(), data, data, P(None, DATA_AXIS)), out_specs=P())


def _pmapped(per_device_fn, mesh: Mesh, num_args: int, split: tuple, out_axes, donate_argnums=()):
  """jit of jax.pmap over the mesh's devices; the arguments in split ([steps, batch, ...]) are
  split along their batch axis and the rest are replicated, as in the shard_map versions."""
  count = mesh.size
  in_axes = tuple(1 if i in split else None for i in range(num_args))
  mapped = jax.pmap(
    per_device_fn,
    axis_name=DATA_AXIS,
    in_axes=in_axes,
    out_axes=out_axes,
    devices=list(mesh.devices.flat),
  )

  def call(*args):
    # Device d takes batch columns [d * batch/count, (d + 1) * batch/count), as with shard_map.
    args = [
      x.reshape(x.shape[0], count, x.shape[1] // count, *x.shape[2:]) if i in split else x
      for i, x in enumerate(args)
    ]
    return mapped(*args)

  return xla_options.jit(call, donate_argnums=donate_argnums)
