"""The test-set confusion matrix: counted, written as text, drawn as an annotated heatmap."""

import numpy as np
from matplotlib.figure import Figure

from dnn_jax import files


def confusion_matrix(labels_N, predictions_N, num_classes: int) -> np.ndarray:
  """[true, predicted] int64 counts."""
  counts_KxK = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(counts_KxK, (np.asarray(labels_N), np.asarray(predictions_N)), 1)
  return counts_KxK


def format_confusion(counts_KxK: np.ndarray, class_names) -> str:
  """A text table: one row per true class, one column per predicted class."""
  corner = 'true \\ predicted'
  first = max(len(corner), *(len(n) for n in class_names))
  width = max(max(len(n) for n in class_names), len(str(counts_KxK.max()))) + 1
  lines = [corner.ljust(first) + ''.join(n.rjust(width) for n in class_names)]
  for name, row in zip(class_names, counts_KxK, strict=True):
    lines.append(name.ljust(first) + ''.join(str(c).rjust(width) for c in row))
  total, right = counts_KxK.sum(), np.trace(counts_KxK)
  lines.append(f'{right:,} of {total:,} right: accuracy {right / max(total, 1):.4f}')
  return '\n'.join(lines)


def draw_confusion(path, counts_KxK: np.ndarray, class_names) -> None:
  """A heatmap of the counts with each count written in its cell."""
  k = len(class_names)
  fig = Figure(figsize=(1.0 + 0.62 * k, 0.6 + 0.55 * k), layout='constrained')
  ax = fig.add_subplot()
  # Logarithmic shading: the off-diagonal counts are tiny beside the diagonal's.
  shade = np.log1p(counts_KxK)
  ax.imshow(shade, cmap='Blues')
  dark = shade > 0.6 * shade.max()
  for i in range(k):
    for j in range(k):
      ax.text(
        j, i, str(counts_KxK[i, j]), ha='center', va='center', fontsize=8,
        color='white' if dark[i, j] else 'black',
      )  # fmt: skip
  long_names = max(len(n) for n in class_names) > 2
  if long_names:  # CIFAR-10's names: slanted, so that they do not overlap
    ax.set_xticks(range(k), class_names, rotation=45, ha='right')
  else:
    ax.set_xticks(range(k), class_names)
  ax.set_yticks(range(k), class_names)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  total, right = counts_KxK.sum(), np.trace(counts_KxK)
  ax.set_title(f'Test set: {right:,} of {total:,} right ({right / max(total, 1):.4f})')
  files.save_figure(fig, path, dpi=100)
