"""DeepMind Control Suite environments in the form the agent consumes.

`make_environment(domain, task, seed)` returns a dm_env.Environment with
  - observations: one flat float32 vector [O] (the suite's observation dict
    flattened and concatenated in the spec's key order);
  - actions: a BoundedArray [-1, 1]^D (float32); actions are affinely mapped to
    the suite's bounds and CLIPPED there, so any real-valued action is accepted
    (the policy is an unbounded Gaussian; replay stores the unclipped action);
  - rewards and discounts: float32 scalars.

A task name may carry the suffix `-xK` (e.g. `stand-x3`): K replicas of the
task as one (replicas.py), which `resolve_task` and `make_environment`
understand, so every caller that names a task gets it.

ControlSuiteWrapper does all of the above in one pass with precomputed state
(~40-50 us/step less than dm-acme 0.4.0's wrapper stack on cheetah), with
bit-for-bit the same observations, rewards, discounts, step types and specs as
that stack (the test oracle tests/reference/acme_wrappers.py).
"""

from typing import Dict, Optional

from acme import specs
from acme import wrappers as acme_wrappers
import dm_env
from dm_control import suite
import numpy as np
import tree

from wpo_agent import replicas

# One default task per suite domain, so `--domain=humanoid` alone is meaningful.
# Rule: locomotion domains -> 'run' (the hardest speed target, the usual WPO/MPO
# benchmark choice), except walker -> 'walk' (the most reported walker task);
# otherwise the hardest task of dm_control.suite.BENCHMARKING for that domain
# (swingup over balance, turn_hard, reacher hard, hopper hop, fish swim);
# domains with no benchmarking task use 'run' if they have one, else their
# smallest variant. Domains with benchmarking tasks always default to one.
DEFAULT_TASKS: Dict[str, str] = {
    'acrobot': 'swingup',
    'ball_in_cup': 'catch',
    'cartpole': 'swingup',
    'cheetah': 'run',
    'dog': 'run',               # not in BENCHMARKING
    'finger': 'turn_hard',
    'fish': 'swim',
    'hopper': 'hop',
    'humanoid': 'run',
    'humanoid_CMU': 'run',      # not in BENCHMARKING
    'lqr': 'lqr_2_1',           # not in BENCHMARKING
    'manipulator': 'bring_ball',
    'pendulum': 'swingup',
    'point_mass': 'easy',
    'quadruped': 'run',         # not in BENCHMARKING
    'reacher': 'hard',
    'stacker': 'stack_2',       # not in BENCHMARKING
    'swimmer': 'swimmer6',
    'walker': 'walk',
}


class UnknownTaskError(ValueError):
  """An unknown domain or task; the message lists the valid choices."""


def valid_tasks(domain: str):
  """The tasks of `domain` (suite.TASKS_BY_DOMAIN); raises UnknownTaskError."""
  if domain not in suite.TASKS_BY_DOMAIN:
    raise UnknownTaskError(
        f'Unknown Control Suite domain {domain!r}. Valid domains: '
        f'{", ".join(sorted(suite.TASKS_BY_DOMAIN))}.')
  return tuple(suite.TASKS_BY_DOMAIN[domain])


def resolve_task(domain: str, task: Optional[str] = None) -> str:
  """Validated `task`, or DEFAULT_TASKS[domain] when task is None.

  A replicated task (`stand-x3`, replicas.py) is returned as given, so
  `-x1` keeps its name (a workdir or report row of K = 1 says so).
  """
  tasks = valid_tasks(domain)
  if task is None:
    task = DEFAULT_TASKS.get(domain, tasks[0])
  try:
    base, bad_suffix = replicas.split_task(task)[0], None
  except replicas.ReplicaCountError as e:
    base, bad_suffix = task.partition('-')[0], e
  if base not in tasks:  # first: 'swing-up' is a typo, not a suffix
    within = f' (in {task!r})' if base != task else ''
    raise UnknownTaskError(
        f'Unknown task {base!r}{within} for Control Suite domain {domain!r}. '
        f'Valid tasks: {", ".join(tasks)} (default: '
        f'{DEFAULT_TASKS.get(domain, tasks[0])}), each also as '
        f'<task>{replicas.SUFFIX}K for K replicas.')
  if bad_suffix:
    raise UnknownTaskError(f'Unknown task {task!r} for Control Suite domain '
                           f'{domain!r}: {bad_suffix}.')
  return task


def _single_precision_dtype(dtype) -> np.dtype:
  """The dtype acme's SinglePrecisionWrapper converts `dtype` to."""
  dtype = np.dtype(dtype)
  if np.issubdtype(dtype, np.float64):
    return np.dtype(np.float32)
  if np.issubdtype(dtype, np.int64):
    return np.dtype(np.int32)
  return dtype


def _single_precision_spec(spec):
  if spec.dtype == 'O':
    return spec
  return spec.replace(dtype=_single_precision_dtype(spec.dtype))


def _single_precision_scalar(value):
  """SinglePrecisionWrapper's conversion of a reward/discount (None stays)."""
  if value is None:
    return None
  value = np.asarray(value)
  dtype = _single_precision_dtype(value.dtype)
  return value if value.dtype == dtype else np.asarray(value, dtype=dtype)


_clip = np.core.umath.clip  # the ufunc np.clip dispatches to (no checks)


class ControlSuiteWrapper(acme_wrappers.EnvironmentWrapper):
  """The acme stack Flatten -> Concat -> CanonicalSpec(clip) -> SinglePrecision,
  fused into one wrapper with precomputed state. Bit-for-bit equivalent:

  observations: the fields of the suite's observation dict in SORTED key order
      (ConcatObservationWrapper builds a plain dict that tree.flatten sorts),
      each raveled to 1-D (scalars -> [1], [8, 2] -> [16]), concatenated and
      cast float64 -> float32 (np.concatenate(..., dtype=float32) rounds each
      element once, exactly as concatenating in float64 and then casting).
  actions: exactly CanonicalSpecWrapper(clip=True)'s arithmetic, in the
      action's own dtype (float32 for our actors): a = clip(action, -1, 1);
      a = 0.5 * (a + 1); a *= (max - min); a += min (the in-place float64
      scale/offset round back to the action's dtype, as in acme); the 0.5 is
      folded into the scale, which is exact (a power-of-two factor).
  rewards/discounts: 0-d float32 arrays (None at FIRST), as SinglePrecision.
  specs: identical to the acme stack's (obs BoundedArray 'state' [-inf, inf]
      float32; actions [-1, 1]^D float32; float32 reward/discount specs).
  Other attributes (physics, task, ...) forward to the suite environment.
  """

  def __init__(self, environment: dm_env.Environment):
    super().__init__(environment)
    obs_spec = environment.observation_spec()
    self._keys = tuple(sorted(obs_spec.keys()))  # tree.flatten's dict order
    # Fields that are not already 1-D are reshaped (C order, like np.ravel).
    self._reshape = tuple(len(obs_spec[k].shape) != 1 for k in self._keys)
    self._any_reshape = any(self._reshape)
    leaf_dtypes = [np.dtype(obs_spec[k].dtype) for k in self._keys]
    concat_dtype = np.result_type(*leaf_dtypes)
    self._obs_dtype = _single_precision_dtype(concat_dtype)
    # One rounding from float64 leaves == concatenate then cast; anything else
    # takes the two-step path to stay exact.
    self._direct = all(d == np.float64 for d in leaf_dtypes)
    size = sum(int(np.prod(obs_spec[k].shape)) for k in self._keys)
    self._observation_spec = _single_precision_spec(dm_env.specs.BoundedArray(
        shape=(size,), dtype=concat_dtype, minimum=-np.inf, maximum=np.inf,
        name='state'))

    act_spec = environment.action_spec()
    if not isinstance(act_spec, dm_env.specs.BoundedArray):
      raise TypeError(f'expected a BoundedArray action spec, got {act_spec}')
    # acme: a = 0.5 * (a + 1); a *= scale. Halving is exact (no under- or
    # overflow here), so f64(0.5 * t) * scale == f64(t) * (0.5 * scale)
    # bitwise: one ufunc less.
    self._half_scale = 0.5 * (act_spec.maximum - act_spec.minimum)
    self._offset = act_spec.minimum
    self._action_spec = _single_precision_spec(act_spec.replace(
        minimum=-np.ones(act_spec.shape), maximum=np.ones(act_spec.shape)))
    self._reward_spec = tree.map_structure(_single_precision_spec,
                                           environment.reward_spec())
    self._discount_spec = tree.map_structure(_single_precision_spec,
                                             environment.discount_spec())

  def _observation(self, observation) -> np.ndarray:
    if self._any_reshape:
      leaves = [observation[k].reshape(-1) if r else observation[k]
                for k, r in zip(self._keys, self._reshape)]
    else:
      leaves = [observation[k] for k in self._keys]
    if self._direct:
      return np.concatenate(leaves, dtype=self._obs_dtype)
    return np.asarray(np.concatenate(leaves), dtype=self._obs_dtype)

  def _timestep(self, ts: dm_env.TimeStep) -> dm_env.TimeStep:
    reward, discount = ts.reward, ts.discount
    # The suite gives Python floats or np.float64 (float subclasses): fast path.
    if isinstance(reward, float):
      reward = np.array(reward, dtype=np.float32)
    elif reward is not None:
      reward = _single_precision_scalar(reward)
    if isinstance(discount, float):
      discount = np.array(discount, dtype=np.float32)
    elif discount is not None:
      discount = _single_precision_scalar(discount)
    return dm_env.TimeStep(ts.step_type, reward, discount,
                           self._observation(ts.observation))

  def reset(self) -> dm_env.TimeStep:
    return self._timestep(self._environment.reset())

  def step(self, action) -> dm_env.TimeStep:
    a = _clip(action, -1.0, 1.0)  # a new array in the action's dtype
    np.add(a, 1.0, out=a)  # rounds in the action's dtype, as acme
    np.multiply(a, self._half_scale, out=a)  # in float64, stored back
    np.add(a, self._offset, out=a)
    return self._timestep(self._environment.step(a))

  def observation_spec(self):
    return self._observation_spec

  def action_spec(self):
    return self._action_spec

  def reward_spec(self):
    return self._reward_spec

  def discount_spec(self):
    return self._discount_spec


def make_environment(
    domain: str, task: Optional[str], *, seed: Optional[int],
    replica_temperature: float = replicas.DEFAULT_TEMPERATURE
) -> dm_env.Environment:
  """Loads suite `domain`/`task` (None: DEFAULT_TASKS[domain]) and wraps it.

  Args:
    domain: a dm_control.suite domain, e.g. 'cartpole', 'humanoid'.
    task: a task of that domain; None picks DEFAULT_TASKS[domain];
      '<task>-xK' is K replicas of it as one task (replicas.py).
    seed: seeds the task's RandomState (initial states); None is random. A
      replicated task seeds its replicas from it (replicas.replica_seeds).
    replica_temperature: the smooth minimum's temperature over a replicated
      task's rewards (replicas.softmin); unused otherwise.

  Returns:
    A ControlSuiteWrapper: flat float32 observations [O] and [-1, 1]^D actions
    that are clipped to the suite's bounds (out-of-range actions are legal);
    for '<task>-xK' a replicas.ReplicaEnvironment of K of them ([K*O], [K*D]).

  Raises:
    UnknownTaskError (a ValueError): unknown domain or task; lists the options.
  """
  task = resolve_task(domain, task)
  base, count = replicas.split_task(task)
  if count is None:
    return ControlSuiteWrapper(suite.load(domain, task,
                                          task_kwargs={'random': seed}))
  return replicas.ReplicaEnvironment(
      [ControlSuiteWrapper(suite.load(domain, base, task_kwargs={'random': s}))
       for s in replicas.replica_seeds(seed, count=count)],
      temperature=replica_temperature)


def episode_length(env: dm_env.Environment) -> Optional[int]:
  """Agent steps in a full episode of a suite environment (its time limit
  over its control timestep: 1000 for most tasks); None where unlimited.

  dm_control has no public accessor for it: this reads the suite
  Environment's `_step_limit` (through the wrapper; a ReplicaEnvironment
  gives its replicas'), None if absent.
  """
  limit = getattr(env, '_step_limit', None)
  return int(limit) if limit is not None and np.isfinite(limit) else None


def staggered_first_episodes(length: Optional[int], *, index: int,
                             count: int) -> int:
  """Where environment `index` of `count` cuts its first episode: at
  index / count of `length`, so that `count` environments started together
  spread their episodes evenly over one episode's length. 0 (no cut) for
  index 0 or an unlimited episode."""
  if not length:
    return 0
  return (index * length) // count


def environment_spec(env: dm_env.Environment) -> specs.EnvironmentSpec:
  """acme EnvironmentSpec (observations, actions, rewards, discounts)."""
  return specs.make_environment_spec(env)
