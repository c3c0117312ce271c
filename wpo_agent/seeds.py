"""The seeds of a run's environments and policies, derived from its options.

Actors get fresh seeds on every resume (the actor-step count at launch is
part of their entropy) and the evaluator the same seeds for the whole run, so
a run is reproducible from its options and resume points.
"""

from typing import Tuple

import numpy as np

from wpo_agent import runs


def derive_seed(*entropy: int) -> int:
  """A 31-bit seed from integers, independent across different inputs."""
  return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0]
             % 2**31)


def actor_seeds(run: runs.RunOptions, *, actor_index: int,
                start_actor_steps: int) -> Tuple[int, int]:
  """(environment seed, policy seed) of actor environment `actor_index`:
  environment e of actor process a is index a * envs_per_actor + e, so E
  environments in one process get the seeds of E one-environment actors.

  Fresh on every resume (the run's actor-step count at launch is part of the
  entropy), and reproducible from the same (seed, index, resume point).
  """
  entropy = (run.seed, actor_index, start_actor_steps) + (
      (run.host_id,) if run.host_id else ())  # host 0: as on a single host
  return derive_seed(*entropy), derive_seed(*entropy, 1)


def evaluator_seeds(run: runs.RunOptions) -> Tuple[int, int]:
  """(environment seed, policy seed) of the evaluator: fixed for a run."""
  return run.seed + 10_000, run.seed
