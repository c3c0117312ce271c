"""WPOLearner: the jitted learner step behind dm-acme's Learner interface.

Implements `acme.core.Learner` (step), `VariableSource` (get_variables: actors get
the TARGET policy parameters, as in Acme's WPO) and `Saveable` (save/restore of
the full TrainingState). The step runs data-parallel over the devices of
`mesh` (`sharding.py`): the state is replicated, each [K, B] batch is split
along B; on one device this is the plain jitted step.

Its data comes through a `data_sources.DataSource`, whichever replay backend
holds it; the learner never asks which.
"""

import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import acme
import jax
import numpy as np

from wpo_agent import config as config_lib
from wpo_agent import data_sources
from wpo_agent import learning
from wpo_agent import networks as networks_lib
from wpo_agent.types import Batch


class WPOLearner(acme.Learner, acme.Saveable):
  """Runs K fused SGD steps per call on data from `source`.

  `source` is a `data_sources.DataSource`, or a bare iterator of [K, B]
  batches or `device_feed.DeviceFeed` (`data_sources.as_data_source`).
  """

  def __init__(self,
               networks: networks_lib.WPONetworks,
               config: config_lib.WPOConfig,
               source: Any,
               key: jax.Array,
               *,
               mesh: jax.sharding.Mesh,
               logger: Optional[Any],
               log_every: int = 10):
    self._config = config
    self._logger = logger
    self._log_every = log_every
    self._source = data_sources.as_data_source(source)
    self._learner_step, self._state_sharding = self._source.make_step(
        networks, config, mesh)
    self._wait_s = 0.0  # time spent waiting for data
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
  def source(self) -> data_sources.DataSource:
    return self._source

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
      self._source.compile(self._learner_step, self._state, item)

  def ready(self, stop: Optional[Callable[[], bool]] = None) -> bool:
    """Waits until the source owes a call (True) or `stop()` (False).

    With several hosts the learners call the step in lockstep, so a host
    that is asked to stop must not wait for data its stopped actors will
    never send (distributed/hosts.py). Not locked: it may block.
    """
    start = time.perf_counter()
    owed = self._source.wait(stop)
    self._wait_s += time.perf_counter() - start
    return owed

  def step(self) -> Dict[str, float]:
    """One call = `sgd_steps_per_learner_step` SGD steps."""
    self.ready()
    with self._lock:
      with self._source.inputs() as data:
        self._state, metrics = self._learner_step(self._state, data)
      self._sgd_steps += self._config.sgd_steps_per_learner_step
      self._publish()
    self._source.called()
    self._calls += 1
    if self._logger is not None and self._calls % self._log_every == 0:
      self._last_metrics = {k: float(v) for k, v in metrics.items()}
      self._last_metrics['data_wait_fraction'] = self._wait_fraction()
      self._last_metrics.update(self._source.stats())
      self._last_metrics['learner_steps'] = self.sgd_steps
      self._last_metrics['time'] = time.time()
      self._logger.write(self._last_metrics)
    return metrics

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
    """(TrainingState, the source's replay on the host or None), taken
    together."""
    with self._lock:
      return jax.device_get(self._state), self._source.host_replay()

  def restore(self, state: learning.TrainingState) -> None:
    with self._lock:
      self._state = jax.device_put(jax.tree.map(np.asarray, state),
                                   self._state_sharding)
      self._sgd_steps = int(self._state.steps)
      self._published = None
      self._publish()

  def restore_replay(self, filled_per_shard: int,
                     read: data_sources.ReadReplay) -> None:
    """Restores the replay `snapshot` saved (its source's; none with reverb,
    whose table restores itself): `read(like)` reads it in those shapes."""
    with self._lock:
      self._source.restore_replay(filled_per_shard, read)
