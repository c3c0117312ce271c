"""n-step transition writers into reverb: one item per transition, or per chunk.

An actor's E environments are E streams of `nstep.NStepStreams`; each round
(one step of every stream) gives the transitions it completes, and a writer
sends them to a reverb table:

  TransitionWriter  one item per transition (a `types.Batch` row): the reverb
                    backend's sampled table. Its items are dm-acme 0.4.0's
                    NStepTransitionAdder's with the full bootstrap discount
                    (tests/test_nstep_writer.py compares them bit for bit).
  ChunkWriter       one item per L transitions ([L, ...] columns): the device
                    backend's transport queue, so the per-item costs (append,
                    item creation, transport) are paid once per L transitions.

Why cheaper than acme's adder: reverb's C++ TrajectoryWriter is called
directly (one `Append` of a flat 5-column step, one `CreateItem`), with no
per-step dm-tree work or reverb python history objects, and the n-step sums
of all open windows are updated together in numpy. A transition stores s_t and
s_{t+k} itself (acme's items share cells), so observations are stored twice.
Flow control: at most `max_in_flight_items` (+ the flush period) unconfirmed
items, so a blocking rate limiter or a full queue throttles the actor; given
a stop predicate (`should_stop`), a blocked writer raises WriterStopped once
it turns true, so an actor of an ending run exits instead of waiting forever.
Limits: flat array observations and actions, no extras, one table, uniform
priority.
"""

import logging
from typing import Callable, Optional

import numpy as np
import reverb
from reverb import pybind as reverb_pybind

from wpo_agent import nstep
from wpo_agent import types

_NUM_COLUMNS = len(types.Batch._fields)
# How long a write blocked by the replay's rate limiter waits before it looks
# at its stop predicate again.
_STOP_CHECK_MS = 250


class WriterStopped(Exception):
  """A write blocked by the replay gave way because the run is ending."""


def _timed_out(error: RuntimeError) -> bool:
  # How reverb's pybind writer reports a timeout (see reverb.TrajectoryWriter).
  return 'Timeout exceeded' in str(error)


class _Writer:
  """What both writers share: streams, the reverb writer, flush and close."""

  def __init__(self, client: reverb.Client, *, num_streams: int,
               n_step: int, discount: float, table: str, rows_per_item: int,
               chunk_length: int, max_in_flight_items: int,
               flush_period: int, priority: float = 1.0,
               get_signature_timeout_ms: int = 300_000,
               should_stop: Optional[Callable[[], bool]] = None):
    if n_step < 1 or num_streams < 1:
      raise ValueError(f'need n_step >= 1 and num_streams >= 1; got {n_step}, '
                       f'{num_streams}')
    if chunk_length < 1 or flush_period < 1:
      raise ValueError(f'need chunk_length >= 1 and flush_period >= 1; got '
                       f'{chunk_length}, {flush_period}')
    if max_in_flight_items < chunk_length:
      # Flush(k) forces chunks to finalize early when fewer than k items are
      # waiting for their chunk; keep k >= chunk_length to avoid that.
      raise ValueError(f'max_in_flight_items ({max_in_flight_items}) must be '
                       f'>= chunk_length ({chunk_length})')
    self.num_streams, self.n_step = num_streams, n_step
    self._discount = discount
    self._client = client
    self._table = table
    self._rows_per_item = rows_per_item  # 0: a single transition per item
    self._priority = float(priority)
    self._chunk_length = int(chunk_length)
    self._max_in_flight = int(max_in_flight_items)
    self._flush_period = int(flush_period)
    self._signature_timeout_ms = int(get_signature_timeout_ms)
    self._squeeze = [True] * _NUM_COLUMNS
    self._should_stop = should_stop
    self._stopped = False  # a stopped writer's server will not take more
    self._since_flush = 0
    self._writer = None  # reverb pybind TrajectoryWriter, created lazily
    self.streams: Optional[nstep.NStepStreams] = None  # on the first start

  def _table_dtypes(self, observation) -> types.Batch:
    """The dtypes of the table's columns (the data's without a signature)."""
    info = self._client.server_info(
        timeout=max(1, self._signature_timeout_ms // 1000))
    if self._table not in info:
      raise ValueError(f'no table {self._table!r} on the server; tables: '
                       f'{sorted(info)}')
    signature = info[self._table].signature
    if signature is None:
      return types.Batch(np.asarray(observation).dtype, np.float32,
                         np.float32, np.float32, None)
    specs = [getattr(signature, f, None) for f in types.Batch._fields]
    # Tables restored from checkpoints of earlier versions carry acme's
    # Transition signature: the same columns and an empty `extras`.
    extras = getattr(signature, 'extras', ())
    rows = self._rows_per_item
    bad = any(s is None or not hasattr(s, 'dtype') for s in specs) or extras
    if not bad and rows:  # chunks: a leading axis of `rows`
      bad = any(s.shape.as_list()[:1] != [rows] for s in specs)
    if bad:
      raise ValueError(
          f'table {self._table!r} needs the signature '
          f'replay.transition_signature(spec{f", {rows}" if rows else ""}) '
          f'(fields {types.Batch._fields}, flat arrays'
          f'{f" with {rows} rows" if rows else ""}); got {signature}')
    return types.Batch(*(np.dtype(s.dtype.as_numpy_dtype) for s in specs))

  def _get_writer(self):
    if self._writer is None:
      options = reverb_pybind.ConstantChunkerOptions(
          max_chunk_length=self._chunk_length,
          num_keep_alive_refs=self._chunk_length)
      # reverb's Client.trajectory_writer wraps this C++ writer in a python
      # class whose per-step tree/history work we avoid.
      self._writer = self._client._client.NewTrajectoryWriter(  # pylint: disable=protected-access
          options, self._signature_timeout_ms)
    return self._writer

  def _create_item(self, item: types.Batch) -> None:
    writer = self._get_writer()
    refs = writer.Append(item)
    writer.CreateItem(self._table, self._priority, [[ref] for ref in refs],
                      self._squeeze)
    self._since_flush += 1
    if self._since_flush >= self._flush_period:
      self._since_flush = 0
      self._wait_for_server(self._max_in_flight)

  def _wait_for_server(self, max_pending: int) -> None:
    """Blocks until at most `max_pending` items are unconfirmed.

    The replay's rate limiter holds inserts while the learner samples too
    little, which is forever once a run's learner has stopped. With a stop
    predicate the wait is sliced so that such a writer raises WriterStopped
    soon after the stop, rather than hold its process until it is killed.
    """
    writer = self._get_writer()
    if self._should_stop is None:
      writer.Flush(max_pending, -1)  # -1: no timeout
      return
    while True:
      try:
        writer.Flush(max_pending, _STOP_CHECK_MS)
        return
      except RuntimeError as e:
        if not _timed_out(e):
          raise
      if self._should_stop():
        self._stopped = True
        raise WriterStopped(f'{type(self).__name__}: the run is ending')

  # -- the streams -------------------------------------------------------------

  def start(self, stream: int, observation) -> None:
    """Opens `stream`'s episode at s_0 (an unfinished one is dropped)."""
    if self.streams is None:
      self.streams = nstep.NStepStreams(
          num_streams=self.num_streams, n_step=self.n_step,
          discount=self._discount, dtypes=self._table_dtypes(observation))
    self.streams.start(stream, observation)

  def add(self, *, actions, rewards, discounts, next_observations,
          last) -> None:
    """One step of every stream ([E, ...] arrays; `last` [E] bool); writes
    the transitions it completes."""
    if self.streams is None:
      raise ValueError('start() must come before add()')
    out = self.streams.add(actions=actions, rewards=rewards,
                           discounts=discounts,
                           next_observations=next_observations, last=last)
    self._write(out.batch)
    if np.any(last):
      self._episodes_ended()

  def _write(self, batch: types.Batch) -> None:
    raise NotImplementedError

  def _episodes_ended(self) -> None:
    pass

  def drop(self, stream: Optional[int] = None) -> None:
    """Abandons the open episode of `stream` (every stream: None)."""
    if self.streams is not None:
      self.streams.drop(stream)

  def flush(self, timeout_ms: Optional[int] = None) -> None:
    """Sends every item created so far and waits until the server has it.

    Used before a replay checkpoint; the open n-step windows stay open.
    """
    if self._writer is not None:
      self._writer.Flush(0, -1 if timeout_ms is None else int(timeout_ms))
    self._since_flush = 0

  def close(self, timeout_ms: Optional[int] = 10_000) -> None:
    """Flushes (waiting at most timeout_ms) and closes the reverb writer."""
    self.drop()
    if self._writer is None:
      return
    try:
      if not self._stopped:
        self.flush(timeout_ms)
    except RuntimeError as e:  # timeout: the items may still arrive
      logging.error('%s: flush before close failed: %s',
                    type(self).__name__, e)
    writer, self._writer = self._writer, None
    writer.Close()

  def __enter__(self):
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __del__(self):
    try:
      self.close()
    except Exception:  # pylint: disable=broad-except
      pass


class TransitionWriter(_Writer):
  """One reverb item per n-step transition.

  At each episode end it also flushes and waits (like acme's end_episode), so
  an episode's items can be sampled promptly.
  """

  def __init__(self, client: reverb.Client, *, num_streams: int, n_step: int,
               discount: float, table: str, priority: float = 1.0,
               chunk_length: int = 32, max_in_flight_items: int = 128,
               flush_period: int = 32,
               get_signature_timeout_ms: int = 300_000,
               should_stop: Optional[Callable[[], bool]] = None):
    """`chunk_length`: transitions per reverb chunk (why 32: BUILD_NOTES.md,
    "Actor loop"). `max_in_flight_items`: items unconfirmed by the server
    before the actor blocks, checked every `flush_period` items."""
    super().__init__(client, num_streams=num_streams, n_step=n_step,
                     discount=discount, table=table, rows_per_item=0,
                     priority=priority, chunk_length=chunk_length,
                     max_in_flight_items=max_in_flight_items,
                     flush_period=flush_period,
                     get_signature_timeout_ms=get_signature_timeout_ms,
                     should_stop=should_stop)

  def _write(self, batch: types.Batch) -> None:
    for m in range(len(batch.reward)):
      # x[m, ...] keeps 0-d arrays for R and D (faster to convert than
      # numpy scalars); reverb copies on Append.
      self._create_item(types.Batch(*(x[m, ...] for x in batch)))

  def _episodes_ended(self) -> None:
    # Finalizes all chunks and blocks until the server confirmed every item;
    # after a timeout the chunks are finalized all the same (reverb's
    # end_episode), so what is left is to wait for the server.
    try:
      self._get_writer().EndEpisode(
          True, None if self._should_stop is None else _STOP_CHECK_MS)
    except RuntimeError as e:
      if not _timed_out(e):
        raise
      self._wait_for_server(0)
    self._since_flush = 0

  def reset(self, timeout_ms: Optional[int] = None) -> None:
    """Drops every open episode; flushes and waits, as an episode end."""
    self.drop()
    if self._writer is not None:
      self._writer.EndEpisode(True, timeout_ms)
    self._since_flush = 0


class ChunkWriter(_Writer):
  """One reverb item per `rows_per_item` transitions, in arrival order.

  The last transitions that do not fill a chunk wait for the next ones:
  flush() and close() send no partial chunk (the table's items have L rows).
  """

  def __init__(self, client: reverb.Client, *, num_streams: int, n_step: int,
               discount: float, table: str, rows_per_item: int,
               max_in_flight_items: int = 2, priority: float = 1.0,
               get_signature_timeout_ms: int = 300_000,
               should_stop: Optional[Callable[[], bool]] = None):
    """`max_in_flight_items`: chunks unconfirmed by the server (checked after
    each) before the actor blocks."""
    if rows_per_item < 1:
      raise ValueError(f'rows_per_item must be >= 1, got {rows_per_item}')
    # Each appended step is a whole item: reverb chunks of one step.
    super().__init__(client, num_streams=num_streams, n_step=n_step,
                     discount=discount, table=table,
                     rows_per_item=rows_per_item, priority=priority,
                     chunk_length=1, max_in_flight_items=max_in_flight_items,
                     flush_period=1,
                     get_signature_timeout_ms=get_signature_timeout_ms,
                     should_stop=should_stop)
    self._stage: Optional[types.Batch] = None  # [L, ...], the open chunk
    self._filled = 0

  def _write(self, batch: types.Batch) -> None:
    size, first, rows = len(batch.reward), 0, self._rows_per_item
    if self._stage is None:
      self._stage = types.Batch(*(np.zeros((rows,) + x.shape[1:], x.dtype)
                                  for x in batch))
    while first < size:
      take = min(rows - self._filled, size - first)
      for buf, x in zip(self._stage, batch):
        buf[self._filled:self._filled + take] = x[first:first + take]
      self._filled += take
      first += take
      if self._filled == rows:
        self._create_item(self._stage)  # reverb copies the chunk
        self._filled = 0

  @property
  def pending_rows(self) -> int:
    """Transitions held for the next chunk (not yet in any item)."""
    return self._filled
