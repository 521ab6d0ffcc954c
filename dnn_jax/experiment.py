"""An experiment config made concrete: the data (on the devices, or streamed), the model and
optimizer, and the compiled programs; all immutable once built."""

import dataclasses
import functools
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental.compilation_cache import compilation_cache

from dnn_jax import callbacks, configs, optim, parallel, steps, summary
from dnn_jax.data import augment
from dnn_jax.data import pipeline as data_pipeline
from dnn_jax.data import splits as data_splits
from dnn_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Data:
  """The splits, on the device mesh or streamed to it, and the orders they are walked in."""

  splits: Any  # data.splits.Splits (arrays) or, streaming, data.splits.Sources
  arrays: dict | None  # split name -> (images_N, labels_N) replicated on the mesh; or None
  streams: dict | None  # streaming: split name -> data.stream.SplitStream; or None
  eval_orders: dict  # split name -> [steps, batch] indices, sharded over the data axis
  epoch_order: Any  # jitted (shuffle_key, epoch) -> [steps, batch] indices
  seconds: float  # reading the splits (from the array cache once prepared); 0 streaming

  @property
  def num_train(self) -> int:
    return self.splits.size('train')

  @property
  def pipeline(self) -> str:
    return 'device' if self.streams is None else 'grain'

  def train_inputs(self, num_steps: int) -> tuple:
    """(images, labels) for a training call: the split, or the call's streamed batches."""
    if self.streams is None:
      return self.arrays['train']
    return self.streams['train'].next_call(num_steps)

  def start_epoch(self, shuffle_key, epoch: int, first_step: int, state=None) -> None:
    """Streaming: starts reading the epoch's batches from first_step (or a saved state)."""
    if self.streams is not None:
      order = host_epoch_order(shuffle_key, epoch, self.num_train, self.streams['train'].batch)
      self.streams['train'].start(order, epoch, first_step, state)


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
  evaluators: dict  # split -> {call length: fn(state, images, labels, order) -> sums}
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
  """Validates config, loads the data onto the mesh (or opens it to stream) and builds the
  model; compiles nothing."""
  config = configs.validated(config)
  parallel.initialize_distributed(config.distributed)
  if config.compilation_cache_dir:
    use_compilation_cache(config.compilation_cache_dir)
  mesh = parallel.make_mesh(config.num_devices)
  parallel.check_divisible(config.batch_size, mesh)
  start = time.perf_counter()
  pipeline, why = _choose_pipeline(config.data, mesh)
  if why:
    print(why, flush=True)
  streaming = pipeline == 'grain'
  splits = (data_splits.open_sources if streaming else data_splits.load)(config.data)
  data_seconds = 0.0 if streaming else time.perf_counter() - start
  num_train = splits.size('train')
  if config.batch_size > num_train:
    raise ConfigError(
      f'config.batch_size={config.batch_size} is larger than the {num_train:,} training '
      f'examples of {config.data.name}; use at most {num_train}'
    )
  model = configs.create_model(config)
  model_summary = summary.format_summary(model, splits.image_shape, title=config.model.name)
  steps_per_epoch = -(-num_train // config.batch_size)
  tx, schedule = optimizer(config, steps_per_epoch)
  graphdef, state = steps.init_state(model, tx, ema=config.ema.decay > 0)
  del model  # from here on the model lives as (graphdef, state) on the mesh

  replicated = parallel.replicated(mesh)
  names = ['train', 'validation'] + ([] if splits.validation_is_test else ['test'])
  order_sharding = parallel.batch_sharded(mesh, batch_axis=1)
  eval_batch = -(-config.eval_batch_size // mesh.size) * mesh.size  # padded: any size works
  arrays = streams = None
  calls = calls_per_epoch(
    config, steps_per_epoch, stream_steps(config.data, config.batch_size) if streaming else 0
  )
  if streaming:
    batches = {k: config.batch_size if k == 'train' else eval_batch for k in names}
    call = {
      k: calls[0][1] if k == 'train' else stream_steps(config.data, eval_batch) for k in names
    }
    streams = {  # each reads two calls' worth of batches ahead
      k: stream_of(getattr(splits, k), mesh, batches[k], splits.image_shape, config.data.workers,
                   2 * call[k])
      for k in names
    }  # fmt: skip
  else:
    arrays = {
      k: parallel.put((getattr(splits, k)['image'], getattr(splits, k)['label']), replicated)
      for k in names
    }
  data = Data(
    splits=splits,
    arrays=arrays,
    streams=streams,
    eval_orders={
      k: parallel.put(steps.batch_order(splits.size(k), eval_batch), order_sharding)
      for k in names
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
    schedule=schedule,
    initial_state=parallel.put(state, replicated),
    summary=model_summary,
  )
  return Experiment(config, mesh, data, learner, calls)


def optimizer(config, steps_per_epoch: int):
  """(optax transformation, batch step -> learning rate) for config.

  With config.grad_accum_steps = k > 1 the optimizer updates once every k batches, with their
  mean gradient (optax.MultiSteps): k batches of batch_size take the step one batch of
  k * batch_size would (BatchNorm statistics aside: they move with every batch). Schedules
  count those updates, steps_per_epoch / k per epoch.

  With config.reduce_lr_on_plateau enabled, the updates are scaled last by the factor it has
  cut the rate by (callbacks.scale_by_plateau), which the trainer sets between epochs.
  """
  k = config.grad_accum_steps
  updates_per_epoch = steps_per_epoch / k if k > 1 else steps_per_epoch
  tx = optim.create(config.optimizer, updates_per_epoch, config.num_epochs)
  if config.reduce_lr_on_plateau.enabled:
    tx = optax.chain(tx, callbacks.scale_by_plateau())
  per_update = optim.learning_rate_schedule(config.optimizer, updates_per_epoch, config.num_epochs)
  if k == 1:
    return tx, per_update
  accumulated = optax.MultiSteps(tx, every_k_schedule=k).gradient_transformation()
  return accumulated, lambda step: per_update(step // k)


def _choose_pipeline(data_config, mesh) -> tuple[str, str]:
  """('device' or 'grain', why) for config.data.pipeline; sizes the splits first if needed."""
  if data_config.pipeline == 'grain' or (
    data_config.pipeline == 'device' and not data_config.device_budget_mb
  ):
    return data_pipeline.choose(data_config, {})
  sizes = data_pipeline.sizes(data_config)
  if sizes is None:  # a split spec that only tfds can size: open the files, read nothing
    sources = data_splits.open_sources(data_config)
    sizes = {k: sources.size(k) for k in ('train', 'validation', 'test')}
  return data_pipeline.choose(data_config, sizes, mesh.devices.flat[0])


def stream_of(source, mesh, batch: int, image_shape, workers: int, prefetch: int):
  """A data.stream.SplitStream (grain is imported by streaming runs only)."""
  from dnn_jax.data import stream

  return stream.SplitStream(source, mesh, batch, image_shape, workers, prefetch)


def stream_steps(data_config, batch: int) -> int:
  """Steps per call that keep a streamed call's input within STREAM_CALL_BYTES."""
  per_step = batch * data_pipeline.example_bytes(data_config.name)
  return max(1, data_pipeline.STREAM_CALL_BYTES // per_step)


def host_epoch_order(shuffle_key, epoch: int, num_examples: int, batch: int) -> np.ndarray:
  """steps.epoch_order computed on this host's CPU: the same indices, for the stream to read."""
  cpu = jax.local_devices(backend='cpu')[0]
  order = _epoch_order_jit(jax.device_put(shuffle_key, cpu), epoch, num_examples, batch)
  return np.asarray(order)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _epoch_order_jit(shuffle_key, epoch, num_examples, batch):
  return steps.epoch_order(shuffle_key, epoch, num_examples, batch)


def calls_per_epoch(config, steps_per_epoch: int, max_steps: int = 0) -> tuple:
  """(first, end) step of each compiled call: config.steps_per_call each (0: the whole epoch),
  at most max_steps (streaming: what fits the call's input budget; 0: no limit).

  Set by the config alone, so a run computes the same whether or not a terminal shows a bar.
  """
  size = config.steps_per_call or steps_per_epoch
  if config.checkpoint.every_steps:  # a save can only happen between compiled calls
    size = min(size, config.checkpoint.every_steps)
  if max_steps:
    size = min(size, max_steps)
  return tuple((a, min(a + size, steps_per_epoch)) for a in range(0, steps_per_epoch, size))


def compile_programs(
  exp: Experiment, *, train: bool = True, resume_at: int = 0, extra_calls=()
) -> Programs:
  """Compiles ahead of time the epoch's training calls (and, resuming at a step inside an
  epoch, the shorter first call; and extra_calls, the profiled window's cuts) and the
  evaluations; equal-sized splits share an executable.
  """
  start = time.perf_counter()
  config, mesh, data, learner = exp.config, exp.mesh, exp.data, exp.learner
  state, streamed = learner.initial_state, data.streams is not None
  train_calls = {}
  if train:
    train_chunk = steps.make_train_chunk(
      learner.graphdef,
      learner.tx,
      augmenter(config.augment),
      skip_nonfinite=config.on_nonfinite == 'skip_step',
      compute_dtype=jnp.dtype(config.dtype),
      ema_decay=config.ema.decay,
      ema_warmup=config.ema.warmup,
      accumulate=config.grad_accum_steps,
    )
    train_chunk = parallel.train_program(train_chunk, mesh, config.parallel, streamed)
    shuffle_key, example_key = run_keys(config.seed)
    order = data.epoch_order(shuffle_key, 0)
    for a, b in [*exp.calls, *exp.calls_from(resume_at % exp.steps_per_epoch), *extra_calls]:
      if b - a not in train_calls:
        args = (state, *_inputs(exp, 'train', order[: b - a]), order[: b - a], example_key)
        train_calls[b - a] = train_chunk.lower(*args).compile()
  evaluate_fn = parallel.evaluate_program(
    steps.make_evaluate(learner.graphdef, augmenter(config.eval_augment), jnp.dtype(config.dtype)),
    mesh,
    config.parallel,
    streamed,
  )
  compiled, evaluators = {}, {}  # evaluators: split -> {call length: executable}
  for name, order in data.eval_orders.items():
    evaluators[name] = {}
    for a, b in eval_calls(exp, name):
      args = (state, *_inputs(exp, name, order[a:b]), order[a:b])
      shapes = tuple(x.shape for x in args[1:])
      if shapes not in compiled:
        compiled[shapes] = evaluate_fn.lower(*args).compile()
      evaluators[name][b - a] = compiled[shapes]
  return Programs(train_calls, evaluators, time.perf_counter() - start)


def _inputs(exp: Experiment, split: str, order) -> tuple:
  """(images, labels) as a call over order takes them: the split's arrays, or their shapes."""
  data = exp.data
  if data.streams is None:
    return data.arrays[split]
  stream = data.streams[split]
  steps_, batch = order.shape
  return (
    jax.ShapeDtypeStruct((steps_, batch, *stream.image_shape), jnp.uint8, sharding=stream.sharding),
    jax.ShapeDtypeStruct((steps_, batch), jnp.int32, sharding=stream.sharding),
  )


def eval_calls(exp: Experiment, split: str) -> list:
  """(first, end) step of each evaluation call over split: the whole split, or streamed calls."""
  total = exp.data.eval_orders[split].shape[0]
  if exp.data.streams is None:
    return [(0, total)]
  size = stream_steps(exp.config.data, exp.data.streams[split].batch)
  return [(a, min(a + size, total)) for a in range(0, total, size)]


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
  data, order = exp.data, exp.data.eval_orders[split]
  evaluators = programs.evaluators[split]
  if data.streams is None:
    return steps.means(jax.device_get(evaluators[len(order)](state, *data.arrays[split], order)))
  stream = data.streams[split]
  stream.start(np.asarray(steps.batch_order(data.splits.size(split), stream.batch)), split)
  calls = [
    evaluators[b - a](state, *stream.next_call(b - a), order[a:b])
    for a, b in eval_calls(exp, split)
  ]
  stream.close()
  totals = {k: sum(np.float64(s[k]) for s in jax.device_get(calls)) for k in calls[0]}
  return steps.means(totals)
