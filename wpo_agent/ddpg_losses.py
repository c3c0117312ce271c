"""DDPG's policy loss as a pure function: `rlax.dpg_loss`, batched.

The DDPG policy is deterministic: a = tanh(mu_theta(s)) (Acme: an MLP, a
near-zero-initialised linear layer and `TanhToSpec`), with Gaussian exploration
noise a + sigma * N(0, I) (Acme's D4PG: sigma = 0.3, `rlax.add_gaussian_noise`)
added by the actors only; the learner never sees the noise.

The critic needs nothing new: its target is `losses.critic_td_loss` with one
"sample", the target policy's action at the bootstrap state, q_t_samples =
Qbar(s_{t+n}, pibar(s_{t+n}))[None] (any `aggregate` then gives the same
target). dq/da at the policy's actions is `losses.action_gradient` with N = 1.

Acme's learners (d4pg/learning.py `policy_loss`, td3/learning.py) vmap
`rlax.dpg_loss` over the batch and take `jnp.mean` of the [B, D] result, i.e.
the mean over batch *and* action dims: the gradient reaching each action is
-dqda / (B * D). (Acme's TF DDPG sums over D instead.) Note also that Acme's
D4PG and DDPG evaluate the policy loss at the *next* observations o_t of the
sampled transitions, and that `clipping=True` (their default) means
dqda_clipping = 1, an L2-norm clip of each example's dq/da (not elementwise).
"""

from typing import Optional

import chex
import jax
import jax.numpy as jnp

Array = jax.Array


def clip_by_l2_norm(x: Array, *, max_norm: float) -> Array:
  """Scales each row x_b [..., D] to L2 norm at most `max_norm`.

      x_b * max_norm / max(||x_b||, max_norm)

  rlax's `_clip_by_l2_norm` per example, with its "double where": zero rows
  stay zero and get finite (zero-safe) gradients.
  """
  sum_sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)  # [..., 1]
  nonzero = sum_sq > 0
  sum_sq_ones = jnp.where(nonzero, sum_sq, jnp.ones_like(sum_sq))
  norm = jnp.where(nonzero, jnp.sqrt(sum_sq_ones), sum_sq)
  return (x * max_norm) / jnp.maximum(norm, max_norm)


def dpg_loss(*, a_t: Array, dqda_t: Array,
             dqda_clipping: Optional[float]) -> Array:
  """Deterministic policy gradient loss (Silver et al. 2014), `rlax.dpg_loss`.

      g_b = clip_{L2 <= c}(dqda_b)   (no clip when dqda_clipping is None)
      L_bd = 0.5 * (sg(a_bd + g_bd) - a_bd)^2

  The value is 0.5 g^2; the gradient w.r.t. a_t is -g (so descending it moves
  the policy's action up the critic), and it reaches the policy parameters
  through a_t only. Per element, unreduced, as rlax returns it.

  Args:
    a_t: [B, D] the policy's actions (differentiable in its parameters).
    dqda_t: [B, D] dQ/da at a_t (stop-gradiented here).
    dqda_clipping: max L2 norm of each dqda_b, or None.

  Returns:
    [B, D] losses; Acme's learners take their mean.
  """
  chex.assert_rank([a_t, dqda_t], 2)
  chex.assert_equal_shape([a_t, dqda_t])
  if dqda_clipping is not None:
    if dqda_clipping <= 0:
      raise ValueError(f'dqda_clipping={dqda_clipping} must be > 0 or None')
    dqda_t = clip_by_l2_norm(dqda_t, max_norm=dqda_clipping)
  target = jax.lax.stop_gradient(dqda_t + a_t)  # [B, D]
  return 0.5 * jnp.square(target - a_t)
