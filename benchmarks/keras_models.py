"""The tutorial's models written in Keras 3: references for parity tests and benchmark peers."""

import keras
from keras import layers as kl

from dnn_jax.models import cnn


def mlp(hidden_sizes, input_shape=(28, 28, 1), num_classes=10, dropout=0.2):
  """Flatten, Dense-relu-Dropout per hidden size, Dense logits."""
  stack = [keras.Input(input_shape), kl.Flatten()]
  for hidden in hidden_sizes:
    stack += [kl.Dense(hidden, activation='relu'), kl.Dropout(dropout)]
  return keras.Sequential([*stack, kl.Dense(num_classes), *float32_output()])


def float32_output():
  """Under a mixed policy, a float32 cast of the logits, as Keras's mixed-precision guide does."""
  if keras.mixed_precision.global_policy().compute_dtype == 'float32':
    return []
  return [kl.Activation('linear', dtype='float32')]


def cnn_from_tokens(layer_line, input_shape, num_classes=10, kernel_size=3):
  """The Keras model a dnn_jax `cnn` layer line describes, with a Dense logits head."""
  stack = [keras.Input(input_shape)]
  for match in cnn.parse(layer_line):
    token = match.group(1)
    if match.group(2):
      padding = 'same' if match.group(3) else 'valid'
      stack.append(kl.Conv2D(int(match.group(2)), kernel_size, padding=padding, activation='relu'))
    elif token == 'maxpool':
      stack.append(kl.MaxPooling2D(2))
    elif match.group(4):
      stack.append(kl.Dropout(float(match.group(4))))
    elif token == 'flatten':
      stack.append(kl.Flatten())
    else:
      stack.append(kl.Dense(int(match.group(5)), activation='relu'))
  return keras.Sequential([*stack, kl.Dense(num_classes), *float32_output()])


def _resnet_layer(
  x, filters, kernel_size=3, strides=1, activation='relu', bn=True, conv_first=True
):
  conv = kl.Conv2D(
    filters, kernel_size, strides=strides, padding='same', kernel_initializer='he_normal',
    kernel_regularizer=keras.regularizers.l2(1e-4),
  )  # fmt: skip
  if conv_first:
    x = conv(x)
    x = kl.BatchNormalization()(x) if bn else x
    return kl.Activation(activation)(x) if activation else x
  x = kl.BatchNormalization()(x) if bn else x
  x = kl.Activation(activation)(x) if activation else x
  return conv(x)


def resnet_v2(depth, input_shape=(32, 32, 3), num_classes=10):
  """keras-team's cifar10_resnet.py `resnet_v2`, verbatim in structure."""
  filters_in, blocks = 16, (depth - 2) // 9
  inputs = keras.Input(input_shape)
  x = _resnet_layer(inputs, filters_in)
  for stage in range(3):
    for block in range(blocks):
      activation, bn, strides = 'relu', True, 1
      if stage == 0:
        filters_out = filters_in * 4
        if block == 0:
          activation, bn = None, False
      else:
        filters_out = filters_in * 2
        if block == 0:
          strides = 2
      y = _resnet_layer(x, filters_in, 1, strides, activation, bn, conv_first=False)
      y = _resnet_layer(y, filters_in, conv_first=False)
      y = _resnet_layer(y, filters_out, 1, conv_first=False)
      if block == 0:
        x = _resnet_layer(x, filters_out, 1, strides, activation=None, bn=False)
      x = kl.add([x, y])
    filters_in = filters_out
  x = kl.Activation('relu')(kl.BatchNormalization()(x))
  x = kl.Flatten()(kl.AveragePooling2D(pool_size=8)(x))
  outputs = kl.Dense(num_classes, kernel_initializer='he_normal')(x)
  outputs = kl.Activation('softmax', dtype='float32')(outputs)  # float32 under a mixed policy
  return keras.Model(inputs, outputs)


def from_config(model_config, input_shape, num_classes):
  """The Keras twin of a dnn_jax model config (mlp, cnn or resnet_v2); outputs are logits
  except resnet_v2's, which ends in softmax as keras-team's does."""
  if model_config.name == 'mlp':
    return mlp(model_config.hidden_sizes, input_shape, num_classes, model_config.dropout)
  if model_config.name == 'cnn':
    return cnn_from_tokens(model_config.layers, input_shape, num_classes)
  if model_config.name == 'resnet_v2':
    return resnet_v2(model_config.depth, input_shape, num_classes)
  raise ValueError(f'no Keras twin of model {model_config.name!r}; twins.check says so first')


def keras_optimizer(keras, opt, steps_per_epoch: int = 1, num_epochs: int = 1):
  """Keras's optimizer of the same name, hyperparameters and learning-rate schedule."""
  rate = keras_learning_rate(keras, opt, steps_per_epoch, num_epochs)
  if opt.name == 'adam':
    return keras.optimizers.Adam(rate, opt.beta_1, opt.beta_2, opt.epsilon)
  if opt.name == 'rmsprop':
    return keras.optimizers.RMSprop(rate, opt.rho, 0.0, opt.epsilon)  # no momentum
  if opt.name == 'adadelta':
    return keras.optimizers.Adadelta(rate, opt.rho, opt.epsilon)
  if opt.name == 'sgd':
    return keras.optimizers.SGD(rate, opt.momentum, opt.nesterov)
  raise ValueError(f'no Keras twin of optimizer {opt.name!r}; twins.check says so first')


def keras_learning_rate(keras, opt, steps_per_epoch: int, num_epochs: int):
  """The rate, or Keras's schedule equal to dnn_jax.optim's of the same name, step by step."""
  schedules = keras.optimizers.schedules
  if opt.schedule == 'constant':
    return opt.learning_rate
  if opt.schedule == 'inverse_time':  # Keras 2's `decay`: lr / (1 + decay * iterations)
    return schedules.InverseTimeDecay(opt.learning_rate, decay_steps=1, decay_rate=opt.decay)
  if opt.schedule == 'piecewise':
    # optax scales from the boundary step on, Keras after it: one step earlier here.
    boundaries = [int(e * steps_per_epoch) - 1 for e in opt.boundaries_epochs]
    values = [opt.learning_rate * opt.decay_factor**i for i in range(len(boundaries) + 1)]
    return schedules.PiecewiseConstantDecay(boundaries, values)
  if opt.schedule == 'cosine':
    return schedules.CosineDecay(opt.learning_rate, max(num_epochs * steps_per_epoch, 1))
  raise ValueError(f'no Keras twin of schedule {opt.schedule!r}; twins.check_fit_recipe says so')


def augmentation(augment):
  """Keras's preprocessing layers for dnn_jax's shift/flip chain (twins.AUGMENT_OPS), in order."""
  stack = []
  for name, op in augment.items():
    if name == 'random_shift':  # ImageDataGenerator's shift ranges: bilinear, U(-f, f) of the size
      stack.append(kl.RandomTranslation(op.height, op.width, fill_mode=op.fill))
    elif name == 'flip_left_right':
      stack.append(kl.RandomFlip('horizontal'))
    else:
      raise ValueError(f'no Keras twin of augmentation {name!r}; twins.check_fit_recipe says so')
  return keras.Sequential(stack)


def compile_model(config, model, jit_compile: str = 'auto'):
  """Keras's compile with the experiment's optimizer and loss."""
  from_logits = config.model.name != 'resnet_v2'  # keras-team's ResNet ends in softmax
  model.compile(
    optimizer=keras_optimizer(keras, config.optimizer),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
    metrics=['accuracy'],
    jit_compile={'auto': 'auto', 'true': True, 'false': False}[jit_compile],
  )
