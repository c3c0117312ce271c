"""WPOLearner: the jitted learner step behind dm-acme's Learner interface.

Implements `acme.core.Learner` (step), `VariableSource` (get_variables: actors get
the TARGET policy parameters, as in Acme's WPO) and `Saveable` (save/restore of
the full TrainingState). The step runs data-parallel over the devices of
`mesh` (`sharding.py`): the state is replicated, each [K, B] batch is split
along B; on one device this is the plain jitted step.

Its data comes from one of the two replay backends: an iterator of [K, B]
batches (reverb, sampled on the host and copied in each call) or a
`device_feed.DeviceFeed` (sampled inside the step from the device buffer).
"""

import threading
import time
from typing import (Any, Callable, Dict, Iterator, List, Optional, Sequence,
                    Tuple, Union)

import acme
import jax
import numpy as np

from wpo_agent import config as config_lib
from wpo_agent import device_feed
from wpo_agent import learning
from wpo_agent import networks as networks_lib
from wpo_agent import sharding
from wpo_agent.types import Batch


class WPOLearner(acme.Learner, acme.Saveable):
  """Runs K fused SGD steps per call on data from `source`.

  `source` is an iterator of [K, B] batches (reverb backend) or a
  `device_feed.DeviceFeed` (device backend).
  """

  def __init__(self,
               networks: networks_lib.WPONetworks,
               config: config_lib.WPOConfig,
               source: Union[Iterator[Batch], device_feed.DeviceFeed],
               key: jax.Array,
               *,
               mesh: jax.sharding.Mesh,
               logger: Optional[Any],
               log_every: int = 10):
    self._config = config
    self._logger = logger
    self._log_every = log_every
    self.feed = None
    if isinstance(source, device_feed.DeviceFeed):
      self.feed = source
      (self._learner_step, self._state_sharding,
       self._replay_sharding) = sharding.make_sampling_learner_step(
           networks, config, mesh, source.replay)
    else:
      self._iterator = source
      self._learner_step, self._state_sharding, self._batch_sharding = (
          sharding.make_sharded_learner_step(networks, config, mesh))
    self._wait_s = 0.0  # time spent waiting for data (either backend)
    self._wait_mark = (0.0, time.perf_counter())  # at the last log row
    self._state = jax.device_put(
        learning.init_training_state(networks, config, key),
        self._state_sharding)
    self._calls = 0
    self._last_metrics: Dict[str, float] = {}
    # Serialises state access between the stepping thread and readers (courier
    # threads serving actors, a checkpointing thread): the jitted step donates
    # the old state's buffers, so nobody may read them while a step runs.
    self._lock = threading.Lock()
    self._published = None  # (target version, host copy of target policy)
    self._sgd_steps = 0  # host mirror of state.steps: reading it never syncs
    self._publish()

  @property
  def state(self) -> learning.TrainingState:
    return self._state

  @property
  def sgd_steps(self) -> int:
    return self._sgd_steps

  @property
  def last_metrics(self) -> Dict[str, float]:
    return self._last_metrics

  def _wait_fraction(self) -> float:
    """Share of the wall time since the last call of this spent waiting for
    data (the actors, the rate limiter, the dataset)."""
    waited, since = self._wait_mark
    now = time.perf_counter()
    self._wait_mark = (self._wait_s, now)
    return (self._wait_s - waited) / max(1e-9, now - since)

  def compile(self, item: Batch) -> None:
    """Compiles the step now, not in its first call.

    `item` is one transition (shapes and dtypes; e.g.
    `device_replay.transition_item`). The distributed learner calls this
    before it serves parameters, so actors, which wait for those, cannot run
    ahead while the step compiles (on a loaded machine, long enough for them
    to fill every queue and leave a short resumed run without a learner step).
    """
    with self._lock:
      if self.feed is not None:
        with self.feed.lock:
          self.feed.replay.compile_add(self.feed.state)
          self._learner_step.lower(self._state,
                                   self._replay_view()).compile()
        return
      k, b = self._config.sgd_steps_per_learner_step, self._config.batch_size
      batch = jax.tree.map(
          lambda x: jax.ShapeDtypeStruct(
              (k, b) + x.shape, x.dtype, sharding=self._batch_sharding), item)
      self._learner_step.lower(self._state, batch).compile()

  def _replay_view(self) -> Any:
    """The device buffer as the step takes it (every host's, with several)."""
    return sharding.global_view(self.feed.state, self._replay_sharding)

  def ready(self, stop: Callable[[], bool]) -> bool:
    """Waits until the replay ratio allows a call (True) or `stop()` (False).

    With several hosts the learners call the step in lockstep, so a host
    that is asked to stop must not wait for data its stopped actors will
    never send (distributed/hosts.py). Device backend only.
    """
    start = time.perf_counter()
    owed = self.feed.wait_until_owed(stop)
    self._wait_s += time.perf_counter() - start
    return owed

  def _data(self) -> Any:
    """The step's data argument; may block on the replay's ratio: not locked."""
    start = time.perf_counter()
    if self.feed is not None:
      self.feed.wait_until_owed()
      data = None  # the buffer is read under its lock: a save may add to it
    else:
      data = jax.device_put(next(self._iterator), self._batch_sharding)
    self._wait_s += time.perf_counter() - start
    return data

  def step(self) -> Dict[str, float]:
    """One call = `sgd_steps_per_learner_step` SGD steps."""
    data = self._data()
    with self._lock:
      if self.feed is None:
        self._state, metrics = self._learner_step(self._state, data)
      else:
        with self.feed.lock:  # adds donate the buffer they replace
          self._state, metrics = self._learner_step(self._state,
                                                    self._replay_view())
      self._sgd_steps += self._config.sgd_steps_per_learner_step
      self._publish()
    if self.feed is not None:
      self.feed.called()
    self._calls += 1
    if self._logger is not None and self._calls % self._log_every == 0:
      self._last_metrics = {k: float(v) for k, v in metrics.items()}
      self._last_metrics.update(self._data_metrics())
      self._last_metrics['learner_steps'] = self.sgd_steps
      self._last_metrics['time'] = time.time()
      self._logger.write(self._last_metrics)
    return metrics

  def _data_metrics(self) -> Dict[str, float]:
    out = dict(data_wait_fraction=self._wait_fraction())
    if self.feed is not None:
      out.update(replay_items=self.feed.items,
                 samples_per_insert=self.feed.realised_samples_per_insert())
    return out

  def _publish(self) -> None:
    """Refreshes the host copy of the target policy when it has changed.

    Target params change only every `target_update_period` SGD steps, so actors
    polling often cost no device transfer. Called with the lock held (or
    before any other thread exists).
    """
    version = self._sgd_steps // self._config.target_update_period
    if self._published is None or self._published[0] != version:
      self._published = (version,
                         jax.device_get(self._state.target_policy_params))

  def get_variables(self, names: Sequence[str]) -> List[Any]:
    """'policy' -> the TARGET policy params (what actors act with)."""
    published = self._published  # one read: consistent without the lock
    out = []
    for name in names:
      if name != 'policy':
        raise ValueError(f'unknown variable {name!r}; valid: policy')
      out.append(published[1])
    return out

  def save(self) -> learning.TrainingState:
    with self._lock:
      return jax.device_get(self._state)

  def snapshot(self) -> Tuple[learning.TrainingState, Optional[Dict[str, Any]]]:
    """(TrainingState, device replay on the host or None), taken together."""
    with self._lock:
      if self.feed is None:
        return jax.device_get(self._state), None
      return jax.device_get(self._state), self.feed.to_host()

  def restore(self, state: learning.TrainingState) -> None:
    with self._lock:
      self._state = jax.device_put(jax.tree.map(np.asarray, state),
                                   self._state_sharding)
      self._sgd_steps = int(self._state.steps)
      self._published = None
      self._publish()
