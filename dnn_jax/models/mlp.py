"""The tutorial's multilayer perceptron: Dense-relu-Dropout blocks and a linear head."""

import math

from flax import nnx

from dnn_jax.models import layers


class MLP(layers.Sequential):
  """Flatten -> [Dense(h, activation) -> Dropout(rate)] per hidden size -> Dense(classes)."""

  def __init__(
    self,
    *,
    input_shape,
    num_classes: int,
    hidden_sizes=(512, 512, 512),
    activation: str = 'relu',
    dropout: float = 0.2,
    rngs: nnx.Rngs,
  ):
    stack = [layers.Flatten()]
    features = math.prod(input_shape)
    for hidden in hidden_sizes:
      stack.append(layers.Dense(features, hidden, activation, rngs=rngs))
      if dropout > 0:
        stack.append(layers.Dropout(dropout))
      features = hidden
    # Logits: softmax lives in the loss, as in optax (Keras folds it into the last layer).
    stack.append(layers.Dense(features, num_classes, 'linear', rngs=rngs))
    super().__init__(stack)


Model = MLP  # config.model.name = 'mlp'
