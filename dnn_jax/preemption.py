"""SIGTERM / SIGINT: let the training loop finish its compiled call, save, and exit cleanly."""

import os
import signal
import sys
import threading

INTERRUPTED_EXIT = 130  # 128 + SIGINT, the shell's code for a run stopped with Ctrl-C


class StopRequests:
  """While active, SIGTERM and SIGINT set `.signal` instead of killing the process.

  The loop polls `.signal` between compiled calls. A second SIGINT exits at once, for a user
  who does not want to wait. Outside the main thread (where Python allows no handlers) it
  installs nothing and never requests a stop.
  """

  def __init__(self):
    self.signal = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()

  def _handle(self, signum, frame):
    del frame
    name = signal.Signals(signum).name
    if self.signal and signum == signal.SIGINT:
      print(f'\n{name} again: exiting now without saving', file=sys.stderr, flush=True)
      os._exit(INTERRUPTED_EXIT)
    self.signal = self.signal or name
    print(
      f'\n{name} received: saving after the current compiled call'
      + (' (Ctrl-C again to quit at once)' if signum == signal.SIGINT else ''),
      file=sys.stderr,
      flush=True,
    )
