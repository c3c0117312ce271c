"""Where the learner's data comes from: one interface, one class per backend.

`learner.WPOLearner` steps through a `DataSource` without asking which one it
has; `builder.Builder.data_source` picks the implementation from
`replay_backend`:

  IteratorSource  reverb: [K, B] batches sampled on the host by a dataset
                  iterator, copied to the learner's devices for each call.
  FeedSource      device: a `device_feed.DeviceFeed` fills a ring buffer on
                  the devices, and the step samples from it inside jit, so a
                  call moves no replay data.

One learner call: `wait` (outside the learner's lock: it may block on the
actors or the rate limiter), the step on `inputs()` (inside it), `called`.
"""

import abc
import contextlib
from typing import (Any, Callable, ContextManager, Dict, Iterator, Optional,
                    Tuple)

import jax
from jax.sharding import Mesh, NamedSharding

from wpo_agent import config as config_lib
from wpo_agent import device_feed
from wpo_agent import learning
from wpo_agent import networks as networks_lib
from wpo_agent import sharding
from wpo_agent.types import Batch

# step(state, inputs) -> (state, metrics), jitted over the learner's mesh.
Step = Callable[[learning.TrainingState, Any],
                Tuple[learning.TrainingState, learning.Metrics]]
# read(like) -> a saved replay in the shapes of `like` (from a checkpoint).
ReadReplay = Callable[[Any], Any]


class DataSource(abc.ABC):
  """What WPOLearner needs of its data, whichever backend holds it."""

  @abc.abstractmethod
  def make_step(self, networks: networks_lib.WPONetworks,
                config: config_lib.WPOConfig,
                mesh: Mesh) -> Tuple[Step, NamedSharding]:
    """The jitted step over `mesh` that takes this source's inputs, and the
    TrainingState's sharding. Called once, before anything else here."""

  @abc.abstractmethod
  def compile(self, step: Step, state: learning.TrainingState,
              item: Batch) -> None:
    """Compiles `step` (and this source's own jitted code) ahead of the first
    call; `item` is one transition (shapes and dtypes)."""

  @abc.abstractmethod
  def wait(self, stop: Optional[Callable[[], bool]] = None) -> bool:
    """Blocks until the next call is owed and its data is at hand (True), or
    until `stop()` (False)."""

  @abc.abstractmethod
  def inputs(self) -> ContextManager[Any]:
    """The step's data argument after a `wait` that returned True, valid
    while the context is open: the learner runs the step inside it."""

  @abc.abstractmethod
  def called(self) -> None:
    """Bookkeeping after a call has run."""

  @abc.abstractmethod
  def stats(self) -> Dict[str, float]:
    """This source's columns of train.csv."""

  @abc.abstractmethod
  def host_replay(self) -> Optional[Dict[str, Any]]:
    """The replay this source holds, copied to the host for a checkpoint, or
    None when it holds none (reverb checkpoints its table itself)."""

  @abc.abstractmethod
  def restore_replay(self, filled_per_shard: int, read: ReadReplay) -> None:
    """Restores what `host_replay` saved with `filled_per_shard` items in
    each device shard; `read(like)` reads it from the checkpoint."""


class IteratorSource(DataSource):
  """Reverb backend: [K, B] batches from a dataset iterator.

  The iterator blocks on reverb's rate limiter, which keeps the ratio, so a
  waiting learner cannot honour `stop` (only the device backend runs on
  several hosts, whose learners must stop waiting together).
  """

  def __init__(self, batches: Iterator[Batch]):
    self._batches = batches
    self._next: Optional[Batch] = None  # placed on the devices, not yet used

  def make_step(self, networks, config, mesh):
    step, state_sharding, self._batch_sharding = (
        sharding.make_sharded_learner_step(networks, config, mesh))
    self._shape = (config.sgd_steps_per_learner_step, config.batch_size)
    return step, state_sharding

  def compile(self, step, state, item):
    batch = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(
            self._shape + x.shape, x.dtype, sharding=self._batch_sharding),
        item)
    step.lower(state, batch).compile()

  def wait(self, stop=None):
    del stop  # see the class docstring
    if self._next is None:
      self._next = jax.device_put(next(self._batches), self._batch_sharding)
    return True

  @contextlib.contextmanager
  def inputs(self):
    batch, self._next = self._next, None
    yield batch

  def called(self):
    pass

  def stats(self):
    return {}

  def host_replay(self):
    return None

  def restore_replay(self, filled_per_shard, read):
    del filled_per_shard, read  # reverb restores its table itself


class FeedSource(DataSource):
  """Device backend: the step samples the buffer that `feed` fills.

  `feed` keeps the samples-per-insert ratio, so a call is owed when its gate
  says so; the single-process runner reads that gate directly.
  """

  def __init__(self, feed: device_feed.DeviceFeed):
    self.feed = feed

  def make_step(self, networks, config, mesh):
    step, state_sharding, self._replay_sharding = (
        sharding.make_sampling_learner_step(networks, config, mesh,
                                            self.feed.replay))
    return step, state_sharding

  def compile(self, step, state, item):
    del item  # the buffer's own shapes
    with self.feed.lock:
      self.feed.replay.compile_add(self.feed.state)
      step.lower(state, self._replay_view()).compile()

  def _replay_view(self) -> Any:
    """The device buffer as the step takes it (every host's, with several)."""
    return sharding.global_view(self.feed.state, self._replay_sharding)

  def wait(self, stop=None):
    return self.feed.wait_until_owed(stop)

  @contextlib.contextmanager
  def inputs(self):
    with self.feed.lock:  # adds donate the buffer they replace
      yield self._replay_view()

  def called(self):
    self.feed.called()

  def stats(self):
    return dict(replay_items=self.feed.items,
                samples_per_insert=self.feed.realised_samples_per_insert())

  def host_replay(self):
    return self.feed.to_host()

  def restore_replay(self, filled_per_shard, read):
    like = self.feed.replay.saved_like(filled_per_shard)
    self.feed.restore(read(like))


def as_data_source(source: Any) -> DataSource:
  """`source`, or the DataSource over a bare DeviceFeed or batch iterator
  (as tests and benchmarks build them)."""
  if isinstance(source, DataSource):
    return source
  if isinstance(source, device_feed.DeviceFeed):
    return FeedSource(source)
  return IteratorSource(source)
