"""dm-acme 0.4.0's wrapper stack for the Control Suite.

The oracle for wpo_agent.environments.ControlSuiteWrapper, which fuses these
wrappers into one and is tested bit for bit against them.
"""

from acme import wrappers as acme_wrappers
import dm_env
from dm_control import suite
import numpy as np
import tree

from wpo_agent import environments


class FlattenObservationsWrapper(acme_wrappers.EnvironmentWrapper):
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


def acme_wrap(env: dm_env.Environment) -> dm_env.Environment:
  """Flatten (only where needed) -> Concat -> CanonicalSpec(clip) -> SinglePrecision."""
  if any(len(s.shape) > 1 for s in tree.flatten(env.observation_spec())):
    env = FlattenObservationsWrapper(env)
  env = acme_wrappers.ConcatObservationWrapper(env)
  env = acme_wrappers.CanonicalSpecWrapper(env, clip=True)
  env = acme_wrappers.SinglePrecisionWrapper(env)
  return env


def make_acme_environment(domain: str, task: str, *, seed: int
                         ) -> dm_env.Environment:
  """The suite task behind acme's wrappers (make_environment's oracle)."""
  task = environments.resolve_task(domain, task)
  return acme_wrap(suite.load(domain, task, task_kwargs={'random': seed}))
