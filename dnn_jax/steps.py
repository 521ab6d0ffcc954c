"""Pure per-device training and evaluation functions: scanned steps over the batches of a call.

Each function here sees one device's shard of the batch and reduces across devices over
parallel.DATA_AXIS; parallel.data_parallel maps it over the mesh. Batches are index arrays
[steps, batch] into the split, padded with -1 (masked) so no example is ever dropped. The
split is either device-resident (images_N, labels_N: the batch is gathered on the device) or
streamed (images_SxBx, labels_SxB: the call's batches, already gathered on the host, in the
order's layout); the two give the same numbers.
"""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from dnn_jax import parallel
from dnn_jax.models import layers
from dnn_jax.parallel import DATA_AXIS

PAD = -1  # index of a padding slot in a batch; its example is masked out of loss and metrics
AUGMENT_SALT = 1 << 20  # an example's augmentation key: fold_in(its key, AUGMENT_SALT)


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training (a pytree)."""

  step: jax.Array
  params: nnx.State
  model_state: nnx.State  # non-trainable model variables, e.g. BatchNorm statistics
  opt_state: Any
  ema: Any = None  # config.ema.decay > 0: an exponential moving average of params; else None


def init_state(model: nnx.Module, tx: optax.GradientTransformation, ema: bool = False):
  """(graphdef, TrainState) of a freshly built model; ema: keep an EMA of params from these."""
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  ema_params = jax.tree.map(jnp.copy, params) if ema else None
  state = TrainState(jnp.zeros([], jnp.int32), params, model_state, tx.init(params), ema_params)
  return graphdef, state


def eval_params(state: TrainState) -> nnx.State:
  """The weights that evaluation, the best checkpoint and the report use: the EMA when kept."""
  return state.params if state.ema is None else state.ema


def to_inputs(images_Bx: jax.Array, augment=None, keys_B=None) -> jax.Array:
  """uint8 images -> (augmented on the 0..255 scale) -> float32 in [0, 1], as x / 255."""
  x_Bx = images_Bx.astype(jnp.float32)
  if augment is not None:
    aug_keys_B = jax.vmap(jax.random.fold_in, (0, None))(keys_B, AUGMENT_SALT)
    x_Bx = augment(aug_keys_B, x_Bx)
  return x_Bx / 255.0


def batch_order(num_examples: int, batch_size: int, perm_N=None) -> jax.Array:
  """Indices [steps, batch]: perm_N (or 0..N-1) padded with PAD to whole batches."""
  steps = -(-num_examples // batch_size)
  idx_N = jnp.arange(num_examples, dtype=jnp.int32) if perm_N is None else perm_N
  pad = jnp.full([steps * batch_size - num_examples], PAD, jnp.int32)
  return jnp.concatenate([idx_N.astype(jnp.int32), pad]).reshape(steps, batch_size)


def epoch_order(shuffle_key, epoch, num_examples: int, batch_size: int) -> jax.Array:
  """This epoch's shuffled batches, a pure function of (key, epoch): reproducible on resume."""
  perm_N = jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), num_examples)
  return batch_order(num_examples, batch_size, perm_N)


def _gather(images_N, labels_N, idx_B):
  mask_B = idx_B != PAD
  safe_B = jnp.where(mask_B, idx_B, 0)
  return images_N[safe_B], labels_N[safe_B], safe_B, mask_B


def _batches(images, labels, order_SxB):
  """(scanned xs, fn(x) -> (images_Bx, labels_B, safe index_B, mask_B)) for either layout."""
  if labels.ndim == 1:  # device-resident: scan over the order, gather each batch
    return order_SxB, lambda idx_B: _gather(images, labels, idx_B)
  # Streamed: the host gathered each batch already (padding slots hold example 0, as above).
  return (images, labels, order_SxB), lambda x: (x[0], x[1], jnp.maximum(x[2], 0), x[2] != PAD)


def _metric_sums(logits_BxK, labels_B, mask_B):
  losses_B = optax.softmax_cross_entropy_with_integer_labels(logits_BxK, labels_B)
  correct_B = jnp.argmax(logits_BxK, -1) == labels_B
  return {
    'loss': jnp.sum(jnp.where(mask_B, losses_B, 0.0)),
    'correct': jnp.sum(correct_B & mask_B).astype(jnp.float32),
    'count': jnp.sum(mask_B).astype(jnp.float32),
  }


def _zero_sums():
  return {k: jnp.zeros([], jnp.float32) for k in ('loss', 'correct', 'count')}


def _add(a, b):
  return jax.tree.map(jnp.add, a, b)


def all_finite(tree) -> jax.Array:
  """True if no array of tree holds a NaN or Inf."""
  leaves = jax.tree.leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else True


def keep_if(condition, new, old):
  """new where condition (a traced bool) holds, else old: leaf by leaf, without branching."""
  return jax.tree.map(lambda a, b: jnp.where(condition, a, b), new, old)


def cast_floats(tree, dtype):
  """tree with its floating arrays cast to dtype (integer arrays untouched)."""
  return jax.tree.map(
    lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
  )


def make_train_chunk(
  graphdef,
  tx: optax.GradientTransformation,
  augment=None,
  skip_nonfinite: bool = False,
  compute_dtype=jnp.float32,
  ema_decay: float = 0.0,
  ema_warmup: bool = True,
  accumulate: int = 1,
):
  """Per-device fn(state, images, labels, order_SxB, epoch_key) -> (state, metric sums).

  Runs S optimizer steps in one lax.scan. The gradient is that of the global batch's mean
  loss: each device differentiates sum(local losses) / global count, then grads are summed.
  augment(keys_B, images_BxHxWxC) -> images, on the 0..255 scale, runs inside the step.
  compute_dtype: the layers compute in it (e.g. bfloat16) from float32 params, which get
  float32 gradients and updates; BatchNorm statistics, the loss and the penalty stay float32.

  The sums count the steps whose loss is not finite in 'nonfinite' and give the first one's
  step number (1-based) in 'first_nonfinite' (-1: none); those steps are left out of the metric
  sums. With skip_nonfinite, such a step, or one whose new params are not finite, changes
  nothing: params, optimizer and BatchNorm state stay as they were. That costs a pass over
  the params per step, so without it (the caller stops at the first bad loss) none is made.

  state.ema (when not None) moves toward the new params after every update, as
  ema = decay * ema + (1 - decay) * params; with gradient accumulation (accumulate = k, the
  optimizer updating once every k steps) only after the steps that change the params. With
  ema_warmup the n-th update uses min(decay, (1 + n) / (10 + n)), as
  tf.train.ExponentialMovingAverage(num_updates=n): the initial weights fade within a few
  hundred updates instead of weighing decay**n (0.999**469 = 0.63 after an MNIST epoch).
  """

  def train_step(carry, batch, epoch_key):
    state, sums = carry
    images_Bx, y_B, safe_B, mask_B = batch
    # Random keys come from the example's index, so dropout masks and augmentations do not
    # depend on the device count or on the example's place in the batch.
    keys_B = jax.vmap(jax.random.fold_in, (None, 0))(epoch_key, safe_B)
    x_Bx = to_inputs(images_Bx, augment, keys_B)
    train = layers.Train(keys_B, mask_B, DATA_AXIS)
    global_count = jax.lax.psum(jnp.sum(mask_B), DATA_AXIS).astype(jnp.float32)
    num_devices = jax.lax.psum(1, DATA_AXIS)

    def loss_fn(params):
      # copy: fresh Variables at this trace level, so BatchNorm may update its statistics.
      computing = params if compute_dtype == jnp.float32 else cast_floats(params, compute_dtype)
      model = nnx.merge(graphdef, computing, state.model_state, copy=True)
      logits_BxK = model(x_Bx.astype(compute_dtype), train).astype(jnp.float32)
      batch_sums = _metric_sums(logits_BxK, y_B, mask_B)
      # Gradients are summed over devices: each adds its share of the weight penalty.
      weights = model if computing is params else nnx.merge(graphdef, params, state.model_state)
      penalty = layers.total_loss_penalty(weights) / num_devices
      _, _, model_state = nnx.split(model, nnx.Param, ...)
      return batch_sums['loss'] / global_count + penalty, (batch_sums, model_state)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (batch_sums, model_state)), grads = grad_fn(state.params)
    grads, loss = parallel.sum_over_devices((grads, loss))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # Every device reaches the same verdict: loss and params are identical across the mesh.
    finite = jnp.isfinite(loss)
    if skip_nonfinite:
      finite &= all_finite(params)
      params, model_state, opt_state = keep_if(
        finite, (params, model_state, opt_state), (state.params, state.model_state, state.opt_state)
      )
    ema = state.ema
    if ema is not None:
      decay = ema_decay
      if ema_warmup:
        updates = ((state.step + 1) // accumulate).astype(jnp.float32)  # this one included
        decay = jnp.minimum(decay, (1.0 + updates) / (10.0 + updates))
      ema_moved = optax.incremental_update(params, ema, step_size=1.0 - decay)
      updated = finite if skip_nonfinite else None  # None: every step updates the params
      if accumulate > 1:  # the optimizer applies its update on every k-th step only
        applied = (state.step + 1) % accumulate == 0
        updated = applied if updated is None else updated & applied
      ema = ema_moved if updated is None else keep_if(updated, ema_moved, ema)
    state = TrainState(state.step + 1, params, model_state, opt_state, ema)
    batch_sums = jax.tree.map(lambda x: jnp.where(finite, x, 0.0), batch_sums)
    first = jnp.where((sums['first_nonfinite'] < 0) & ~finite, state.step, sums['first_nonfinite'])
    sums = {
      **_add({k: sums[k] for k in batch_sums}, batch_sums),
      'nonfinite': sums['nonfinite'] + (~finite).astype(jnp.float32),
      'first_nonfinite': first,
    }
    return (state, sums), None

  def train_chunk(state, images, labels, order_SxB, epoch_key):
    xs, batch = _batches(images, labels, order_SxB)
    step = lambda carry, x: train_step(carry, batch(x), epoch_key)
    sums = {
      **_zero_sums(),
      'nonfinite': jnp.zeros([], jnp.float32),
      'first_nonfinite': jnp.full([], -1, jnp.int32),
    }
    (state, sums), _ = jax.lax.scan(step, (state, sums), xs)
    # The non-finite verdicts are already global; only the metric sums need reducing.
    metric_sums = jax.lax.psum({k: sums[k] for k in ('loss', 'correct', 'count')}, DATA_AXIS)
    return state, {**metric_sums, **{k: sums[k] for k in ('nonfinite', 'first_nonfinite')}}

  return train_chunk


def make_evaluate(graphdef, augment=None, compute_dtype=jnp.float32):
  """Per-device fn(state, images, labels, order_SxB) -> metric sums over the split (or call).

  augment, if given, is deterministic preprocessing (e.g. CLAHE) applied to every image.
  """

  def evaluate(state, images, labels, order_SxB):
    weights = cast_floats(eval_params(state), compute_dtype)
    model = nnx.merge(graphdef, weights, state.model_state)
    xs, batch = _batches(images, labels, order_SxB)

    def eval_step(sums, x):
      images_Bx, y_B, safe_B, mask_B = batch(x)
      keys_B = None
      if augment is not None:  # deterministic preprocessing: any fixed keys will do
        keys_B = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.key(0), safe_B)
      x_Bx = to_inputs(images_Bx, augment, keys_B)
      logits_BxK = model(x_Bx.astype(compute_dtype)).astype(jnp.float32)
      return _add(sums, _metric_sums(logits_BxK, y_B, mask_B)), None

    sums, _ = jax.lax.scan(eval_step, _zero_sums(), xs)
    return jax.lax.psum(sums, DATA_AXIS)

  return evaluate


@jax.jit
def state_is_finite(state: TrainState) -> jax.Array:
  """True if params, BatchNorm statistics, optimizer state and EMA hold no NaN or Inf."""
  return all_finite((state.params, state.model_state, state.opt_state, state.ema))


def means(sums) -> dict:
  """Host-side {'loss', 'accuracy'} from fetched metric sums."""
  count = max(float(sums['count']), 1.0)
  return {'loss': float(sums['loss']) / count, 'accuracy': float(sums['correct']) / count}
