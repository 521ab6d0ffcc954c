"""Keras-named layers (Dense, Dropout, Flatten) as Flax NNX modules, with Keras initializers."""

import jax
import jax.numpy as jnp
from flax import nnx

ACTIVATIONS = {
  'relu': jax.nn.relu,
  'elu': jax.nn.elu,
  'gelu': jax.nn.gelu,
  'sigmoid': jax.nn.sigmoid,
  'tanh': jnp.tanh,
  'linear': lambda x: x,
}

# Keras defaults: glorot_uniform kernels, zero biases.
glorot_uniform = nnx.initializers.glorot_uniform()
zeros = nnx.initializers.zeros_init()


class Dense(nnx.Module):
  """Keras Dense: x @ kernel + bias, then the activation."""

  def __init__(self, in_features: int, features: int, activation: str, *, rngs: nnx.Rngs):
    self.linear = nnx.Linear(
      in_features, features, kernel_init=glorot_uniform, bias_init=zeros, rngs=rngs
    )
    self.activation = activation
    self.features = features

  def __call__(self, x_BxD, example_keys_B=None):
    return ACTIVATIONS[self.activation](self.linear(x_BxD))


class Dropout(nnx.Module):
  """Inverted dropout with one key per example, so masks do not depend on device count."""

  def __init__(self, rate: float, salt: int):
    self.rate = rate
    self.salt = salt  # tells this layer's mask apart from the other dropout layers'

  def __call__(self, x_Bx, example_keys_B=None):
    if example_keys_B is None or self.rate == 0.0:
      return x_Bx  # evaluation
    keep = 1.0 - self.rate

    def mask(key):
      return jax.random.bernoulli(jax.random.fold_in(key, self.salt), keep, x_Bx.shape[1:])

    keep_Bx = jax.vmap(mask)(example_keys_B)
    return jnp.where(keep_Bx, x_Bx / keep, 0.0).astype(x_Bx.dtype)


class Flatten(nnx.Module):
  """Keras Flatten: every axis but the batch into one."""

  def __call__(self, x_Bx, example_keys_B=None):
    return x_Bx.reshape(x_Bx.shape[0], -1)


class Sequential(nnx.Module):
  """Layers applied in order; `layers` is what the Keras-style summary walks."""

  def __init__(self, layers):
    self.layers = nnx.List(layers)

  def __call__(self, x, example_keys_B=None):
    for layer in self.layers:
      x = layer(x, example_keys_B)
    return x
