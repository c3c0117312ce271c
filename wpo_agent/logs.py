"""Run outputs: append-only CSV files, TensorBoard events, and the progress line.

CSVs are appended to (never truncated) so a resumed run continues the same files.
"""

import collections
import csv
import os
import time
from typing import Deque, Mapping, Optional, Sequence, Tuple

from wpo_agent import workdir as workdir_lib


class CSVLogger:
  """Appends rows to `path`; the header is fixed by the first row ever written."""

  def __init__(self, path: str, fieldnames: Optional[Sequence[str]] = None):
    self._path = path
    self._fieldnames = list(fieldnames) if fieldnames else None
    if os.path.exists(path) and os.path.getsize(path) > 0:
      with open(path, newline='') as f:
        header = next(csv.reader(f), None)
      if header:
        self._fieldnames = header

  def write(self, row: Mapping[str, float]) -> None:
    new_file = not (os.path.exists(self._path) and
                    os.path.getsize(self._path) > 0)
    if self._fieldnames is None:
      self._fieldnames = list(row)
    with open(self._path, 'a', newline='') as f:
      writer = csv.DictWriter(f, fieldnames=self._fieldnames,
                              extrasaction='ignore')
      if new_file:
        writer.writeheader()
      writer.writerow({k: row.get(k, '') for k in self._fieldnames})


class TensorBoardLogger:
  """Scalars to TensorBoard event files under `logdir` (TF imported lazily)."""

  def __init__(self, logdir: str, step_key: str):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._tf = tf
    self._writer = tf.summary.create_file_writer(logdir)
    self._step_key = step_key

  def write(self, row: Mapping[str, float]) -> None:
    step = int(row.get(self._step_key, 0))
    with self._writer.as_default():
      for key, value in row.items():
        if key != self._step_key and isinstance(value, (int, float)):
          self._tf.summary.scalar(key, value, step=step)
    self._writer.flush()


class MultiLogger:
  def __init__(self, *loggers):
    self._loggers = [l for l in loggers if l is not None]

  def write(self, row: Mapping[str, float]) -> None:
    for logger in self._loggers:
      logger.write(row)


class WithCounts:
  """Adds the current values of `keys` from the live dict `counts` to each row."""

  def __init__(self, logger, counts: Mapping[str, float], keys: Sequence[str]):
    self._logger, self._counts, self._keys = logger, counts, keys

  def write(self, row: Mapping[str, float]) -> None:
    self._logger.write({**row, **{k: self._counts[k] for k in self._keys}})


def make_run_loggers(workdir: str, name: str, step_key: str,
                     tensorboard: bool = True) -> MultiLogger:
  """`<workdir>/<name>.csv` plus TensorBoard events in `<workdir>/tb/<name>`."""
  os.makedirs(workdir, exist_ok=True)
  paths = workdir_lib.Workdir(workdir)
  tb = (TensorBoardLogger(os.path.join(paths.tb, name), step_key)
        if tensorboard else None)
  return MultiLogger(CSVLogger(paths.csv(name)), tb)


def _si(x: float) -> str:
  for unit, scale in (('G', 1e9), ('M', 1e6), ('k', 1e3)):
    if abs(x) >= scale:
      return f'{x / scale:.2f}{unit}'
  return f'{x:.0f}'


def _duration(seconds: float) -> str:
  if seconds != seconds or seconds == float('inf'):
    return '?'
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m' if h else f'{m}m{s:02d}s'


class Every:
  """A periodic timer: `due()` is True once `seconds` have passed since it
  was last True (or since it was made)."""

  def __init__(self, seconds: float):
    self._seconds = seconds
    self._last = time.time()

  def due(self) -> bool:
    now = time.time()
    if now - self._last >= self._seconds:
      self._last = now
      return True
    return False


class Progress:
  """Formats the periodic progress line from cumulative counts.

  Rates and the realised samples-per-insert are measured over a sliding window
  of the last `window_s` seconds of lines: long enough to smooth the block-wise
  counter updates of distributed actors, short enough to exclude the fill-up
  phase before learning. The ETA uses the actor-step rate.
  """

  def __init__(self, max_actor_steps: int, batch_size: int,
               window_s: float = 30.0):
    self._max = max_actor_steps
    self._batch = batch_size
    self._window_s = window_s
    self._history: Deque[Tuple[float, int, int, int]] = collections.deque()

  def line(self, actor_steps: int, learner_steps: int, inserts: int,
           last_eval: Optional[float]) -> str:
    """learner_steps counts SGD steps; inserts counts replay insertions."""
    now = time.time()
    # Keep exactly one sample older than the window as the reference point.
    while len(self._history) > 1 and now - self._history[1][0] >= self._window_s:
      self._history.popleft()
    env_rate = upd_rate = spi = 0.0
    if self._history and now > self._history[0][0]:
      t0, a0, l0, i0 = self._history[0]
      env_rate = (actor_steps - a0) / (now - t0)
      upd_rate = (learner_steps - l0) / (now - t0)
      if inserts > i0:
        spi = (learner_steps - l0) * self._batch / (inserts - i0)
    self._history.append((now, actor_steps, learner_steps, inserts))
    eta = (self._max - actor_steps) / env_rate if env_rate > 0 else float('inf')
    ev = f'{last_eval:.1f}' if last_eval is not None else '-'
    return (f'actor_steps {_si(actor_steps)}/{_si(self._max)} | '
            f'env {env_rate:.0f} steps/s | learner {upd_rate:.1f} upd/s | '
            f'samples/insert {spi:.1f} | eval {ev} | ETA {_duration(eta)}')
