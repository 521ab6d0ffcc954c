"""Trials of one shape trained as one program: states stacked on a trial axis, steps vmapped.

Trials whose configs differ only in seed, model.dropout and optimizer.learning_rate share the
model's graph. Each trial's dropout rate is a KeepProbability in its model state and its
learning rate scales its updates from its optimizer state, so both are traced inputs: a vmap
of steps.make_train_chunk over the stacked states trains them all in one compiled program.
Every trial draws its data order and dropout keys from its seed exactly as a Trainer does, so
a trial trains as it would alone (tests/test_sweep.py checks it against dnn_jax.trainer).
"""

import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import PartitionSpec as P

from dnn_jax import experiment, metrics, models, optim, parallel, steps
from dnn_jax.models import layers

TRACED = ('seed', 'model.dropout', 'optimizer.learning_rate')  # may differ within a group


def shape_key(config) -> str:
  """Equal for trials that can train together: their configs but for the TRACED keys."""
  plain = config.to_dict()
  del plain['seed'], plain['optimizer']['learning_rate']
  plain['model'].pop('dropout', None)  # an MLP's; a CNN's rates are in its layers string
  return json.dumps(plain, sort_keys=True, default=str)


def scaled_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
  """config's optimizer at learning rate 1, then scaled by a per-trial rate in its state.

  Every schedule is linear in the rate, so this equals optim.create at the trial's rate.
  """
  unit = config.optimizer.to_dict()
  unit['learning_rate'] = 1.0
  unit = type(config.optimizer)(unit)
  return optax.chain(
    optim.create(unit, steps_per_epoch, config.num_epochs),
    optax.inject_hyperparams(optax.scale)(step_size=1.0),
  )


def _with_learning_rate(opt_state, learning_rate: float):
  inner, scale = opt_state
  return inner, scale._replace(hyperparams={'step_size': jnp.asarray(learning_rate, jnp.float32)})


@dataclasses.dataclass
class Group:
  """Trials of one shape, their stacked state and the programs that train and evaluate them."""

  configs: list
  graphdef: object
  tx: optax.GradientTransformation
  state: steps.TrainState  # every leaf has a leading trial axis
  shared_seed: bool  # one data order and one set of dropout keys serves every trial
  train: object = None
  evaluators: dict = dataclasses.field(default_factory=dict)
  compile_seconds: float = 0.0

  @property
  def size(self) -> int:
    return len(self.configs)


def build_group(exp: experiment.Experiment, trial_configs: list) -> Group:
  """Each trial's initial state, as experiment.setup would build it, stacked on a trial axis."""
  first = trial_configs[0]
  if any(shape_key(c) != shape_key(first) for c in trial_configs):
    raise ValueError('a group takes trials that differ only in ' + ', '.join(TRACED))
  tx = scaled_optimizer(first, exp.steps_per_epoch)
  # Dropout layers exist where any trial drops; a trial with rate 0 keeps every unit.
  model_config = first.model.to_dict()
  if 'dropout' in model_config:
    model_config['dropout'] = max(c.model.dropout for c in trial_configs)
  graphdef, states = None, []
  for config in trial_configs:
    model = models.create(
      type(first.model)(model_config),
      input_shape=exp.data.splits.image_shape,
      num_classes=exp.data.splits.num_classes,
      seed=config.seed,
    )
    for _, module in nnx.iter_graph(model):
      if isinstance(module, layers.Dropout) and 'dropout' in model_config:
        module.hold_rate_in_state(config.model.dropout)
    graphdef, state = steps.init_state(model, tx)
    lr = config.optimizer.learning_rate
    states.append(state.replace(opt_state=_with_learning_rate(state.opt_state, lr)))
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
  return Group(
    configs=list(trial_configs),
    graphdef=graphdef,
    tx=tx,
    state=parallel.put(stacked, parallel.replicated(exp.mesh)),
    shared_seed=len({c.seed for c in trial_configs}) == 1,
  )


def epoch_inputs(exp: experiment.Experiment, group: Group, epoch: int):
  """(order, epoch keys): [S, B] and one key when the seed is shared, else per trial."""
  configs = group.configs[:1] if group.shared_seed else group.configs
  orders, keys = [], []
  for config in configs:
    shuffle_key, example_key = experiment.run_keys(config.seed)
    orders.append(exp.data.epoch_order(shuffle_key, epoch))
    keys.append(jax.random.fold_in(example_key, epoch))
  if group.shared_seed:
    return orders[0], keys[0]
  order_sharding = parallel.batch_sharded(exp.mesh, batch_axis=2)
  return parallel.put(jnp.stack(orders), order_sharding), jnp.stack(keys)


def compile_group(exp: experiment.Experiment, group: Group, cache: dict | None = None) -> None:
  """Compiles the group's epoch and evaluation programs, or takes them from cache."""
  key = (group.graphdef, group.size, group.shared_seed)
  if cache is not None and key in cache:
    group.train, group.evaluators = cache[key]
    return
  start = time.perf_counter()
  order, keys = epoch_inputs(exp, group, 0)
  train = train_program(exp, group)
  group.train = train.lower(group.state, *exp.data.arrays['train'], order, keys).compile()
  group.evaluators = compile_evaluators(exp, group)
  group.compile_seconds = time.perf_counter() - start
  if cache is not None:
    cache[key] = (group.train, group.evaluators)


def train_program(exp: experiment.Experiment, group: Group):
  """The group's jitted fn(state, images, labels, order, keys) -> (state, sums), uncompiled.

  It compiles for the length of the order it is lowered with: an epoch, or shorter calls.
  """
  config = group.configs[0]
  chunk = steps.make_train_chunk(
    group.graphdef,
    group.tx,
    experiment.augmenter(config.augment),
    skip_nonfinite=config.on_nonfinite == 'skip_step',
    compute_dtype=jnp.dtype(config.dtype),
  )
  batched = None if group.shared_seed else 0
  per_device = jax.vmap(chunk, in_axes=(0, None, None, batched, batched))
  trial_axis = () if group.shared_seed else (None,)
  order_spec = P(*trial_axis, None, parallel.DATA_AXIS)
  return parallel.sharded(
    per_device, exp.mesh, (P(), P(), P(), order_spec, P()), (P(), P()), donate_argnums=0
  )


def compile_evaluators(exp: experiment.Experiment, group: Group) -> dict:
  """Split name -> the compiled evaluation of every trial on it."""
  config = group.configs[0]
  evaluate = steps.make_evaluate(
    group.graphdef, experiment.augmenter(config.eval_augment), jnp.dtype(config.dtype)
  )
  evaluate = parallel.sharded(
    jax.vmap(evaluate, in_axes=(0, None, None, None)),
    exp.mesh,
    in_specs=(P(), P(), P(), P(None, parallel.DATA_AXIS)),
    out_specs=P(),
  )
  evaluators = {}
  for name, eval_order in exp.data.eval_orders.items():
    args = (group.state, *exp.data.arrays[name], eval_order)
    evaluators[name] = evaluate.lower(*args).compile()
  return evaluators


def train_epoch(exp: experiment.Experiment, group: Group, epoch: int) -> dict:
  """One epoch of every trial; the fetched metric sums, each with a leading trial axis."""
  order, keys = epoch_inputs(exp, group, epoch)
  group.state, sums = group.train(group.state, *exp.data.arrays['train'], order, keys)
  return jax.device_get(sums)


def evaluate(exp: experiment.Experiment, group: Group, split: str) -> list:
  """Per trial {'loss', 'accuracy'} on 'validation' or 'test'."""
  if split == 'test' and exp.data.splits.validation_is_test:
    split = 'validation'
  sums = jax.device_get(
    group.evaluators[split](group.state, *exp.data.arrays[split], exp.data.eval_orders[split])
  )
  return [steps.means({k: v[i] for k, v in sums.items()}) for i in range(group.size)]


def run_group(exp: experiment.Experiment, trial_configs: list, cache: dict | None = None) -> list:
  """Trains the trials together; per trial its metrics and its share of the group's seconds."""
  group = build_group(exp, trial_configs)
  compile_group(exp, group, cache)
  start = time.perf_counter()
  for epoch in range(trial_configs[0].num_epochs):
    sums = train_epoch(exp, group, epoch)
  train_seconds = time.perf_counter() - start
  return _results(exp, group, sums, train_seconds)


def _results(exp, group: Group, sums: dict, train_seconds: float) -> list:
  val = evaluate(exp, group, 'validation')
  test = None if exp.data.splits.validation_is_test else evaluate(exp, group, 'test')
  return [
    _result(
      {k: sums[k][i] for k in metrics.SUMS},
      val[i],
      test and test[i],
      train_seconds / group.size,
      group.compile_seconds / group.size,
      group.size,
    )
    for i in range(group.size)
  ]


def _result(sums, val, test, train_seconds, compile_seconds, group_size) -> dict:
  """A trial's row: the last epoch's training metrics, validation (and test) metrics, times."""
  result = {
    **metrics.epoch_metrics(sums, val),
    'train_seconds': train_seconds,
    'compile_seconds': compile_seconds,
    'group_size': group_size,
    'nonfinite_steps': int(sums['nonfinite']),
  }
  if test is not None:
    result['test_accuracy'] = test['accuracy']
  return result
