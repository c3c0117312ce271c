"""WPOLearner: the jitted learner step behind dm-acme's Learner interface.

Implements `acme.core.Learner` (step), `VariableSource` (get_variables: actors get
the TARGET policy parameters, as in Acme's WPO) and `Saveable` (save/restore of
the full TrainingState).
"""

import time
from typing import Any, Dict, Iterator, List, Optional, Sequence

import acme
import jax
import numpy as np

from wpo_agent import config as config_lib
from wpo_agent import learning
from wpo_agent import networks as networks_lib
from wpo_agent.types import Batch


class WPOLearner(acme.Learner, acme.Saveable):
  """Pulls [K, B] batches from `iterator` and runs K fused SGD steps per call."""

  def __init__(self,
               networks: networks_lib.WPONetworks,
               config: config_lib.WPOConfig,
               iterator: Iterator[Batch],
               key: jax.Array,
               logger: Optional[Any] = None,
               log_every: int = 10):
    self._config = config
    self._iterator = iterator
    self._logger = logger
    self._log_every = log_every
    self._state = learning.init_training_state(networks, config, key)
    # Donating the state lets XLA update parameters in place.
    self._learner_step = jax.jit(learning.make_learner_step(networks, config),
                                 donate_argnums=0)
    self._calls = 0
    self._last_metrics: Dict[str, float] = {}
    self._policy_cache = None  # (steps, host copy of target policy params)

  @property
  def state(self) -> learning.TrainingState:
    return self._state

  @property
  def sgd_steps(self) -> int:
    return int(self._state.steps)

  @property
  def last_metrics(self) -> Dict[str, float]:
    return self._last_metrics

  def step(self) -> Dict[str, float]:
    """One call = `sgd_steps_per_learner_step` SGD steps on one [K, B] batch."""
    batch = next(self._iterator)
    if self._config.sgd_steps_per_learner_step == 1:
      batch = jax.tree.map(lambda x: x[None], batch)  # [B, ...] -> [1, B, ...]
    self._state, metrics = self._learner_step(self._state, batch)
    self._calls += 1
    if self._logger is not None and self._calls % self._log_every == 0:
      self._last_metrics = {k: float(v) for k, v in metrics.items()}
      self._last_metrics['learner_steps'] = self.sgd_steps
      self._last_metrics['time'] = time.time()
      self._logger.write(self._last_metrics)
    return metrics

  def get_variables(self, names: Sequence[str]) -> List[Any]:
    """'policy' -> target policy params; 'critic' -> online critic params."""
    out = []
    for name in names:
      if name == 'policy':
        # Target params change only every target_update_period steps; keep a
        # host copy so frequent actor refreshes cost no device transfer.
        steps = self.sgd_steps // self._config.target_update_period
        if self._policy_cache is None or self._policy_cache[0] != steps:
          self._policy_cache = (
              steps, jax.device_get(self._state.target_policy_params))
        out.append(self._policy_cache[1])
      elif name == 'critic':
        out.append(jax.device_get(self._state.critic_params))
      else:
        raise ValueError(f'unknown variable {name!r}; valid: policy, critic')
    return out

  def save(self) -> learning.TrainingState:
    return jax.device_get(self._state)

  def restore(self, state: learning.TrainingState) -> None:
    self._state = jax.tree.map(np.asarray, state)
    self._state = jax.device_put(self._state)
    self._policy_cache = None
