"""Builds <workdir>/report/: every picture drawn from the run's own files, and index.html."""

import dataclasses
import json
import pathlib
import time

import jax
import numpy as np
from flax import nnx

from dnn_jax import files, lr_find, tensorboard
from dnn_jax.lr_find import plot as lr_find_plot
from dnn_jax.models import layers
from dnn_jax.report import confusion, curves, filters, grids, html, patches, predict
from dnn_jax.report import run as run_lib

REPORT_DIR = 'report'
GRID_IMAGES = 48  # test images in predictions.png and misclassified.png (6 rows of 8)


@dataclasses.dataclass
class Report:
  """What build_report wrote."""

  directory: pathlib.Path
  index: pathlib.Path
  pngs: dict  # picture name (file stem) -> path
  confusion_text: str
  step: int
  note: str | None
  seconds: float


@dataclasses.dataclass
class TestSet:
  """The test split with what the checkpoint's model makes of it."""

  images_N: np.ndarray  # uint8, as stored
  labels_N: np.ndarray
  x_N: np.ndarray  # float32 inputs as evaluation feeds them (eval_augment applied)
  logits_NxK: np.ndarray

  @property
  def predictions_N(self) -> np.ndarray:
    return self.logits_NxK.argmax(-1)


def softmax_cross_entropy(logits_NxK: np.ndarray, labels_N: np.ndarray) -> np.ndarray:
  """Per-example loss, as the evaluation's optax loss computes it."""
  z = logits_NxK.astype(np.float64)
  z = z - z.max(-1, keepdims=True)
  return np.log(np.exp(z).sum(-1)) - z[np.arange(len(z)), labels_N]


def draw_diagram(model, input_shape, report_dir: pathlib.Path) -> list[pathlib.Path]:
  """The model's diagram (diagram.png and diagram.svg): the one place the report draws it."""
  from dnn_jax.report import diagram

  return diagram.draw_model(model, input_shape, report_dir / 'diagram')


def build_report(workdir, which: str = 'best') -> Report:
  """Draws workdir/report/ from metrics.json, checkpoint `which` and the run's dataset.

  Args:
    workdir: a training run's workdir (holds metrics.json and checkpoints/).
    which: 'best' (highest val_accuracy at an epoch's end; the latest, with a note, before
      any epoch ended), 'latest' or a step number.
  """
  start = time.perf_counter()
  run = run_lib.load(workdir, which)
  out = pathlib.Path(workdir) / REPORT_DIR
  out.mkdir(exist_ok=True)
  config = run.config
  images_N = run.splits.test['image']
  x_N = predict.model_inputs(images_N, config.eval_augment, config.eval_batch_size)
  logits_NxK = predict.logits(run.model, x_N, config.eval_batch_size, config.dtype)
  test = TestSet(images_N, run.splits.test['label'], x_N, logits_NxK)
  counts_KxK = confusion.confusion_matrix(test.labels_N, test.predictions_N, run.splits.num_classes)
  confusion_text = confusion.format_confusion(counts_KxK, run.splits.class_names)
  files.write_text(out / 'confusion.txt', confusion_text + '\n')

  pictures = [
    *diagram_pictures(run, out),
    curves_picture(run, out),
    confusion_picture(run, out, counts_KxK),
    samples_picture(run, out),
    *prediction_pictures(run, out, test),
    filters_picture(run, out),
  ]
  first = filters.first_layer(run.model)
  if isinstance(first, layers.Conv2D):
    top = patches.top_patches(first, test.x_N)
    caption = patches.draw_top_patches(out / 'top9_patches.png', top)
    pictures.append(html.Picture('top9_patches.png', caption, 'Top 9 patches'))
  if (run.workdir / lr_find.JSON).is_file():  # python -m dnn_jax.lr_find ran here
    pictures.append(lr_find_picture(run, out))

  loss = float(softmax_cross_entropy(test.logits_NxK, test.labels_N).mean())
  accuracy = float(np.trace(counts_KxK) / counts_KxK.sum())
  html.write(
    out / 'index.html',
    title=f'Run report: {pathlib.Path(workdir).resolve().name}',
    summary=summary_rows(run),
    metrics=metric_rows(run, loss, accuracy, len(test.labels_N)),
    pictures=pictures,
    notes=[run.note] if run.note else [],
    text_files=('confusion.txt',),
    config=run.metrics.get('config'),
  )
  return Report(
    directory=out,
    index=out / 'index.html',
    pngs={p.file.removesuffix('.png'): out / p.file for p in pictures},
    confusion_text=confusion_text,
    step=run.step,
    note=run.note,
    seconds=time.perf_counter() - start,
  )


def diagram_pictures(run: run_lib.Run, out: pathlib.Path) -> list:
  drawn = {p.suffix: p for p in draw_diagram(run.model, run.splits.image_shape, out)}
  if '.png' not in drawn:
    return []
  svg = (drawn['.svg'].name,) if '.svg' in drawn else ()
  return [html.Picture(drawn['.png'].name, 'The model, layer by layer.', 'Model', svg)]


def curves_picture(run: run_lib.Run, out: pathlib.Path) -> html.Picture:
  history = run.metrics.get('history', [])
  curves.draw_curves(out / 'curves.png', history, run.metrics.get('best', {}).get('epoch'))
  return html.Picture(
    'curves.png',
    f'Training and validation loss and accuracy after each of the {len(history)} epoch(s) '
    f'(from metrics.json; the dotted line marks the best validation accuracy), and the '
    f"learning rate at each epoch's last step.",
    'Training curves',
  )


def confusion_picture(run: run_lib.Run, out: pathlib.Path, counts_KxK) -> html.Picture:
  confusion.draw_confusion(out / 'confusion.png', counts_KxK, run.splits.class_names)
  return html.Picture(
    'confusion.png',
    f'Test-set confusion matrix of the checkpoint at step {run.step}: rows are the true '
    f'classes, columns the predicted ones, each cell a count (shading on a log scale).',
    'Confusion matrix',
    ('confusion.txt',),
  )


def samples_picture(run: run_lib.Run, out: pathlib.Path) -> html.Picture:
  train = run.splits.train
  grids.draw_samples(out / 'samples.png', train['image'], train['label'], run.splits.class_names)
  return html.Picture(
    'samples.png',
    f'100 training images drawn at random (seed 0) from {run.config.data.train_split}, as '
    f'stored (before any augmentation), with their labels.',
    'Training samples',
  )


def prediction_pictures(run: run_lib.Run, out: pathlib.Path, test: TestSet) -> list:
  """predictions.png (the first test images) and misclassified.png (the first wrong ones)."""
  names, split = run.splits.class_names, run.config.data.test_split
  images_N, labels_N, predictions_N = test.images_N, test.labels_N, test.predictions_N
  shown = np.arange(min(GRID_IMAGES, len(labels_N)))
  wrong = int((predictions_N[shown] != labels_N[shown]).sum())
  grids.draw_predictions(
    out / 'predictions.png', images_N[shown], labels_N[shown], predictions_N[shown], names,
    heading=f'The first {len(shown)} test images: true label, then prediction',
  )  # fmt: skip
  missed_N = np.flatnonzero(predictions_N != labels_N)
  missed = missed_N[:GRID_IMAGES]
  if len(missed):
    grids.draw_predictions(
      out / 'misclassified.png', images_N[missed], labels_N[missed], predictions_N[missed], names,
      heading=f'{len(missed)} of the {len(missed_N):,} misclassified test images: true, predicted',
    )  # fmt: skip
  else:
    grids.draw_message(out / 'misclassified.png', 'No test image is misclassified.')
  return [
    html.Picture(
      'predictions.png',
      f'The first {len(shown)} images of {split}, each titled with its true label, then the '
      f'prediction: green when right, red when wrong ({wrong} wrong here).',
      'Predictions',
    ),
    html.Picture(
      'misclassified.png',
      f'The first {len(missed)} of the {len(missed_N):,} misclassified images of {split}, in '
      f'test-set order, titled with the true label, then the (wrong) prediction.',
      'Misclassified test images',
    ),
  ]


def filters_picture(run: run_lib.Run, out: pathlib.Path) -> html.Picture:
  what = filters.draw_filters(out / 'filters.png', run.model, run.splits.image_shape)
  scale = (
    'RGB kernels min-max normalized'
    if run.splits.image_shape[-1] == 3
    else 'red positive, blue negative, white zero'
  )
  return html.Picture(
    'filters.png',
    f'First-layer weights: {what}, each on its own scale ({scale}).',
    'First-layer filters',
  )


def lr_find_picture(run: run_lib.Run, out: pathlib.Path) -> html.Picture:
  """The workdir's learning-rate range test, redrawn from its lr_find.json."""
  found = json.loads((run.workdir / lr_find.JSON).read_text())
  lr_find_plot.draw(out / 'lr_find.png', found)
  rates, best = found['rates'], found['suggestion']
  caption = (
    f'Learning-rate range test (lr_find.json): {len(rates)} rates from {rates[0]:.3g} to '
    f'{rates[-1]:.3g}, each trained {found["steps"]} steps from the same initial weights, all '
    f"as one vmapped program. Left: each rate's smoothed final training loss and its "
    f'validation loss; right: the training loss curves. '
  )
  if best['learning_rate'] is not None:
    caption += f'Suggested: {best["learning_rate"]:.3g}, {best["rule"]}. '
  caption += f'This run trained at {run.config.optimizer.learning_rate:g}.'
  differ = _config_differences(found['config'], run.config.to_dict())
  if differ:
    caption += f" The range test's config differs from this run's in {', '.join(differ)}."
  return html.Picture('lr_find.png', caption, 'Learning-rate range test')


def _config_differences(tested: dict, trained: dict) -> list[str]:
  """The keys (a.b.c) whose values differ, but for the rate and what does not train."""
  tested, trained = _flat(tested), _flat(trained)
  ignored = ('optimizer.learning_rate', 'progress', 'checkpoint.', 'log.', 'compilation_cache_dir')
  keys = sorted(k for k in tested.keys() | trained.keys() if tested.get(k) != trained.get(k))
  return [k for k in keys if not k.startswith(ignored)]


def _flat(tree: dict, prefix: str = '') -> dict:
  """{'a.b': JSON text of the value}: tuples and lists alike, as metrics.json holds both."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = json.dumps(value, default=str)
  return out


def summary_rows(run: run_lib.Run) -> list:
  """(name, value) rows that say what was trained, on what, and how."""
  config, metrics = run.config, run.metrics
  model = dict(config.model)
  name = model.pop('name')
  arguments = ', '.join(f'{k}={v}' for k, v in sorted(model.items()))
  params = sum(x.size for x in jax.tree.leaves(nnx.state(run.model, nnx.Param)))
  data, opt = config.data, config.optimizer
  devices = metrics.get('devices', {})
  rows = [
    ('workdir', str(run.workdir)),
    ('model', f'{name}({arguments})'),
    ('trainable parameters', f'{params:,}'),
    (
      'data',
      f'{data.name}: train {data.train_split} ({len(run.splits.train["label"]):,}), '
      f'validation {data.validation_split}, test {data.test_split} '
      f'({len(run.splits.test["label"]):,})',
    ),
    ('optimizer', f'{opt.name}, learning rate {opt.learning_rate:g}, {opt.schedule} schedule'),
    ('epochs', f'{len(metrics.get("history", []))} of {config.num_epochs}'),
    ('batch size', f'{config.batch_size} ({config.dtype})'),
    ('augmentation', ', '.join(config.augment.keys()) or 'none'),
  ]
  if devices:
    rows.append(('devices', f'{devices["count"]} x {devices["kind"]} ({devices["platform"]})'))
  if 'train_samples_per_sec' in metrics:
    rows.append(('training speed', f'{metrics["train_samples_per_sec"]:,.0f} samples/s'))
  if 'preempted' in metrics:
    rows.append(('preempted', f'at step {metrics["preempted"]["step"]}; not finished yet'))
  return rows


def metric_rows(run: run_lib.Run, loss: float, accuracy: float, count: int) -> list:
  """(name, value) rows: this checkpoint's test metrics, and the run's own from metrics.json."""
  rows = [
    ('checkpoint', f'step {run.step}, epoch {run.epochs_done:.2f} ({run.which})'),
    (f'test accuracy, this checkpoint ({count:,} images)', f'{accuracy:.4f}'),
    ('test loss, this checkpoint', f'{loss:.4f}'),
  ]
  test, best = run.metrics.get('test'), run.metrics.get('best')
  if test:
    rows.append(('test accuracy, end of run (metrics.json)', f'{test["accuracy"]:.4f}'))
    rows.append(('test loss, end of run (metrics.json)', f'{test["loss"]:.4f}'))
  if best:
    rows.append(('best validation accuracy', f'{best["val_accuracy"]:.4f} (epoch {best["epoch"]})'))
  return rows


def report_run(workdir, which: str = 'best') -> Report:
  """build_report, then the report's pictures to TensorBoard: what the CLI and main.py call."""
  report = build_report(workdir, which)
  # At the checkpoint's step, tagged report/<name>: TensorBoard's Images tab beside the scalars.
  images = {f'report/{name}': path for name, path in report.pngs.items()}
  tensorboard.log_report_images(workdir, images, report.step)
  return report


def report_finished_run(workdir) -> Report | None:
  """main.py's hook: the report of the weights the run ended with; prints where it is."""
  if jax.process_count() > 1:  # reading checkpoints alone could wait on the other processes
    if jax.process_index() == 0:
      print(
        f'Report: not drawn by a multi-process run; python -m dnn_jax.report --workdir {workdir}'
      )
    return None
  # The latest checkpoint holds the final weights: the report matches the printed test metrics.
  report = report_run(workdir, 'latest')
  print(f'Report: {report.index}')
  return report
