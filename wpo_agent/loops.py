"""The actor loop and the evaluator: the same objects in every runner.

The single-process runner, the distributed actor and evaluator nodes and the
benchmarks all step environments through `ActorLoop` and evaluate through
`Evaluator`. Nothing here imports reverb, Launchpad or TensorFlow.
"""

from typing import Any, Mapping, Optional, Protocol

import dm_env
import numpy as np

from wpo_agent import acting


class RowWriter(Protocol):
  def write(self, row: Mapping[str, Any]) -> None:
    ...


class ActorLoop:
  """Steps one environment with one actor; the actor's writer records it.

  `step()` makes one environment step, starting an episode first when none is
  open, so a caller's loop decides after every step whether to learn, log,
  checkpoint or stop. An unfinished episode is simply left open.
  """

  def __init__(self, environment: dm_env.Environment, actor: acting.WPOActor):
    self._environment = environment
    self._actor = actor
    self._timestep: Optional[dm_env.TimeStep] = None
    self.episodes = 0  # completed episodes
    self.steps = 0

  def step(self) -> None:
    """One environment step (`episodes` counts those that ended one)."""
    if self._timestep is None or self._timestep.last():
      self._timestep = self._environment.reset()
      self._actor.observe_first(self._timestep)
    action = self._actor.select_action(self._timestep.observation)
    self._timestep = self._environment.step(action)
    self._actor.observe(action, next_timestep=self._timestep)
    self._actor.update()
    self.steps += 1
    if self._timestep.last():
      self.episodes += 1

  def run(self, num_steps: int) -> None:
    for _ in range(num_steps):
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
