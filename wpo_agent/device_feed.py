"""The way into the device replay: the transport's sizes and `DeviceFeed`.

With `replay_backend='device'` the actors' transitions reach the learner's
device buffer (`device_replay.DeviceReplay`) through a bounded reverb FIFO:

  actors --items of TRANSPORT_ROWS n-step transitions--> reverb FIFO
     'transport' table (bounded; replay.py)
     --drain thread, re-cut into chunks of INSERT_CHUNK items--> DeviceFeed
     --add (jitted, donated)--> DeviceReplay: a ring buffer on the device(s)

Samples-per-insert is kept here (`ratio.RatioGate` over the drained items):
the learner drains a chunk only when the ratio owes it no call, so when it is
behind, the transport table fills and the actors' writes block, as under
reverb's SampleToInsertRatio limiter. No reverb or TensorFlow import here.
"""

import queue
import threading
from typing import Any, Callable, Dict, Iterator, Optional

from wpo_agent import device_replay
from wpo_agent import ratio
from wpo_agent.types import Batch

# Transitions per transport item (an actor's ChunkWriter chunk): the actor
# pays reverb's per-item cost once per this many transitions.
TRANSPORT_ROWS = 64


def transport_size(*, samples_per_insert: float, min_size: int) -> int:
  """Capacity of the transport queue in items of TRANSPORT_ROWS: how far
  actors may run ahead.

  Two chunks, or the transitions reverb's ratio limiter would let actors run
  ahead by (its error buffer over spi), whichever is more. Transitions
  drained but not yet added (up to 2 chunks queued, a few items in the
  drain's streams) and each actor's unsent rows come on top.
  """
  ahead = ratio.default_error_buffer(samples_per_insert=samples_per_insert,
                                     min_size=min_size) / samples_per_insert
  chunk = device_replay.INSERT_CHUNK
  return -(-int(max(2 * chunk, -(-ahead // 1))) // TRANSPORT_ROWS)


class DeviceFeed:
  """The learner's side of the device replay: drains, adds, keeps the ratio.

  A daemon thread reads chunks from `chunks` (the transport table's drain,
  replay.make_transport_iterator) into a short queue; the learner's thread adds
  them to the device buffer only when the samples-per-insert gate owes no
  call, so a learner that falls behind stops draining and the actors block.
  `lock` guards the buffer state and counts against a checkpoint taken from
  another thread (adds donate the old buffers).
  """

  def __init__(self, replay: device_replay.DeviceReplay,
               chunks: Iterator[Batch], *, samples_per_insert: float,
               keep_ratio: bool, sgd_steps_per_call: int, min_size: int,
               queue_chunks: int = 2):
    """`keep_ratio=False` (rate_limiter 'min_size'): after `min_size` items
    the learner never waits, and drains whatever has arrived before each call."""
    self.replay = replay
    self.lock = threading.RLock()
    self._keep_ratio = keep_ratio
    self._gate_args = dict(samples_per_insert=samples_per_insert
                           if keep_ratio else 1e12,
                           batch_size=replay.batch_size,
                           sgd_steps_per_call=sgd_steps_per_call)
    self._min_size = min_size
    self._queue: 'queue.Queue' = queue.Queue(maxsize=queue_chunks)
    self._set_state(replay.init())
    threading.Thread(target=self._drain, args=(chunks,), daemon=True,
                     name='device-replay-drain').start()

  def _set_state(self, state) -> None:
    self.state = state
    self.items = self.replay.size(state)
    self.inserted = 0  # items added in this session
    self.gate = ratio.RatioGate(
        **self._gate_args, inserted_before_min=self._min_size - self.items)

  def _drain(self, chunks: Iterator[Batch]) -> None:
    try:
      for chunk in chunks:
        self._queue.put(chunk)
    except BaseException as e:  # pylint: disable=broad-except
      self._queue.put(e)  # re-raised in the learner's thread

  def pull(self, *, timeout: Optional[float]) -> bool:
    """Adds one chunk if one arrives within `timeout` (None: don't wait)."""
    try:
      chunk = (self._queue.get_nowait() if timeout is None
               else self._queue.get(timeout=timeout))
    except queue.Empty:
      return False
    if isinstance(chunk, BaseException):
      raise RuntimeError('the replay transport failed') from chunk
    with self.lock:
      self.state = self.replay.add(self.state, chunk)
      n = self.replay.chunk_size
      self.items = min(self.items + n, self.replay.capacity)
      self.inserted += n
      self.gate.insert(n)
    return True

  def wait_until_owed(self, stop: Optional[Callable[[], bool]] = None
                      ) -> bool:
    """Blocks (draining) until the ratio allows one more learner call, or
    until `stop()` is true (then returns False)."""
    while not self._keep_ratio and self.pull(timeout=None):
      pass
    while not self.gate.owed():
      if stop is not None and stop():
        return False
      self.pull(timeout=0.1)
    return True

  def called(self) -> None:
    self.gate.called()

  def realised_samples_per_insert(self) -> float:
    """Sampled / inserted transitions since the buffer reached min_size."""
    return self.gate.realised()

  def to_host(self) -> Dict[str, Any]:
    """The buffer for a checkpoint, after adding the chunks already drained
    (those still inside the drain's reverb streams, at most a few hundred
    items, are in no checkpoint: BUILD_NOTES.md)."""
    with self.lock:
      while self.pull(timeout=None):
        pass
      return self.replay.to_host(self.state)

  def restore(self, saved: Dict[str, Any]) -> None:
    with self.lock:
      self._set_state(self.replay.from_host(saved))
