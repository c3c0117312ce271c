"""Graceful stop on SIGINT / SIGTERM: the first signal asks the loop to finish.

The loop checks `requested`, checkpoints and returns normally (exit code 0). A
second signal while stopping raises KeyboardInterrupt, for a user who insists.
"""

import signal
import threading


class GracefulStop:
  """Context manager; installs handlers only in the main thread."""

  def __init__(self, signals=(signal.SIGINT, signal.SIGTERM)):
    self._signals = signals
    self._previous = {}
    self._event = threading.Event()

  @property
  def requested(self) -> bool:
    return self._event.is_set()

  def request(self) -> None:
    self._event.set()

  def _handle(self, signum, frame):
    del frame
    if self._event.is_set():
      raise KeyboardInterrupt(f'second signal {signum}: stopping now')
    print(f'\nReceived {signal.Signals(signum).name}: checkpointing and '
          'stopping (send again to abort).', flush=True)
    self._event.set()

  def __enter__(self) -> 'GracefulStop':
    if threading.current_thread() is threading.main_thread():
      for sig in self._signals:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()
