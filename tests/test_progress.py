"""dnn_jax.progress: the Keras epoch line, and the bar only on a terminal."""

import io

from dnn_jax import progress

METRICS = {'loss': 0.07123, 'accuracy': 0.97811, 'val_loss': 0.069, 'val_accuracy': 0.97934}


def test_epoch_line_is_keras_like():
  stream = io.StringIO()
  bar = progress.EpochProgress(3, 10, steps=469, mode='auto', stream=stream)
  bar.update(100, {'loss': 0.1})  # not a terminal: no bar
  bar.end(2.13, METRICS)
  assert stream.getvalue() == (
    'Epoch 3/10 - 2.1s - loss: 0.0712 - accuracy: 0.9781'
    ' - val_loss: 0.0690 - val_accuracy: 0.9793\n'
  )


def test_bar_redraws_in_place_then_prints_the_line():
  stream = io.StringIO()
  bar = progress.EpochProgress(1, 2, steps=10, mode='bar', stream=stream)
  bar.update(5, {'loss': 0.5})
  bar.update(10, {'loss': 0.25})
  bar.end(1.0, {'loss': 0.25})
  out = stream.getvalue()
  assert out.startswith('\rEpoch 1/2  5/10 [==============>...............] - loss: 0.5000')
  assert '\rEpoch 1/2 10/10 [==============================] - loss: 0.2500' in out
  assert out.endswith('\r\x1b[2KEpoch 1/2 - 1.0s - loss: 0.2500\n')


class FakeTerminal(io.StringIO):
  def isatty(self):
    return True


def test_bar_only_on_a_terminal_unless_asked():
  assert progress.shows_bar('auto', FakeTerminal())
  assert not progress.shows_bar('auto', io.StringIO())
  assert progress.shows_bar('bar', io.StringIO())
  assert not progress.shows_bar('lines', FakeTerminal())
