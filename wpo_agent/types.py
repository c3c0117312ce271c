"""The one transition schema, from the actors' writer to the learner.

Kept dependency-free (numpy typing only) so any process can import it cheaply.
"""

from typing import Any, NamedTuple

# A JAX, numpy or TensorFlow array or spec; kept loose so this module never
# imports jax.
ArrayLike = Any


class Batch(NamedTuple):
  """n-step transitions: a replay item, a dataset element, the learner's input.

  The writer (`nstep_writer`) stores one transition per replay item with these
  fields as its columns, in this order; the table signature
  (`replay.transition_signature`) is a Batch of specs; the dataset yields
  Batches of shape [K, B, ...]: K SGD steps fused into one learner call, each
  on B transitions.

  The bootstrap target of a transition is

      reward + discount * V(next_observation),

  i.e. `discount` is the complete bootstrap multiplier gamma^k * prod_j d_{t+j}
  (0 after termination) for the k <= n steps the item spans; the learner must
  NOT multiply it by gamma again (docs/algorithm.md Sec. 5).
  """
  observation: ArrayLike       # [K, B, O] float32, s_t
  action: ArrayLike            # [K, B, D] float32, a_t as sampled (unclipped)
  reward: ArrayLike            # [K, B] float32, sum_j gamma^j r_{t+j}
  discount: ArrayLike          # [K, B] float32, gamma^k x env discounts
  next_observation: ArrayLike  # [K, B, O] float32, s_{t+k}
