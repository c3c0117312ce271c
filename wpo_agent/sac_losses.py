"""SAC losses as pure functions on arrays, after Acme's `SACLearner`.

Acme (acme/agents/jax/sac/learning.py) builds its three losses as closures over
networks; here they take arrays so that a learning step can compose them: the
twin critic's values [B, H] (H = 2 heads in Acme), log-probabilities [B] of
actions drawn from the tanh-squashed Gaussian policy, and the temperature.
Naming follows rlax: `_tm1` for the stored transition's state s and action,
`_t` for the bootstrap state s'. Shapes: B batch, D action dims, H critic heads.

The policy is Acme's `NormalTanhDistribution`: a = tanh(u), u = loc + scale *
eps, eps ~ N(0, I), with log-density (change of variables, summed over D)

    log pi(a) = sum_d [log N(u_d; loc_d, scale_d^2) - log(1 - tanh(u_d)^2)].

The temperature is alpha = exp(log_alpha) (Acme: log_alpha starts at 0, trained
by Adam(3e-4)); the target entropy is the caller's choice: Acme's `SACConfig`
defaults to 0 but its examples use `target_entropy_from_env_spec`, i.e. -|A|
(-D) for actions in [-1, 1].
"""

import math
from typing import NamedTuple, Tuple

import chex
import jax
import jax.numpy as jnp

from wpo_agent import distributions as dists

Array = jax.Array



class SquashedSample(NamedTuple):
  action: Array    # tanh(pre_tanh), [..., B, D]
  pre_tanh: Array  # u = loc + scale * eps, [..., B, D]


def squashed_sample(*, loc: Array, scale: Array, eps: Array) -> SquashedSample:
  """Reparameterised tanh-Gaussian sample: u = loc + scale * eps, a = tanh(u).

  `eps` [..., B, D] is standard normal noise (e.g. jax.random.normal); gradients
  reach loc and scale through u, as in tfp's `TransformedDistribution.sample`.
  """
  chex.assert_equal_shape([loc, scale])
  pre_tanh = loc + scale * eps
  return SquashedSample(action=jnp.tanh(pre_tanh), pre_tanh=pre_tanh)


def squashed_log_prob(*, loc: Array, scale: Array, pre_tanh: Array) -> Array:
  """log pi(tanh(u)) from the pre-tanh sample u: [..., B, D] -> [..., B]
  (`distributions.TanhGaussian.log_prob_pre_tanh`). Exact and finite for every
  u. Equals Acme's `log_prob(action)` wherever |tanh(u)| < 0.999 (see
  `acme_squashed_log_prob` for the rest).
  """
  return dists.TanhGaussian(loc, scale).log_prob_pre_tanh(pre_tanh)


def acme_squashed_log_prob(*, loc: Array, scale: Array, action: Array,
                           threshold: float) -> Array:
  """Acme's `TanhTransformedDistribution.log_prob(action)`, summed over D.

  Acme evaluates the density at the action, not at u: the action is clipped to
  +-threshold (0.999 in Acme), u = atanh(a), and where |a| >= threshold the
  density is replaced by the average density of the tail beyond it:
  log P(u >= atanh(threshold)) - log(1 - threshold) (mirrored for the left
  tail). So Acme's log pi differs from `squashed_log_prob` wherever the policy
  saturates (|u| > atanh(0.999) ~ 3.8), and its gradient there reaches loc and
  scale only through the tail probability. acme/jax/networks/distributional.py,
  `TanhTransformedDistribution.__init__`/`log_prob`.
  """
  chex.assert_equal_shape([loc, scale])
  # tfp converts the Python threshold to float32 before its atanh, even under
  # x64; so does this (it moves Acme's float64 tail values by ~1e-6).
  inverse_threshold = jnp.arctanh(jnp.float32(threshold)).astype(loc.dtype)
  log_epsilon = math.log(1.0 - threshold)
  log_left = jax.scipy.special.log_ndtr(
      (-inverse_threshold - loc) / scale) - log_epsilon
  log_right = jax.scipy.special.log_ndtr(
      -(inverse_threshold - loc) / scale) - log_epsilon
  event = jnp.clip(action, -threshold, threshold)
  u = jnp.arctanh(event)
  inner = (dists.normal_log_density(u, loc, scale) -
           dists.tanh_log_det_jacobian(u))
  per_dim = jnp.where(event <= -threshold, log_left,
                      jnp.where(event >= threshold, log_right, inner))
  return jnp.sum(per_dim, axis=-1)


def temperature(log_alpha: Array) -> Array:
  """alpha = exp(log_alpha), Acme's parametrisation of the SAC temperature."""
  return jnp.exp(log_alpha)


def sac_temperature_loss(*, log_alpha: Array, log_pi: Array,
                         target_entropy: float) -> Array:
  """Temperature loss (Haarnoja et al. 2018b, Eq. 18, as Acme writes it).

      L(log_alpha) = mean_b exp(log_alpha) * sg(-log pi(a_b|s_b) - H_target)

  Its gradient, alpha * mean(-log pi - H_target), is positive when the policy's
  entropy estimate exceeds the target, so descent lowers alpha. `log_pi` [B] is
  stop-gradiented (Acme draws a fresh sample for it; any sample of the current
  policy will do). `target_entropy`: typically -D (see the module docstring).
  """
  chex.assert_rank([log_alpha, log_pi], [0, 1])
  entropy_gap = jax.lax.stop_gradient(-log_pi - target_entropy)  # [B]
  return jnp.mean(temperature(log_alpha) * entropy_gap)


def sac_critic_loss(*, q_tm1: Array, r_t: Array, discount_t: Array, q_t: Array,
                    log_pi_t: Array, alpha: Array) -> Tuple[Array, Array]:
  """Soft TD loss of a multi-head (twin) critic, as Acme's `critic_loss`.

      y_b = sg(r_b + discount_b * (min_h Qbar_h(s'_b, a'_b)
                                   - alpha log pi(a'_b|s'_b)))
      L   = 0.5 * mean_{b,h} (Q_h(s_b, a_b) - y_b)^2

  a' ~ pi(.|s') is drawn from the *online* policy (SAC has no target policy);
  Qbar is the target critic. In Acme's terms r_t = reward_scale * reward and
  discount_t = gamma * transition.discount (the adder's gamma^(n-1) product of
  episode discounts, zero at termination), i.e. the project's n-step discount.

  Args:
    q_tm1: [B, H] online critic heads at the stored (s, a).
    r_t: [B] (scaled) n-step reward.
    discount_t: [B] bootstrap discount.
    q_t: [B, H] target critic heads at (s', a').
    log_pi_t: [B] log pi(a'|s').
    alpha: scalar temperature (gets no gradient: the target is stopped).

  Returns:
    (scalar loss, [B] targets y).
  """
  chex.assert_rank([q_tm1, r_t, discount_t, q_t, log_pi_t, alpha],
                   [2, 1, 1, 2, 1, 0])
  chex.assert_equal_shape([q_tm1, q_t])
  chex.assert_equal_shape([r_t, discount_t, log_pi_t, q_tm1[:, 0]])
  v_t = jnp.min(q_t, axis=-1) - alpha * log_pi_t  # [B]
  target = jax.lax.stop_gradient(r_t + discount_t * v_t)  # [B]
  q_error = q_tm1 - target[:, None]  # [B, H]
  return 0.5 * jnp.mean(jnp.square(q_error)), target


def sac_actor_loss(*, q_pi: Array, log_pi: Array, alpha: Array) -> Array:
  """Policy loss, as Acme's `actor_loss`.

      L = mean_b [alpha log pi(a_b|s_b) - min_h Q_h(s_b, a_b)]

  a_b ~ pi(.|s_b) must be a reparameterised sample (`squashed_sample`) so that
  the gradient reaches the policy through both log pi and the online critic's
  heads `q_pi` [B, H] at (s_b, a_b). `alpha` is a constant here (stopped):
  Acme differentiates this loss w.r.t. the policy parameters only.
  """
  chex.assert_rank([q_pi, log_pi, alpha], [2, 1, 0])
  chex.assert_equal_shape([log_pi, q_pi[:, 0]])
  alpha = jax.lax.stop_gradient(alpha)
  return jnp.mean(alpha * log_pi - jnp.min(q_pi, axis=-1))
