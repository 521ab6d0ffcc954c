"""Pure per-device training and evaluation functions: scanned steps over device-resident data.

Each function here sees one device's shard of the batch and reduces across devices over
parallel.DATA_AXIS; parallel.data_parallel maps it over the mesh. Batches are index arrays
into the device-resident dataset, padded with -1 (masked) so no example is ever dropped.
"""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from dnn_jax.parallel import DATA_AXIS

PAD = -1  # index of a padding slot in a batch; its example is masked out of loss and metrics


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training (a pytree)."""

  step: jax.Array
  params: nnx.State
  model_state: nnx.State  # non-trainable model variables, e.g. BatchNorm statistics
  opt_state: Any


def init_state(model: nnx.Module, tx: optax.GradientTransformation):
  """(graphdef, TrainState) of a freshly built model."""
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  state = TrainState(jnp.zeros([], jnp.int32), params, model_state, tx.init(params))
  return graphdef, state


def to_inputs(images_Bx: jax.Array) -> jax.Array:
  """uint8 images -> float32 in [0, 1], as the tutorial's x / 255."""
  return images_Bx.astype(jnp.float32) / 255.0


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
  return to_inputs(images_N[safe_B]), labels_N[safe_B], safe_B, mask_B


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


def make_train_chunk(graphdef, tx: optax.GradientTransformation):
  """Per-device fn(state, images_N, labels_N, order_SxB, dropout_key) -> (state, metric sums).

  Runs S optimizer steps in one lax.scan. The gradient is that of the global batch's mean
  loss: each device differentiates sum(local losses) / global count, then grads are summed.
  """

  def train_step(carry, idx_B, images_N, labels_N, dropout_key):
    state, sums = carry
    x_Bx, y_B, safe_B, mask_B = _gather(images_N, labels_N, idx_B)
    # Dropout keys come from the example's index, so masks do not depend on the device count.
    keys_B = jax.vmap(jax.random.fold_in, (None, 0))(dropout_key, safe_B)
    global_count = jax.lax.psum(jnp.sum(mask_B), DATA_AXIS).astype(jnp.float32)

    def loss_fn(params):
      model = nnx.merge(graphdef, params, state.model_state)
      logits_BxK = model(x_Bx, keys_B)
      batch_sums = _metric_sums(logits_BxK, y_B, mask_B)
      _, _, model_state = nnx.split(model, nnx.Param, ...)
      return batch_sums['loss'] / global_count, (batch_sums, model_state)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, (batch_sums, model_state)), grads = grad_fn(state.params)
    grads = jax.lax.psum(grads, DATA_AXIS)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    state = TrainState(state.step + 1, params, model_state, opt_state)
    return (state, _add(sums, batch_sums)), None

  def train_chunk(state, images_N, labels_N, order_SxB, dropout_key):
    step = lambda carry, idx_B: train_step(carry, idx_B, images_N, labels_N, dropout_key)
    (state, sums), _ = jax.lax.scan(step, (state, _zero_sums()), order_SxB)
    return state, jax.lax.psum(sums, DATA_AXIS)

  return train_chunk


def make_evaluate(graphdef):
  """Per-device fn(state, images_N, labels_N, order_SxB) -> metric sums over the split."""

  def evaluate(state, images_N, labels_N, order_SxB):
    model = nnx.merge(graphdef, state.params, state.model_state)

    def eval_step(sums, idx_B):
      x_Bx, y_B, _, mask_B = _gather(images_N, labels_N, idx_B)
      return _add(sums, _metric_sums(model(x_Bx), y_B, mask_B)), None

    sums, _ = jax.lax.scan(eval_step, _zero_sums(), order_SxB)
    return jax.lax.psum(sums, DATA_AXIS)

  return evaluate


def means(sums) -> dict:
  """Host-side {'loss', 'accuracy'} from fetched metric sums."""
  count = max(float(sums['count']), 1.0)
  return {'loss': float(sums['loss']) / count, 'accuracy': float(sums['correct']) / count}
