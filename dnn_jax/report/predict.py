"""A restored model's inputs and logits over a whole split: batched and jitted, as evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dnn_jax import experiment, steps


def batched(fn, arrays_N: tuple, batch_size: int) -> np.ndarray:
  """fn over arrays_N in batches, the last one padded (so fn compiles once), concatenated."""
  num = len(arrays_N[0])
  outputs = []
  for start in range(0, num, batch_size):
    chunk = [a[start : start + batch_size] for a in arrays_N]
    short = batch_size - len(chunk[0])
    if short:
      chunk = [np.concatenate([c, np.repeat(c[-1:], short, axis=0)]) for c in chunk]
    outputs.append(np.asarray(fn(*chunk))[: batch_size - short])
  return np.concatenate(outputs)


def model_inputs(images_N: np.ndarray, eval_augment, batch_size: int) -> np.ndarray:
  """float32 inputs in [0, 1] as evaluation feeds them (config.eval_augment applied)."""
  augmenter = experiment.augmenter(eval_augment)
  if augmenter is None:
    return images_N.astype(np.float32) / 255.0

  @jax.jit
  def inputs(images_Bx, index_B):
    # As steps.make_evaluate: deterministic preprocessing, keyed by the example's index.
    keys_B = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.key(0), index_B)
    return steps.to_inputs(images_Bx, augmenter, keys_B)

  index_N = np.arange(len(images_N), dtype=np.int32)
  return batched(inputs, (images_N, index_N), batch_size)


def logits(model: nnx.Module, x_N: np.ndarray, batch_size: int, dtype: str = 'float32'):
  """[N, classes] float32 logits of the model in evaluation mode."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  compute = jnp.dtype(dtype)

  @jax.jit
  def forward(params, rest, x_Bx):  # weights as arguments, not constants baked into the program
    net = nnx.merge(graphdef, steps.cast_floats(params, compute), rest)
    return net(x_Bx.astype(compute)).astype(jnp.float32)

  return batched(lambda x_Bx: forward(params, rest, x_Bx), (x_N,), batch_size)
