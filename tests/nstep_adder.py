"""acme's Adder API over the fast n-step writer, for tests and benchmarks.

The package's actors write through `nstep_writer.TransitionWriter` /
`ChunkWriter` directly (loops.ActorLoop); nothing there uses acme's Adder API.
The tests still need it: dm-acme's adder (`reference.acme_adder`, the oracle)
is fed through add_first/add/reset, and feeding our writer the same calls is
the simplest way to compare their items bit for bit. The benchmarks use it to
time our writer in acme's one-environment loop. So the adapter lives here,
with an actor wrapper that feeds an adder from acme's observe calls.
"""

from typing import Optional

from acme import core
from acme.adders import base as acme_adders_base
import dm_env
import numpy as np
import reverb

from wpo_agent import nstep_writer


class NStepTransitionWriter(acme_adders_base.Adder):
  """acme's Adder API over a one-stream `nstep_writer.TransitionWriter`.

  An episode ends with a LAST timestep (all its items are then written and
  flushed) or with reset() (drops the unfinished windows, like acme's
  reset). add_first during an unfinished episode resets first.
  """

  def __init__(self, client: reverb.Client, n_step: int, discount: float,
               table: str, **kwargs):
    self._writer = nstep_writer.TransitionWriter(
        client, num_streams=1, n_step=n_step, discount=discount, table=table,
        **kwargs)
    self.n_step = n_step
    self._steps = -1  # adds in the current episode; -1: no episode open

  def add_first(self, timestep: dm_env.TimeStep) -> None:
    if not timestep.first():
      raise ValueError('adder.add_first with an initial timestep (i.e. one for '
                       'which timestep.first() is True')
    if self._steps > 0:  # an unfinished episode: drop it, as reset() does
      self.reset()
    self._writer.start(0, timestep.observation)
    self._steps = 0

  def add(self, action, next_timestep: dm_env.TimeStep, extras=()) -> None:
    if self._steps < 0:
      raise ValueError('adder.add_first must be called before adder.add.')
    if extras is not None and not (hasattr(extras, '__len__') and
                                   len(extras) == 0):
      raise NotImplementedError('extras are not supported: an item is a '
                                'types.Batch row')
    last = next_timestep.last()
    self._writer.add(actions=np.asarray(action)[None],
                     rewards=np.asarray(next_timestep.reward)[None],
                     discounts=np.asarray(next_timestep.discount)[None],
                     next_observations=np.asarray(
                         next_timestep.observation)[None],
                     last=np.array([last]))
    self._steps = -1 if last else self._steps + 1

  def reset(self, timeout_ms: Optional[int] = None) -> None:
    """Flushes written items and drops the current episode's open windows."""
    self._writer.reset(timeout_ms)
    self._steps = -1

  def flush(self, timeout_ms: Optional[int] = None) -> None:
    self._writer.flush(timeout_ms)

  def close(self, timeout_ms: Optional[int] = 10_000) -> None:
    self._steps = -1
    self._writer.close(timeout_ms)

  def __enter__(self) -> 'NStepTransitionWriter':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def make_adder(client: reverb.Client, *, table: str, n_step: int,
               discount: float) -> NStepTransitionWriter:
  """One environment's fast n-step writer; the same call as
  `reference.acme_adder.make_adder`, so the two swap in a test."""
  return NStepTransitionWriter(client, n_step=n_step, discount=discount,
                               table=table)


class AdderActor(core.Actor):
  """`actor` acting, `adder` recording: acme's observe calls reach both.

  Our actors do not write (loops.ActorLoop hands the transitions to a
  writer), so a test or benchmark that runs one in acme's EnvironmentLoop
  with an adder wraps it in this.
  """

  def __init__(self, actor: core.Actor, adder: acme_adders_base.Adder):
    self._actor = actor
    self._adder = adder

  def select_action(self, observation):
    return self._actor.select_action(observation)

  def observe_first(self, timestep: dm_env.TimeStep) -> None:
    self._actor.observe_first(timestep)
    self._adder.add_first(timestep)

  def observe(self, action, next_timestep: dm_env.TimeStep) -> None:
    self._actor.observe(action, next_timestep)
    self._adder.add(action, next_timestep)

  def update(self, wait: bool = False) -> None:
    self._actor.update(wait)
