"""Export a checkpoint's model for serving: python -m dnn_jax.export --workdir W.

--format stablehlo (default) writes <workdir>/export/model.stablehlo: jax.export's serialized
inference function, versioned StableHLO lowered for CPU, CUDA, ROCm and TPU, with a symbolic
batch size; run it as jax.export.deserialize(path.read_bytes()).call(x_BxHxWxC). --format
onnx writes <workdir>/export/model.onnx through jax2onnx (pip install -e '.[export]'), for
onnxruntime or any ONNX runtime. --checkpoint: best (default), latest or a step number.
--output: another path for the model file.

Either takes float32 images [B, H, W, C] in [0, 1] (the dataset's H, W, C: uint8 pixels / 255,
after the run's config.eval_augment where it has one, as evaluation feeds the model) and
returns float32 logits [B, classes] of the model in evaluation mode, computed in float32.
`<output>.json` beside the model says so, with the checkpoint, the class names and versions.
The convolutions are XLA's (conv_implementation 'xla', the same weights as any other): the
others are custom calls or hand-written kernels that an exported program cannot carry.
"""

import logging
import pathlib
from importlib import metadata

import numpy as np
from absl import app, flags

from dnn_jax import cli
from dnn_jax.errors import UserError

FLAGS = flags.FLAGS
FORMATS = ('stablehlo', 'onnx')
PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')  # lowered for each: a caller runs its own platform's
CHECK_IMAGES = 4  # random inputs the written file is run on against the JAX model


def define_flags() -> None:
  """The command's flags; defined only when run as a command (tests import this module)."""
  flags.DEFINE_string('workdir', None, "A training run's workdir (holds checkpoints/).")
  flags.DEFINE_string(
    'checkpoint', 'best', 'best (the latest if no epoch ended), latest, or a step.'
  )
  flags.DEFINE_enum('format', 'stablehlo', FORMATS, 'stablehlo (jax.export) or onnx (jax2onnx).')
  flags.DEFINE_string('output', None, 'The model file (default: <workdir>/export/model.<format>).')
  flags.mark_flags_as_required(['workdir'])


def export_checkpoint(workdir, which: str = 'best', fmt: str = 'stablehlo', output=None):
  """Writes the model file and its JSON description; returns the model file's path."""
  import jax

  from dnn_jax import files, inference
  from dnn_jax.data import catalog

  if fmt not in FORMATS:
    raise UserError(f'unknown export format {fmt!r}; choose one of {", ".join(FORMATS)}')
  workdir = pathlib.Path(workdir)
  restored = inference.load(workdir, which, conv_implementation='xla')
  if restored.note:
    print(f'note: {restored.note}')
  config = restored.config
  dataset = catalog.get(config.data.name)
  output = pathlib.Path(output) if output else workdir / 'export' / f'model.{fmt}'
  output.parent.mkdir(parents=True, exist_ok=True)
  forward = logits_fn(restored.model)
  data, details = (to_stablehlo if fmt == 'stablehlo' else to_onnx)(forward, dataset.image_shape)
  with files.atomic_path(output) as tmp:
    tmp.write_bytes(data)
  # The file as a user gets it, against the JAX model: a broken conversion shows here.
  x_BxHxWxC = np.random.default_rng(0).random((CHECK_IMAGES, *dataset.image_shape), np.float32)
  difference = np.abs(run_exported(output, fmt, x_BxHxWxC) - jax.jit(forward)(x_BxHxWxC)).max()
  height, width, channels = dataset.image_shape
  description = {
    'format': fmt,
    'file': output.name,
    'input': {
      'shape': ['batch', height, width, channels],
      'dtype': 'float32',
      'range': [0.0, 1.0],
      'meaning': 'images, NHWC: uint8 pixels / 255 (after eval_augment, when it is not empty)',
    },
    'output': {'shape': ['batch', dataset.num_classes], 'dtype': 'float32', 'meaning': 'logits'},
    'eval_augment': config.eval_augment.to_dict(),
    'dataset': dataset.name,
    'class_names': list(dataset.label_names()),
    'model': config.model.to_dict(),
    'checkpoint': str(restored.path),
    'step': restored.step,
    'epochs_done': restored.epochs_done,
    'weights': restored.weights,
    'jax_version': jax.__version__,
    **details,
    'max_abs_logits_difference_on_random_inputs': float(difference),
  }
  files.write_json(description_path(output), description)
  print(f'Checkpoint {restored.path} (step {restored.step}, epoch {restored.epochs_done:.2f})')
  print(f'Exported {fmt}: {output} ({output.stat().st_size:,} bytes); {description_path(output)}')
  print(f'max |logits difference| against the JAX model on {CHECK_IMAGES} random images: '
        f'{difference:.2g}')  # fmt: skip
  return output


def description_path(output) -> pathlib.Path:
  """The JSON beside a model file: <output>.json."""
  output = pathlib.Path(output)
  return output.with_name(output.name + '.json')


def logits_fn(model):
  """fn(x_BxHxWxC) -> float32 logits of the model in evaluation mode, its weights as constants."""
  import jax.numpy as jnp
  from flax import nnx

  graphdef, state = nnx.split(model)

  def logits(x_BxHxWxC):
    return nnx.merge(graphdef, state)(x_BxHxWxC, None).astype(jnp.float32)

  return logits


def to_stablehlo(forward, image_shape) -> tuple[bytes, dict]:
  """(jax.export's serialized program of forward for any batch size, what to record of it)."""
  import jax

  (batch,) = jax.export.symbolic_shape('batch')
  images = jax.ShapeDtypeStruct((batch, *image_shape), np.float32)
  exported = jax.export.export(jax.jit(forward), platforms=PLATFORMS)(images)
  details = {
    'platforms': list(exported.platforms),
    'calling_convention_version': exported.calling_convention_version,
  }
  return bytes(exported.serialize()), details


def to_onnx(forward, image_shape) -> tuple[bytes, dict]:
  """(forward as an ONNX model with a dynamic batch axis, what to record of it)."""
  try:  # only here: training and the other commands never import them
    import jax2onnx
  except ImportError as e:
    raise UserError(
      f"--format onnx needs jax2onnx ({e}); install it: pip install -e '.[export]'"
    ) from None
  # onnx_ir warns of every shape constant jax2onnx leaves untyped; the model is complete.
  logging.getLogger('onnx_ir').setLevel(logging.ERROR)
  model = jax2onnx.to_onnx(
    forward, [('batch', *image_shape)], model_name='dnn_jax', input_names=['images'],
    output_names=['logits'],
  )  # fmt: skip
  details = {
    'opset': max(o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')),
    'jax2onnx_version': metadata.version('jax2onnx'),
  }
  return model.SerializeToString(), details


def run_exported(path, fmt: str, x_BxHxWxC: np.ndarray) -> np.ndarray:
  """Logits [B, classes] of an exported model file on float32 images, as a user runs it."""
  path = pathlib.Path(path)
  if fmt == 'stablehlo':
    import jax

    return np.asarray(jax.export.deserialize(bytearray(path.read_bytes())).call(x_BxHxWxC))
  import onnxruntime

  session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
  return session.run(['logits'], {'images': x_BxHxWxC})[0]


def main(argv):
  del argv  # cli.parse_flags refuses positional arguments
  cli.run_reporting_errors(
    export_checkpoint, FLAGS.workdir, FLAGS.checkpoint, FLAGS.format, FLAGS.output
  )


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
