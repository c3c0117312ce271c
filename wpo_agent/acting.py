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

  def update(self, wait: bool = False, steps: int = 1) -> None:
    """Counts `steps` environment steps (one call: one step); refetches
    when `update_period` steps have passed since the last fetch.

    `wait` exists for acme API compatibility; fetching is always synchronous.
    """
    del wait
    self._calls += steps
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


def policy_step(policy_network, *, deterministic: bool):
  """(params, key, obs [O]) -> (action [D], next key): one environment's
  action; the key is split inside, so a step is one jitted call."""

  def step(params, key, obs):
    key, sample_key = jax.random.split(key)
    dist = policy_network.apply(params, obs[None])  # batch of 1
    action = dist.mode() if deterministic else dist.sample(sample_key)
    return action[0], key

  return step


class _CpuParams:
  """The client's latest parameters, committed to the CPU."""

  def __init__(self, client: VariableClient):
    self.client = client
    self._cpu = jax.devices('cpu')[0]
    self._raw: Optional[Params] = None  # as served by the client
    self._params: Optional[Params] = None  # the same, on the CPU

  def get(self) -> Params:
    raw = self.client.params  # fetches on first use
    if raw is not self._raw:
      self._params = jax.device_put(raw, self._cpu)
      self._raw = raw
    return self._params

  def keys(self, seeds: Sequence[int]) -> jax.Array:
    """PRNG keys [len(seeds), 2] on the CPU."""
    with jax.default_device(self._cpu):
      return jax.device_put(
          jax.numpy.stack([jax.random.PRNGKey(s) for s in seeds]), self._cpu)


class VectorActor:
  """The stochastic policy of E environments: one jitted call per round.

  Environment e draws from its own key, PRNGKey(seeds[e]), exactly as a
  `WPOActor` with that seed (the keys are bit-identical); the actions agree
  with that actor's to float rounding (~1e-7), because XLA's CPU matmul
  sums in a different order for E rows than for one. With E = 1 they are
  bit-identical.
  """

  def __init__(self, policy_network, variable_client: VariableClient,
               seeds: Sequence[int]):
    self._params = _CpuParams(variable_client)
    self._keys = self._params.keys(seeds)  # [E, 2]
    self._step = jax.jit(jax.vmap(
        policy_step(policy_network, deterministic=False),
        in_axes=(None, 0, 0)))

  @property
  def params(self) -> Params:
    return self._params.get()

  def select_actions(self, observations: np.ndarray) -> np.ndarray:
    """observations [E, O] -> actions [E, D] (float32, not clipped)."""
    actions, self._keys = self._step(self.params, self._keys,
                                     np.asarray(observations, np.float32))
    return np.asarray(actions, dtype=np.float32)

  def update(self, steps: int) -> None:
    """Counts `steps` environment steps towards a parameter refetch."""
    self._params.client.update(steps=steps)
    # Copy freshly fetched params to the CPU now rather than at the next
    # round: the source may reuse (e.g. donate) its buffers in between.
    self._params.get()


class WPOActor(core.Actor):
  """Samples actions from the policy (or takes its mode: the evaluator).

  policy_network: a flax module whose apply(params, obs [B, O]) returns a
  distribution with .sample(key, shape) -> [*shape, B, D] and .mode() -> [B, D]
  (wpo_agent.networks.GaussianPolicy / MixturePolicy).

  select_action(obs [O]) -> np.float32 [D] is ONE jitted call per step (the key
  is split inside it). Actions are not clipped: the environment wrapper clips,
  and replay stores the action as sampled. It writes no replay: the evaluator
  uses it as it is; tests/nstep_adder.py wraps it to feed an acme adder.
  """

  def __init__(self,
               policy_network,
               variable_client: VariableClient,
               seed: int,
               deterministic: bool = False):
    self._client = variable_client
    self._params = _CpuParams(variable_client)
    self._key = self._params.keys([seed])[0]
    self._step = jax.jit(policy_step(policy_network,
                                     deterministic=deterministic))

  @property
  def params(self) -> Params:
    """The policy parameters in use (CPU copies of the client's)."""
    return self._params.get()

  def select_action(self, observation: np.ndarray) -> np.ndarray:
    obs = np.asarray(observation, dtype=np.float32)
    action, self._key = self._step(self.params, self._key, obs)
    return np.asarray(action, dtype=np.float32)

  def observe_first(self, timestep: dm_env.TimeStep) -> None:
    """Nothing to record: the loop's writer, not the actor, writes replay."""

  def observe(self, action: np.ndarray, next_timestep: dm_env.TimeStep) -> None:
    """Nothing to record (see observe_first)."""

  def update(self, wait: bool = False) -> None:
    self._client.update(wait)
    # Copy freshly fetched params to the CPU now rather than at the next step:
    # the source may reuse (e.g. donate) its buffers in between.
    self._params.get()


class StaticVariableSource(core.VariableSource):
  """A VariableSource serving fixed values (tests, evaluation, debugging)."""

  def __init__(self, **variables: Params):
    self._variables = dict(variables)

  def get_variables(self, names: Sequence[str]) -> Sequence[Params]:
    return [self._variables[name] for name in names]

  def set(self, name: str, value: Params) -> None:
    self._variables[name] = value
