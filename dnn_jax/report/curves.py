"""Training curves per epoch from metrics.json's history: loss, accuracy, learning rate."""

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dnn_jax import files


def draw_curves(path, history: list[dict], best_epoch: int | None = None) -> None:
  """Three panels: train vs validation loss, train vs validation accuracy, learning rate."""
  epochs = [h['epoch'] for h in history]
  fig = Figure(figsize=(15, 4.2), layout='constrained')
  axes = fig.subplots(1, 3)
  panels = (
    ('loss', 'Loss'),
    ('accuracy', 'Accuracy'),
  )
  for ax, (key, name) in zip(axes, panels, strict=False):
    ax.plot(epochs, [h[key] for h in history], 'o-', label='train')
    ax.plot(epochs, [h[f'val_{key}'] for h in history], 's-', label='validation')
    ax.set_title(name)
    ax.legend()
  if best_epoch is not None:
    axes[1].axvline(best_epoch, color='gray', linestyle=':', label=f'best (epoch {best_epoch})')
    axes[1].legend()
  axes[2].plot(epochs, [h['learning_rate'] for h in history], 'o-', color='tab:purple')
  axes[2].set_title("Learning rate (at the epoch's last step)")
  axes[2].ticklabel_format(axis='y', style='sci', scilimits=(-3, 3))
  for ax in axes:
    ax.set_xlim(0.5, max(epochs, default=1) + 0.5)  # a single epoch gets a readable axis too
    ax.set_xlabel('epoch')
    if len(epochs) <= 20:
      ax.set_xticks(epochs)
    else:
      ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
  files.save_figure(fig, path, dpi=100)
