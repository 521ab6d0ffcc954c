"""SIGTERM / SIGINT / SIGUSR2: let the training loop finish its compiled call, save, and exit.

SLURM sends SIGTERM on preemption and, asked with --signal (submitit asks for USR2), a signal
before the time limit. In a multi-process run the processes agree at every call boundary
(trainer: parallel.any_process), so all save the same step whichever one got the signal.
"""

import os
import signal
import sys
import threading

INTERRUPTED_EXIT = 130  # 128 + SIGINT, the shell's code for a run stopped with Ctrl-C
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)


class StopRequests:
  """While active, SIGTERM, SIGINT and SIGUSR2 set `.signal` instead of killing the process.

  The loop polls `.signal` between compiled calls. A second SIGINT exits at once, for a user
  who does not want to wait. Python runs signal handlers only when the main thread returns
  from C code (a compile, a wait for the device), so the signals are read from a wakeup pipe
  by a thread of their own, which acts at once. Outside the main thread (where Python allows
  no handlers) it installs nothing and never requests a stop.
  """

  def __init__(self):
    self.signal = None
    self._previous = {}
    self._wakeup = None

  def __enter__(self):
    if threading.current_thread() is not threading.main_thread():
      return self
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    for signum in SIGNALS:
      self._previous[signum] = signal.signal(signum, lambda *_: None)  # the thread acts
    self._wakeup = (signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False), write_fd)
    threading.Thread(target=self._watch, args=(read_fd,), daemon=True).start()
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()
    if self._wakeup:
      previous_fd, write_fd = self._wakeup
      signal.set_wakeup_fd(previous_fd)
      os.close(write_fd)  # the watcher reads end-of-file and ends
      self._wakeup = None

  def _watch(self, read_fd: int) -> None:
    with os.fdopen(read_fd, 'rb', buffering=0) as pipe:
      while data := pipe.read(1):
        if data[0] in SIGNALS:
          self._handle(data[0])

  def _handle(self, signum: int) -> None:
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
