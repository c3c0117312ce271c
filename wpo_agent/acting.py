"""Acting: a variable client and the WPO actor (acme.core.Actor).

Actors always run on the CPU, also on hosts with an accelerator: their inputs
(parameters, PRNG key) are committed to the CPU device, so the jitted policy
step is placed there. This does not stop JAX from initialising (and, by
default, preallocating memory on) the accelerator in an actor process: launch
actor/evaluator processes with JAX_PLATFORMS=cpu on accelerator hosts.

Nothing here imports reverb, launchpad's runtime or TensorFlow (importing
`acme` pulls only launchpad's lazy-loader stub).
"""

from typing import Any, Optional, Sequence

from acme import core
import dm_env
import jax
import numpy as np

Params = Any


class VariableClient:
  """Fetches a named variable from a VariableSource every `update_period` calls.

  `source` is anything with `get_variables(names) -> Sequence` (an acme
  VariableSource, e.g. the learner or a launchpad handle to it; the WPO learner
  serves the TARGET policy parameters under 'policy'). Fetches are synchronous:
  at ~1 ms per actor step and the default period of 1000 steps, a fetch costing
  a few ms is well under 1% of acting time.
  """

  def __init__(self, source: core.VariableSource, key: str = 'policy',
               update_period: int = 1000):
    if update_period < 1:
      raise ValueError(f'update_period must be >= 1, got {update_period}')
    self._source = source
    self._key = key
    self._update_period = update_period
    self._calls = 0
    self._params: Optional[Params] = None

  @property
  def params(self) -> Params:
    """The latest fetched value; fetched now if never fetched before."""
    if self._params is None:
      self.update_and_wait()
    return self._params

  def update(self, wait: bool = False) -> None:
    """Counts a call; refetches on every `update_period`-th call.

    `wait` exists for acme API compatibility; fetching is always synchronous.
    """
    del wait
    self._calls += 1
    if self._calls >= self._update_period:
      self._calls = 0
      self.update_and_wait()

  def update_and_wait(self) -> None:
    """Refetches now."""
    values = self._source.get_variables([self._key])
    if len(values) != 1:
      raise ValueError(f'get_variables([{self._key!r}]) returned {len(values)} '
                       'values, expected 1')
    self._params = values[0]


class WPOActor(core.Actor):
  """Samples actions from the policy (or takes its mode: the evaluator).

  policy_network: a flax module whose apply(params, obs [B, O]) returns a
  distribution with .sample(key, shape) -> [*shape, B, D] and .mode() -> [B, D]
  (wpo_agent.networks.GaussianPolicy / MixturePolicy).

  select_action(obs [O]) -> np.float32 [D] is ONE jitted call per step (the key
  is split inside it). Actions are not clipped: the environment wrapper clips,
  and replay stores the action as sampled.
  """

  def __init__(self,
               policy_network,
               variable_client: VariableClient,
               seed: int,
               adder=None,
               deterministic: bool = False):
    self._client = variable_client
    self._adder = adder
    self._deterministic = deterministic
    self._cpu = jax.devices('cpu')[0]
    with jax.default_device(self._cpu):
      self._key = jax.device_put(jax.random.PRNGKey(seed), self._cpu)
    self._raw_params: Optional[Params] = None  # as served by the client
    self._params: Optional[Params] = None      # the same, committed to CPU

    def step(params, key, obs):
      # obs [O] -> action [D]; returns the next key too (one call per step).
      key, sample_key = jax.random.split(key)
      dist = policy_network.apply(params, obs[None])  # batch of 1
      if deterministic:
        action = dist.mode()
      else:
        action = dist.sample(sample_key)
      return action[0], key

    self._step = jax.jit(step)

  @property
  def params(self) -> Params:
    """The policy parameters in use (CPU copies of the client's)."""
    return self._sync_params()

  def _sync_params(self) -> Params:
    raw = self._client.params  # fetches on first use
    if raw is not self._raw_params:
      self._params = jax.device_put(raw, self._cpu)
      self._raw_params = raw
    return self._params

  def select_action(self, observation: np.ndarray) -> np.ndarray:
    obs = np.asarray(observation, dtype=np.float32)
    action, self._key = self._step(self.params, self._key, obs)
    return np.asarray(action, dtype=np.float32)

  def observe_first(self, timestep: dm_env.TimeStep) -> None:
    if self._adder is not None:
      self._adder.add_first(timestep)

  def observe(self, action: np.ndarray, next_timestep: dm_env.TimeStep) -> None:
    if self._adder is not None:
      self._adder.add(action, next_timestep)

  def update(self, wait: bool = False) -> None:
    self._client.update(wait)
    # Copy freshly fetched params to the CPU now rather than at the next step:
    # the source may reuse (e.g. donate) its buffers in between.
    self._sync_params()


class StaticVariableSource(core.VariableSource):
  """A VariableSource serving fixed values (tests, evaluation, debugging)."""

  def __init__(self, **variables: Params):
    self._variables = dict(variables)

  def get_variables(self, names: Sequence[str]) -> Sequence[Params]:
    return [self._variables[name] for name in names]

  def set(self, name: str, value: Params) -> None:
    self._variables[name] = value
