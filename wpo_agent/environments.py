"""DeepMind Control Suite environments in the form the agent consumes.

`make_environment(domain, task, seed)` returns a dm_env.Environment with
  - observations: one flat float32 vector [O] (the suite's observation dict
    flattened and concatenated in the spec's key order);
  - actions: a BoundedArray [-1, 1]^D (float32); actions are affinely mapped to
    the suite's bounds and CLIPPED there, so any real-valued action is accepted
    (the policy is an unbounded Gaussian; replay stores the unclipped action);
  - rewards and discounts: float32 scalars.

Wrappers (dm-acme 0.4.0, innermost first):
  _FlattenObservationsWrapper (here; only for suites with >1-D observation
  fields: manipulator, stacker) -> acme ConcatObservationWrapper ->
  acme CanonicalSpecWrapper(clip=True) -> acme SinglePrecisionWrapper.
"""

from typing import Dict, Optional

from acme import specs
from acme import wrappers
import dm_env
from dm_control import suite
import numpy as np
import tree

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
  """Validated `task`, or DEFAULT_TASKS[domain] when task is None."""
  tasks = valid_tasks(domain)
  if task is None:
    task = DEFAULT_TASKS.get(domain, tasks[0])
  if task not in tasks:
    raise UnknownTaskError(
        f'Unknown task {task!r} for Control Suite domain {domain!r}. Valid '
        f'tasks: {", ".join(tasks)} (default: '
        f'{DEFAULT_TASKS.get(domain, tasks[0])}).')
  return task


class _FlattenObservationsWrapper(wrappers.EnvironmentWrapper):
  """Ravels every observation field to 1-D.

  acme's ConcatObservationWrapper concatenates along axis 0 and so fails on the
  2-D fields of manipulator/stacker (e.g. arm_pos [8, 2]).
  """

  def _flatten(self, timestep: dm_env.TimeStep) -> dm_env.TimeStep:
    return timestep._replace(
        observation=tree.map_structure(np.ravel, timestep.observation))

  def reset(self) -> dm_env.TimeStep:
    return self._flatten(self._environment.reset())

  def step(self, action) -> dm_env.TimeStep:
    return self._flatten(self._environment.step(action))

  def observation_spec(self):
    def flat(spec):
      return spec.replace(shape=(int(np.prod(spec.shape)),))
    return tree.map_structure(flat, self._environment.observation_spec())


def make_environment(domain: str,
                     task: Optional[str] = None,
                     seed: Optional[int] = None) -> dm_env.Environment:
  """Loads suite `domain`/`task` (default task: DEFAULT_TASKS) and wraps it.

  Args:
    domain: a dm_control.suite domain, e.g. 'cartpole', 'humanoid'.
    task: a task of that domain; None picks DEFAULT_TASKS[domain].
    seed: seeds the task's RandomState (initial states); None is random.

  Returns:
    An environment with flat float32 observations [O] and [-1, 1]^D actions
    that are clipped to the suite's bounds (out-of-range actions are legal).

  Raises:
    UnknownTaskError (a ValueError): unknown domain or task; lists the options.
  """
  task = resolve_task(domain, task)
  env = suite.load(domain, task, task_kwargs={'random': seed})
  if any(len(s.shape) > 1 for s in tree.flatten(env.observation_spec())):
    env = _FlattenObservationsWrapper(env)
  env = wrappers.ConcatObservationWrapper(env)
  env = wrappers.CanonicalSpecWrapper(env, clip=True)
  env = wrappers.SinglePrecisionWrapper(env)
  return env


def environment_spec(env: dm_env.Environment) -> specs.EnvironmentSpec:
  """acme EnvironmentSpec (observations, actions, rewards, discounts)."""
  return specs.make_environment_spec(env)
