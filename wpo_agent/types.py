"""Data types shared by the replay, acting and learning modules.

Kept dependency-free (numpy typing only) so any process can import it cheaply.
"""

from typing import Any, NamedTuple

import numpy as np

# A JAX or numpy array; kept loose so this module never imports jax.
ArrayLike = Any


class Batch(NamedTuple):
  """A batch of n-step transitions: the learner's input.

  Shapes are [B, ...] for one SGD step, or [K, B, ...] when K SGD steps are
  fused into one learner call (a leading [K] axis on every field).

  The bootstrap target of a transition is

      reward + discount * V(next_observation),

  i.e. `discount` is the complete bootstrap multiplier gamma^n * prod_k d_{t+k}
  (0 after termination); the learner must NOT multiply it by gamma again. See
  `wpo_agent.replay` for how this differs from acme's stored discount.
  """
  observation: ArrayLike       # [B, O] float32, s_t
  action: ArrayLike            # [B, D] float32, a_t as sampled (unclipped)
  reward: ArrayLike            # [B] float32, n-step sum_k gamma^k r_{t+k}
  discount: ArrayLike          # [B] float32, gamma^n x env discounts
  next_observation: ArrayLike  # [B, O] float32, s_{t+n}


def zeros_batch(obs_dim: int, action_dim: int, batch_size: int) -> Batch:
  """An all-zero float32 Batch [B, ...]; handy for shape inits and tests."""
  f32 = np.float32
  return Batch(
      observation=np.zeros((batch_size, obs_dim), f32),
      action=np.zeros((batch_size, action_dim), f32),
      reward=np.zeros((batch_size,), f32),
      discount=np.zeros((batch_size,), f32),
      next_observation=np.zeros((batch_size, obs_dim), f32))
