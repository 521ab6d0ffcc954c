"""The PyTorch peer of a dnn_jax experiment: the same layers, batch and optimizer, timed.

Run by `benchmarks.throughput --peers` in a process of its own per peer:
  python -m benchmarks.torch_peer --config_json c.json --dtype=bfloat16 --compile=true
Prints one JSON object as its last line. Training is a plain loop over shuffled batches of the
experiment's training images (no augmentation, constant learning rate), every step timed until
`benchmarks.steady.Budget` has enough. --compile runs the model through torch.compile;
--dtype=bfloat16 is torch's mixed precision (autocast around forward and loss, float32
params). Evaluation is the median of --eval_repeats passes over the validation split after a
first one. PyTorch comes with the `bench` extra: pip install -e '.[bench]'.
"""

import json
import statistics
import sys
import time

import ml_collections
import numpy as np
from absl import app, flags

from benchmarks import steady

FLAGS = flags.FLAGS
flags.DEFINE_string('config_json', None, 'The experiment config, as ConfigDict JSON.')
flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'bfloat16: autocast.')
flags.DEFINE_bool('compile', False, 'Run the model through torch.compile (inductor).')
flags.DEFINE_string('compile_mode', 'default', "torch.compile's mode, e.g. max-autotune.")
flags.DEFINE_enum('memory_format', 'channels_last', ['channels_last', 'contiguous'],
                  "The convolutions' layout (torch_models says which is faster).")  # fmt: skip
steady.define_budget_flags()
flags.DEFINE_integer('eval_repeats', 3, 'Timed evaluations after a first one.')
flags.mark_flags_as_required(['config_json'])

MISSING = "error: PyTorch is not installed; pip install -e '.[bench]'"


def torch_optimizer(torch, params, opt):
  """torch's optimizer of the same name and hyperparameters, in Keras's meaning.

  Where epsilon goes differs slightly: torch's Adam adds it to sqrt(v_hat) (Keras: before bias
  correction) and its RMSprop to sqrt(v) (Keras: inside the root). Adadelta's is Keras's.
  """
  if opt.name == 'adam':
    return torch.optim.Adam(params, opt.learning_rate, (opt.beta_1, opt.beta_2), opt.epsilon)
  if opt.name == 'rmsprop':
    return torch.optim.RMSprop(
      params,
      opt.learning_rate,
      alpha=opt.rho,
      eps=opt.epsilon,  # Keras's: no momentum
    )
  if opt.name == 'adadelta':
    return torch.optim.Adadelta(params, opt.learning_rate, rho=opt.rho, eps=opt.epsilon)
  if opt.name == 'sgd':
    # torch refuses nesterov without momentum; Keras ignores it there.
    nesterov = bool(opt.nesterov and opt.momentum)
    return torch.optim.SGD(params, opt.learning_rate, momentum=opt.momentum, nesterov=nesterov)
  raise ValueError(f'no torch twin of optimizer {opt.name!r}; twins.check says so first')


def measure(
  config, dtype: str, compile_mode: str | None, memory_format: str, budget, eval_repeats: int = 3
) -> dict:
  """Train and eval samples/s of the torch twin of config's model on this machine."""
  import torch
  import torch.nn.functional as F

  from benchmarks import torch_models
  from dnn_jax.data import splits as data_splits

  torch.manual_seed(config.seed)
  splits = data_splits.load(config.data)
  batch = config.batch_size
  # uint8 NHWC as dnn_jax holds them; each step converts its batch to x / 255 in float32.
  x_train = torch.from_numpy(np.ascontiguousarray(splits.train['image']))
  y_train = torch.from_numpy(np.asarray(splits.train['label'], np.int64))
  x_val = torch.from_numpy(np.ascontiguousarray(splits.validation['image']))
  y_val = torch.from_numpy(np.asarray(splits.validation['label'], np.int64))
  steps_per_epoch = len(y_train) // batch  # full batches only: one shape to compile
  if not steps_per_epoch:
    raise ValueError(f'the train split has {len(y_train)} examples, under one batch of {batch}')
  net = torch_models.from_config(
    config.model, splits.image_shape, splits.num_classes, memory_format
  )
  l2 = config.model.get('l2', 0.0)
  params = torch_models.l2_param_groups(net, l2) if l2 else net.parameters()
  optimizer = torch_optimizer(torch, params, config.optimizer)
  # The model compiled, as torch's tutorials do; on a 2-core Zen 3, mnist_cnn's step was no
  # faster with torch.compile(optimizer.step) too (and compiled 5 s longer), nor with
  # mode='max-autotune' (14 s to compile against 3 s). Static shapes, as XLA's: without
  # dynamic=False the eval batch, a second shape, would be compiled as a dynamic-shape graph.
  model = net if compile_mode is None else torch.compile(net, mode=compile_mode, dynamic=False)
  bf16 = dtype == 'bfloat16'

  def train_step(x_u8, y):
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
      loss = F.cross_entropy(model(x_u8.float() / 255.0), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()  # a sync, should torch ever run a CPU step asynchronously

  model.train()
  shuffle, order, times = np.random.default_rng(config.seed), None, []
  while not budget.enough(times):
    step = len(times) % steps_per_epoch
    if step == 0:
      order = torch.from_numpy(shuffle.permutation(len(y_train)))
    start = time.perf_counter()
    indices = order[step * batch : (step + 1) * batch]
    train_step(x_train[indices], y_train[indices])
    times.append(time.perf_counter() - start)

  def evaluate():
    correct = 0
    with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
      for start in range(0, len(y_val), config.eval_batch_size):
        end = start + config.eval_batch_size
        logits = model(x_val[start:end].float() / 255.0)
        correct += int((logits.argmax(-1) == y_val[start:end]).sum())
    return correct

  model.eval()
  eval_times = []
  for _ in range(eval_repeats + 1):  # the first one compiles the evaluation graph
    start = time.perf_counter()
    evaluate()
    eval_times.append(time.perf_counter() - start)
  warmup = times[: budget.warmup_steps]
  median = statistics.median(times[budget.warmup_steps :])
  return {
    'peer': 'torch' if compile_mode is None else 'torch-compile',
    'framework': 'torch',
    'dtype': dtype,
    'batch_size': batch,
    **steady.summary(times, batch, budget),
    'eval_samples_per_sec': len(y_val) / statistics.median(eval_times[1:] or eval_times),
    'first_step_seconds': times[0],
    # The warm-up steps' extra time over steady ones: tracing and compiling (as keras_peer).
    'compile_seconds': max(sum(warmup) - len(warmup) * median, 0.0),
    'compile_mode': compile_mode,
    'torch_threads': torch.get_num_threads(),
    'memory_format': memory_format if config.model.name != 'mlp' else None,
    'torch_version': torch.__version__,
    'model_params': sum(p.numel() for p in net.parameters()),
  }


def main(argv):
  del argv
  try:
    import torch  # noqa: F401  (the optional `bench` extra)
  except ImportError:
    print(MISSING, file=sys.stderr)
    return 2
  with open(FLAGS.config_json) as f:
    config = ml_collections.ConfigDict(json.load(f))
  budget = steady.budget_from_flags()
  compile_mode = FLAGS.compile_mode if FLAGS.compile else None
  result = measure(
    config, FLAGS.dtype, compile_mode, FLAGS.memory_format, budget, FLAGS.eval_repeats
  )
  print(json.dumps(result))
  return 0


if __name__ == '__main__':
  app.run(main)
