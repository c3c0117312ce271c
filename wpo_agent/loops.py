"""The actor loop and the evaluator: the same objects in every runner.

The single-process runner, the distributed actor and evaluator nodes and the
benchmarks all step environments through `ActorLoop` and evaluate through
`Evaluator`. Nothing here imports reverb, Launchpad or TensorFlow.
"""

import collections
from typing import Any, Mapping, Optional, Protocol, Sequence

import dm_env
import numpy as np

from wpo_agent import acting


class RowWriter(Protocol):
  def write(self, row: Mapping[str, Any]) -> None:
    ...


class StreamWriter(Protocol):
  """nstep_writer.TransitionWriter / ChunkWriter."""

  def start(self, stream: int, observation: np.ndarray) -> None:
    ...

  def add(self, *, actions, rewards, discounts, next_observations,
          last) -> None:
    ...


class ActorLoop:
  """Steps E environments with one policy call per round; `writer` (None:
  no replay) turns each environment's steps into its n-step transitions.

  `step()` makes one round: every environment whose episode ended (or that
  never started) is reset, the policy acts on the stacked observations
  [E, O] once, and every environment steps once. So a caller's loop decides
  after every E environment steps whether to learn, log, checkpoint or stop.
  Each environment keeps its own episode: one ending mid-round leaves the
  others untouched. Unfinished episodes are simply left open.

  `first_cuts` [E] (0: none) ends environment e's first episode after that
  many steps as a time limit does (the last transition keeps its discount,
  so the critic bootstraps there): environments started together would
  otherwise stay in step, and the replay's first episodes would hold only
  the same early phase of an episode (BUILD_NOTES.md, "Decorrelated
  starts"). A cut episode counts in neither `episodes` nor `returns`.
  """

  def __init__(self, environments: Sequence[dm_env.Environment],
               actor: acting.VectorActor,
               writer: Optional[StreamWriter] = None, *,
               first_cuts: Optional[Sequence[int]] = None):
    self._environments = list(environments)
    self._actor = actor
    self._writer = writer
    num = self.num_envs = len(self._environments)
    spec = self._environments[0].observation_spec()
    self._obs = np.zeros((num,) + spec.shape, np.float32)        # [E, O]
    self._rewards = np.zeros((num,), np.float32)                  # [E]
    self._discounts = np.zeros((num,), np.float32)                # [E]
    self._last = np.ones((num,), bool)  # [E]: reset before stepping
    self._episode_return = np.zeros((num,), np.float64)
    self._cuts = np.array(first_cuts if first_cuts is not None else
                          [0] * num, np.int64)  # [E]
    if self._cuts.shape != (num,) or np.any(self._cuts < 0):
      raise ValueError(f'first_cuts={first_cuts}: one step count >= 0 per '
                       f'environment ({num})')
    self._episode_steps = np.zeros((num,), np.int64)  # [E]
    self.episodes = 0  # completed episodes, over all environments
    self.steps = 0     # environment steps, over all environments
    self.returns = collections.deque(maxlen=100)  # newest completed episodes

  def step(self) -> None:
    """One round: one step of every environment."""
    for e in np.flatnonzero(self._last):
      timestep = self._environments[e].reset()
      self._obs[e] = timestep.observation
      self._episode_return[e] = 0.0
      self._episode_steps[e] = 0
      if self._writer is not None:
        self._writer.start(e, timestep.observation)
    actions = self._actor.select_actions(self._obs)  # [E, D]
    for e, environment in enumerate(self._environments):
      timestep = environment.step(actions[e])
      self._obs[e] = timestep.observation
      self._rewards[e] = timestep.reward
      self._discounts[e] = timestep.discount
      self._last[e] = timestep.last()
    self._episode_steps += 1
    cut = (self._cuts > 0) & (self._episode_steps >= self._cuts) & ~self._last
    self._last |= cut
    self._cuts[self._last] = 0  # only the first episode is cut
    if self._writer is not None:
      self._writer.add(actions=actions, rewards=self._rewards,
                       discounts=self._discounts,
                       next_observations=self._obs, last=self._last)
    self._episode_return += self._rewards
    for e in np.flatnonzero(self._last & ~cut):
      self.returns.append(float(self._episode_return[e]))
      self.episodes += 1
    self.steps += self.num_envs
    self._actor.update(steps=self.num_envs)

  def run(self, num_steps: int) -> None:
    """Rounds until at least `num_steps` more environment steps."""
    end = self.steps + num_steps
    while self.steps < end:
      self.step()


def next_multiple(actor_steps: int, every: int) -> int:
  """The first multiple of `every` after `actor_steps`."""
  return (actor_steps // every + 1) * every


class Evaluator:
  """Deterministic-policy returns every `every` actor steps, a row each.

  The schedule follows the `every` it is given, also on a resume: the first
  evaluation is at the next multiple of `every` after `start_actor_steps`.
  `last_actor_steps`/`last_return` describe the newest evaluation (restored
  from eval.csv on a resume), so `finish` can skip a final evaluation that
  was just made.
  """

  def __init__(self, environment: dm_env.Environment, actor: acting.WPOActor,
               *, episodes: int, every: int, logger: RowWriter,
               start_actor_steps: int, last_actor_steps: Optional[int],
               last_return: Optional[float]):
    self._environment = environment
    self._actor = actor
    self._episodes = episodes
    self._every = every
    self._logger = logger
    self.next_eval = next_multiple(start_actor_steps, every)
    self.last_actor_steps = last_actor_steps
    self.last_return = last_return

  def returns(self) -> np.ndarray:
    """Undiscounted returns of `episodes` episodes with fresh parameters."""
    self._actor.update(wait=True)  # the evaluator's client refetches each call
    out = []
    for _ in range(self._episodes):
      timestep = self._environment.reset()
      total = 0.0
      while not timestep.last():
        timestep = self._environment.step(
            self._actor.select_action(timestep.observation))
        total += float(timestep.reward)
      out.append(total)
    return np.asarray(out)

  def due(self, actor_steps: int) -> bool:
    return actor_steps >= self.next_eval

  def evaluate(self, *, actor_steps: int, learner_steps: int,
               wall_time: float) -> float:
    """Evaluates now, writes the eval.csv row, returns the mean return."""
    returns = self.returns()
    self._logger.write(dict(actor_steps=actor_steps,
                            learner_steps=learner_steps,
                            eval_return_mean=float(returns.mean()),
                            eval_return_std=float(returns.std()),
                            wall_time=wall_time))
    self.next_eval = next_multiple(actor_steps, self._every)
    self.last_actor_steps = actor_steps
    self.last_return = float(returns.mean())
    return self.last_return

  def maybe_evaluate(self, *, actor_steps: int, learner_steps: int,
                     wall_time: float) -> None:
    if self.due(actor_steps):
      self.evaluate(actor_steps=actor_steps, learner_steps=learner_steps,
                    wall_time=wall_time)

  def finish(self, *, actor_steps: int, learner_steps: int,
             wall_time: float) -> None:
    """The final evaluation of a run that reached its step limit.

    Skipped when the newest evaluation was made at this very step.
    """
    if self.last_actor_steps != actor_steps:
      self.evaluate(actor_steps=actor_steps, learner_steps=learner_steps,
                    wall_time=wall_time)
