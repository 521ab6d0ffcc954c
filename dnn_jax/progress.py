"""Keras-style console output: a progress bar on a terminal, one plain line per epoch otherwise."""

import sys

BAR_WIDTH = 30


def shows_bar(mode: str, stream=None) -> bool:
  """Whether progress `mode` draws a bar on stream: 'bar', or 'auto' on a terminal."""
  stream = stream or sys.stdout
  return mode == 'bar' or (mode == 'auto' and getattr(stream, 'isatty', lambda: False)())


def format_metrics(metrics: dict) -> str:
  """' - loss: 0.0712 - accuracy: 0.9781' for the metrics in order."""
  return ''.join(f' - {k}: {v:.4f}' for k, v in metrics.items())


class EpochProgress:
  """Prints `Epoch e/n` progress for one epoch; end() prints the Keras line."""

  def __init__(self, epoch: int, num_epochs: int, steps: int, mode: str = 'auto', stream=None):
    self.stream = stream or sys.stdout
    self.prefix = f'Epoch {epoch}/{num_epochs}'
    self.steps = steps
    self.bar = shows_bar(mode, self.stream)

  def update(self, step: int, metrics: dict) -> None:
    """Redraws the bar after `step` of `steps` optimizer steps (a no-op without a terminal)."""
    if not self.bar:
      return
    done = int(BAR_WIDTH * step / self.steps)
    arrow = '=' * max(done - 1, 0) + ('>' if done < BAR_WIDTH else '=') if done else ''
    bar = f'[{arrow.ljust(BAR_WIDTH, ".")}]'
    width = len(str(self.steps))
    self.stream.write(
      f'\r{self.prefix} {step:>{width}}/{self.steps} {bar}{format_metrics(metrics)}'
    )
    self.stream.flush()

  def end(self, seconds: float, metrics: dict) -> None:
    """`Epoch 3/10 - 2.1s - loss: ... - val_accuracy: ...` on a line of its own."""
    clear = '\r\x1b[2K' if self.bar else ''
    self.stream.write(f'{clear}{self.prefix} - {seconds:.1f}s{format_metrics(metrics)}\n')
    self.stream.flush()
