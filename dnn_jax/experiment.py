"""An experiment config turned into device-resident data, a model state and compiled steps."""

import dataclasses
import functools
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.experimental.compilation_cache import compilation_cache

from dnn_jax import configs, optim, parallel, progress, steps, summary
from dnn_jax.data import augment
from dnn_jax.data import splits as data_splits
from dnn_jax.errors import ConfigError


@dataclasses.dataclass
class Experiment:
  """Everything a run needs; setup() fills all but the compiled functions, compile() those."""

  config: Any
  mesh: jax.sharding.Mesh
  splits: data_splits.Splits
  model_summary: str
  graphdef: Any
  tx: optax.GradientTransformation
  schedule: Any
  state: steps.TrainState  # the initial state, replicated on the mesh
  arrays: dict  # split name -> (images_N, labels_N) replicated on the mesh
  eval_orders: dict  # split name -> [steps, batch] indices, sharded over the data axis
  epoch_order: Any  # jitted (shuffle_key, epoch) -> [steps, batch] indices
  shuffle_key: jax.Array
  example_key: jax.Array  # per epoch and example: dropout masks and augmentations
  chunks: list  # (first step, end step) of each compiled call in an epoch
  train_chunk: Any = None  # jitted fn(state, images, labels, order, key) -> (state, sums)
  train_chunks: dict = dataclasses.field(default_factory=dict)  # length -> compiled chunk
  evaluators: dict = dataclasses.field(default_factory=dict)  # split -> compiled evaluate
  compile_seconds: float = 0.0
  data_seconds: float = 0.0  # reading the splits (from the array cache once prepared)

  @property
  def num_train(self) -> int:
    return len(self.splits.train['label'])

  @property
  def steps_per_epoch(self) -> int:
    return self.chunks[-1][1]

  def chunks_from(self, step_in_epoch: int) -> list:
    """The epoch's compiled calls from step_in_epoch on (a resumed run may start mid-call)."""
    ends = [b for _, b in self.chunks if b > step_in_epoch]
    return list(zip([step_in_epoch, *ends[:-1]], ends, strict=True))

  def compiled_chunk(self, length: int):
    """train_chunk compiled for `length` steps (compiled on first use, time counted)."""
    if length not in self.train_chunks:
      start = time.perf_counter()
      order = self.epoch_order(self.shuffle_key, 0)[:length]
      args = (self.state, *self.arrays['train'], order, self.example_key)
      self.train_chunks[length] = self.train_chunk.lower(*args).compile()
      self.compile_seconds += time.perf_counter() - start
    return self.train_chunks[length]


def use_compilation_cache(directory: str) -> None:
  """Keeps every compiled program in directory, so a later run of the same shapes skips XLA.

  Trusted like code: whoever can write the directory can make this process run anything.
  """
  path = str(pathlib.Path(directory).absolute())
  if jax.config.jax_compilation_cache_dir == path:
    return
  try:
    pathlib.Path(path).mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise ConfigError(
      f'config.compilation_cache_dir={directory!r} cannot be created ({e.strerror}); pick '
      f"another directory, or '' for none"
    ) from e
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)  # small programs too
  compilation_cache.reset_cache()  # this process may have looked for a cache already


def setup(config) -> Experiment:
  """Validates config, loads the data onto the mesh and builds the model; compiles nothing."""
  config = configs.validated(config)
  parallel.initialize_distributed(config.distributed)
  if config.compilation_cache_dir:
    use_compilation_cache(config.compilation_cache_dir)
  mesh = parallel.make_mesh(config.num_devices)
  parallel.check_divisible(config.batch_size, mesh)
  start = time.perf_counter()
  splits = data_splits.load(config.data)
  data_seconds = time.perf_counter() - start
  num_train = len(splits.train['label'])
  if config.batch_size > num_train:
    raise ConfigError(
      f'config.batch_size={config.batch_size} is larger than the {num_train:,} training '
      f'examples of {config.data.name}; use at most {num_train}'
    )
  model = configs.create_model(config)
  model_summary = summary.format_summary(model, splits.image_shape, title=config.model.name)
  steps_per_epoch = -(-num_train // config.batch_size)
  tx = optim.create(config.optimizer, steps_per_epoch, config.num_epochs)
  graphdef, state = steps.init_state(model, tx)
  del model  # from here on the model lives as (graphdef, state) on the mesh

  replicated = parallel.replicated(mesh)
  state = parallel.put(state, replicated)
  named = {'train': splits.train, 'validation': splits.validation}
  if not splits.validation_is_test:
    named['test'] = splits.test
  arrays = {k: parallel.put((v['image'], v['label']), replicated) for k, v in named.items()}
  order_sharding = parallel.batch_sharded(mesh, batch_axis=1)
  eval_batch = -(-config.eval_batch_size // mesh.size) * mesh.size  # padded: any size works
  eval_orders = {
    k: parallel.put(steps.batch_order(len(v['label']), eval_batch), order_sharding)
    for k, v in named.items()
    if k != 'train'
  }
  epoch_order = jax.jit(
    functools.partial(steps.epoch_order, num_examples=num_train, batch_size=config.batch_size),
    out_shardings=order_sharding,
  )
  shuffle_key, example_key = run_keys(config.seed)
  return Experiment(
    config=config,
    mesh=mesh,
    splits=splits,
    model_summary=model_summary,
    graphdef=graphdef,
    tx=tx,
    schedule=optim.learning_rate_schedule(config.optimizer, steps_per_epoch, config.num_epochs),
    state=state,
    arrays=arrays,
    eval_orders=eval_orders,
    epoch_order=epoch_order,
    shuffle_key=shuffle_key,
    example_key=example_key,
    chunks=_chunks(config, steps_per_epoch),
    data_seconds=data_seconds,
  )


def _chunks(config, steps_per_epoch: int) -> list:
  size = config.steps_per_call or steps_per_epoch
  if not config.steps_per_call and progress.shows_bar(config.progress):
    size = -(-steps_per_epoch // progress.BAR_UPDATES_PER_EPOCH)  # a bar that moves
  if config.checkpoint.every_steps:  # a save can only happen between compiled calls
    size = min(size, config.checkpoint.every_steps)
  return [(a, min(a + size, steps_per_epoch)) for a in range(0, steps_per_epoch, size)]


def compile_evaluators(exp: Experiment) -> None:
  """Compiles evaluation ahead of time; equal-sized splits share one executable."""
  start = time.perf_counter()
  wrap = parallel.pmap_evaluate if exp.config.parallel == 'pmap' else parallel.shard_evaluate
  evaluate = steps.make_evaluate(
    exp.graphdef, augmenter(exp.config.eval_augment), jnp.dtype(exp.config.dtype)
  )
  evaluate = wrap(evaluate, exp.mesh)
  by_shape = {}
  for name, order in exp.eval_orders.items():
    shapes = (exp.arrays[name][0].shape, order.shape)
    if shapes not in by_shape:
      by_shape[shapes] = evaluate.lower(exp.state, *exp.arrays[name], order).compile()
    exp.evaluators[name] = by_shape[shapes]
  exp.compile_seconds += time.perf_counter() - start


def compile_training(exp: Experiment) -> None:
  """Compiles the training calls of an epoch ahead of time: compile time is reported apart."""
  train_chunk = steps.make_train_chunk(
    exp.graphdef,
    exp.tx,
    augmenter(exp.config.augment),
    skip_nonfinite=exp.config.on_nonfinite == 'skip_step',
    compute_dtype=jnp.dtype(exp.config.dtype),
  )
  wrap = parallel.pmap_train_chunk if exp.config.parallel == 'pmap' else parallel.shard_train_chunk
  exp.train_chunk = wrap(train_chunk, exp.mesh)
  for a, b in exp.chunks:
    exp.compiled_chunk(b - a)
  compile_evaluators(exp)


def build(config) -> Experiment:
  """setup() and compile_training(): an experiment ready to train from its initial state."""
  exp = setup(config)
  compile_training(exp)
  return exp


def run_keys(seed: int):
  """(shuffle key, example key) of a run: its data order and its per-example randomness."""
  root_key = jax.random.key(seed)
  return jax.random.fold_in(root_key, 1), jax.random.fold_in(root_key, 2)


def augmenter(chain_config):
  """fn(keys_B, images_BxHxWxC) -> images for a chain config; None when it is empty."""
  if not chain_config:
    return None
  chain = augment.make_chain(chain_config)
  return lambda keys_B, images: augment.augment_batch(chain, keys_B, images)


def evaluate(exp: Experiment, state, split: str) -> dict:
  """{'loss', 'accuracy'} over the whole split ('validation' or 'test')."""
  if split == 'test' and exp.splits.validation_is_test:
    split = 'validation'
  sums = exp.evaluators[split](state, *exp.arrays[split], exp.eval_orders[split])
  return steps.means(jax.device_get(sums))
