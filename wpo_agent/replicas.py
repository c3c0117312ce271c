"""K replicas of one Control Suite task as one task (the paper's
high-dimensional experiment: one agent controls K humanoids at once).

A replicated task is spelled with the suffix `-xK`: task `stand-x3`, i.e.
`humanoid-stand-x3` in suites and workdir names. `environments.make_environment`
builds the K environments (each a `ControlSuiteWrapper` with its own seed from
`replica_seeds`) and wraps them in `ReplicaEnvironment`:
  - observation: the K replicas' flat float32 observations concatenated [K*O];
  - action [-1, 1]^(K*D): cut into K equal parts in order, part i to replica i;
  - reward: `softmin` of the K rewards (a smooth minimum biased toward the
    worst replica); discount: the product of the K discounts;
  - every replica starts and ends its episode together.

Pure numpy and dm_env: no JAX, no dm_control import (the caller builds the
replicas).
"""

import math
import re
from typing import List, Optional, Sequence, Tuple

import dm_env
import numpy as np

# The suffix that asks for replicas: '<task>-x<K>'.
SUFFIX = '-x'
# More replicas step K physics per environment step, serially, and grow the
# observation and action K-fold: the paper goes to K = 5, and 16 humanoids
# (1072 observations, 336 actions, ~10 kB per replay item, ~10 GB per
# million) is far beyond it; a larger K is more likely a typo than an
# experiment. Memory below the cap is still checked (device_replay's
# check_replay_fits).
MAX_REPLICAS = 16
# The smooth minimum's temperature. Rewards lie in [0, 1]: at 0.1 one failing
# replica (reward 0, the others 1) weighs e^10 ~ 22,000 times one that
# succeeds, so the combined reward stays near the minimum (0.11 at K = 3,
# 0.16 at K = 5, where the mean is 0.67 and 0.8), yet every replica's
# improvement still moves it.
DEFAULT_TEMPERATURE = 0.1

_COUNT = re.compile(r'[1-9][0-9]*')


class ReplicaCountError(ValueError):
  """A replica suffix that is not '-x<K>' with K in [1, MAX_REPLICAS]."""


def split_task(task: str) -> Tuple[str, Optional[int]]:
  """(base task, K) of `task`; K is None without the suffix.

  Control Suite task names hold no '-', so the first '-' starts the suffix.

  Raises:
    ReplicaCountError: a suffix other than '-x<K>', 1 <= K <= MAX_REPLICAS.
  """
  base, dash, suffix = task.partition('-')
  if not dash:
    return task, None
  if not (suffix.startswith('x') and _COUNT.fullmatch(suffix[1:])):
    raise ReplicaCountError(
        f'its suffix {dash + suffix!r} must be {SUFFIX}K for K replicas, K '
        f'an integer from 1 to {MAX_REPLICAS}, e.g. {base}{SUFFIX}3')
  count = int(suffix[1:])
  if count > MAX_REPLICAS:
    raise ReplicaCountError(
        f'{count} replicas: at most {MAX_REPLICAS} (every step runs the K '
        'physics one after another; the paper\'s largest K is 5)')
  return base, count


def replica_count(task: str) -> int:
  """K of `task` (1 without the suffix)."""
  return split_task(task)[1] or 1


def replica_seeds(seed: Optional[int], *, count: int) -> List[Optional[int]]:
  """Each replica's environment seed: replica 0 uses `seed` itself (so `-x1`
  is the plain task with the same seed), replica i > 0 the i-th child of
  numpy's SeedSequence(seed) (independent of it and of each other). A None
  seed (random) stays None for every replica: each draws its own."""
  if seed is None:
    return [None] * count
  children = np.random.SeedSequence(seed).spawn(count)
  return [seed] + [int(c.generate_state(1)[0]) for c in children[1:]]


def check_temperature(value) -> None:
  """ValueError unless `value` is a finite number > 0."""
  if (isinstance(value, bool) or not isinstance(value, (int, float)) or
      not math.isfinite(value) or value <= 0):
    raise ValueError(
        f'--replica_temperature={value}: must be a finite number > 0 (the '
        'smooth minimum\'s temperature over the replicas\' rewards; default '
        f'{DEFAULT_TEMPERATURE})')


def softmin(rewards, *, temperature: float) -> np.ndarray:
  """-tau log(mean_i exp(-r_i / tau)): a smooth minimum of `rewards` [K].

  Computed around the minimum m, with expm1/log1p, so that neither a small
  tau (exp underflows to 0, the value goes to m) nor a large one (exp rounds
  to 1, the value must still go to the mean) loses it:
  m - tau log1p(mean_i expm1(-(r_i - m) / tau)).

  Returns:
    A float32 0-d array in [min, mean]: r itself for K = 1 or equal rewards.
  """
  r = np.asarray(rewards, np.float64)
  low, mean = r.min(), r.mean()
  value = low - temperature * np.log1p(
      np.mean(np.expm1(-(r - low) / temperature)))
  # Exactly it lies in [min, mean] (Jensen); rounding must not leave it.
  return np.array(min(max(value, low), mean), np.float32)


def _tiled(spec, count: int):
  """A 1-D spec [N] repeated `count` times: [count * N]."""
  bounds = {}
  if isinstance(spec, dm_env.specs.BoundedArray):
    # Scalar bounds (the observations' +-inf) broadcast; per-entry ones repeat.
    bounds = {name: np.tile(value, count) if np.ndim(value) else value
              for name, value in (('minimum', spec.minimum),
                                  ('maximum', spec.maximum))}
  return spec.replace(shape=(count * spec.shape[0],), **bounds)


class ReplicaEnvironment(dm_env.Environment):
  """K environments stepped in lockstep as one (see the module docstring).

  Episodes start together and end together: at the tasks' time limit, or
  when any replica's episode ends first (Control Suite tasks hardly
  terminate early), which then ends the episode for all, with the product
  of the discounts (0 where that replica terminated). `_step_limit` and
  `control_timestep` are replica 0's (every replica runs the same task),
  so `environments.episode_length` works as for one environment.
  """

  def __init__(self, replicas: Sequence[dm_env.Environment], *,
               temperature: float):
    check_temperature(temperature)
    self._replicas = list(replicas)
    self._temperature = temperature
    first = self._replicas[0]
    count = len(self._replicas)
    self._action_size = first.action_spec().shape[0]
    self._observation_spec = _tiled(first.observation_spec(), count)
    self._action_spec = _tiled(first.action_spec(), count)
    self._reset_next = True

  @property
  def replicas(self) -> List[dm_env.Environment]:
    """The K environments, in action/observation order."""
    return list(self._replicas)

  @property
  def _step_limit(self):
    return getattr(self._replicas[0], '_step_limit', None)

  def control_timestep(self) -> float:
    return self._replicas[0].control_timestep()

  def reset(self) -> dm_env.TimeStep:
    self._reset_next = False
    timesteps = [env.reset() for env in self._replicas]
    return dm_env.restart(np.concatenate([t.observation for t in timesteps]))

  def step(self, action) -> dm_env.TimeStep:
    if self._reset_next:  # as dm_control: a step after the last one resets
      return self.reset()
    parts = np.reshape(action, (len(self._replicas), self._action_size))
    timesteps = [env.step(a) for env, a in zip(self._replicas, parts)]
    last = any(t.last() for t in timesteps)
    self._reset_next = last
    discount = np.prod(np.array([t.discount for t in timesteps], np.float32))
    return dm_env.TimeStep(
        dm_env.StepType.LAST if last else dm_env.StepType.MID,
        softmin([t.reward for t in timesteps],
                temperature=self._temperature),
        np.asarray(discount, np.float32),
        np.concatenate([t.observation for t in timesteps]))

  def observation_spec(self):
    return self._observation_spec

  def action_spec(self):
    return self._action_spec

  def reward_spec(self):
    return self._replicas[0].reward_spec()

  def discount_spec(self):
    return self._replicas[0].discount_spec()

  def close(self) -> None:
    for env in self._replicas:
      env.close()


def physics_of(environment) -> list:
  """The physics to render: each replica's, else the environment's own."""
  if isinstance(environment, ReplicaEnvironment):
    return [env.physics for env in environment.replicas]
  return [environment.physics]
