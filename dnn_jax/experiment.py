"""An experiment config made concrete: device-resident data, the model and optimizer, and
the compiled programs; all immutable once built."""

import dataclasses
import functools
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.experimental.compilation_cache import compilation_cache

from dnn_jax import configs, optim, parallel, steps, summary
from dnn_jax.data import augment
from dnn_jax.data import splits as data_splits
from dnn_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Data:
  """The splits, on the device mesh, and the orders they are walked in."""

  splits: data_splits.Splits
  arrays: dict  # split name -> (images_N, labels_N) replicated on the mesh
  eval_orders: dict  # split name -> [steps, batch] indices, sharded over the data axis
  epoch_order: Any  # jitted (shuffle_key, epoch) -> [steps, batch] indices
  seconds: float  # reading the splits (from the array cache once prepared)

  @property
  def num_train(self) -> int:
    return len(self.splits.train['label'])


@dataclasses.dataclass(frozen=True)
class Learner:
  """The model and its optimizer: the graph, the update rule and the initial state."""

  graphdef: Any
  tx: optax.GradientTransformation
  schedule: Any  # step -> learning rate
  initial_state: steps.TrainState  # replicated on the mesh
  summary: str  # the Keras-style model summary


@dataclasses.dataclass(frozen=True)
class Programs:
  """The compiled training calls (by length in steps) and evaluations (by split)."""

  train_calls: dict  # length -> fn(state, images, labels, order, key) -> (state, sums)
  evaluators: dict  # split -> fn(state, images, labels, order) -> sums
  seconds: float  # compiling them


@dataclasses.dataclass(frozen=True)
class Experiment:
  """A config made concrete: its mesh, data, model and optimizer, and its calls per epoch."""

  config: Any
  mesh: jax.sharding.Mesh
  data: Data
  learner: Learner
  calls: tuple  # (first step, end step) of each compiled call in an epoch

  @property
  def num_train(self) -> int:
    return self.data.num_train

  @property
  def steps_per_epoch(self) -> int:
    return self.calls[-1][1]

  def calls_from(self, step_in_epoch: int) -> list:
    """The epoch's compiled calls from step_in_epoch on (a resumed run may start mid-call)."""
    ends = [b for _, b in self.calls if b > step_in_epoch]
    return list(zip([step_in_epoch, *ends[:-1]], ends, strict=True))


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
  named = {'train': splits.train, 'validation': splits.validation}
  if not splits.validation_is_test:
    named['test'] = splits.test
  order_sharding = parallel.batch_sharded(mesh, batch_axis=1)
  eval_batch = -(-config.eval_batch_size // mesh.size) * mesh.size  # padded: any size works
  data = Data(
    splits=splits,
    arrays={k: parallel.put((v['image'], v['label']), replicated) for k, v in named.items()},
    eval_orders={
      k: parallel.put(steps.batch_order(len(v['label']), eval_batch), order_sharding)
      for k, v in named.items()
      if k != 'train'
    },
    epoch_order=jax.jit(
      functools.partial(steps.epoch_order, num_examples=num_train, batch_size=config.batch_size),
      out_shardings=order_sharding,
    ),
    seconds=data_seconds,
  )
  learner = Learner(
    graphdef=graphdef,
    tx=tx,
    schedule=optim.learning_rate_schedule(config.optimizer, steps_per_epoch, config.num_epochs),
    initial_state=parallel.put(state, replicated),
    summary=model_summary,
  )
  return Experiment(config, mesh, data, learner, calls_per_epoch(config, steps_per_epoch))


def calls_per_epoch(config, steps_per_epoch: int) -> tuple:
  """(first, end) step of each compiled call: config.steps_per_call each (0: the whole epoch).

  Set by the config alone, so a run computes the same whether or not a terminal shows a bar.
  """
  size = config.steps_per_call or steps_per_epoch
  if config.checkpoint.every_steps:  # a save can only happen between compiled calls
    size = min(size, config.checkpoint.every_steps)
  return tuple((a, min(a + size, steps_per_epoch)) for a in range(0, steps_per_epoch, size))


def compile_programs(exp: Experiment, *, train: bool = True, resume_at: int = 0) -> Programs:
  """Compiles ahead of time the epoch's training calls (and, resuming at a step inside an
  epoch, the shorter first call) and the evaluations; equal-sized splits share an executable.
  """
  start = time.perf_counter()
  config, mesh, data, learner = exp.config, exp.mesh, exp.data, exp.learner
  state = learner.initial_state
  train_calls = {}
  if train:
    train_chunk = steps.make_train_chunk(
      learner.graphdef,
      learner.tx,
      augmenter(config.augment),
      skip_nonfinite=config.on_nonfinite == 'skip_step',
      compute_dtype=jnp.dtype(config.dtype),
    )
    train_chunk = parallel.train_program(train_chunk, mesh, config.parallel)
    shuffle_key, example_key = run_keys(config.seed)
    order = data.epoch_order(shuffle_key, 0)
    for a, b in [*exp.calls, *exp.calls_from(resume_at % exp.steps_per_epoch)]:
      if b - a not in train_calls:
        args = (state, *data.arrays['train'], order[: b - a], example_key)
        train_calls[b - a] = train_chunk.lower(*args).compile()
  evaluate_fn = parallel.evaluate_program(
    steps.make_evaluate(learner.graphdef, augmenter(config.eval_augment), jnp.dtype(config.dtype)),
    mesh,
    config.parallel,
  )
  by_shape, evaluators = {}, {}
  for name, order in data.eval_orders.items():
    shapes = (data.arrays[name][0].shape, order.shape)
    if shapes not in by_shape:
      by_shape[shapes] = evaluate_fn.lower(state, *data.arrays[name], order).compile()
    evaluators[name] = by_shape[shapes]
  return Programs(train_calls, evaluators, time.perf_counter() - start)


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


def evaluate(exp: Experiment, programs: Programs, state, split: str) -> dict:
  """{'loss', 'accuracy'} over the whole split ('validation' or 'test')."""
  if split == 'test' and exp.data.splits.validation_is_test:
    split = 'validation'
  data = exp.data
  sums = programs.evaluators[split](state, *data.arrays[split], data.eval_orders[split])
  return steps.means(jax.device_get(sums))
