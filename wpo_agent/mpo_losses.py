"""MPO's policy loss (Abdolmaleki et al., 2018) as pure functions.

A re-implementation of Acme's `acme.jax.losses.mpo.MPO.__call__` with
`per_dim_constraining=True` and `action_penalization=False`: Acme's MO-MPO
action-penalisation term (a second E-step on the out-of-[-1, 1] cost with its
own temperature) is left out. tests/test_mpo_losses.py checks loss, stats and
gradients against fixtures written by Acme's own code
(tests/reference/acme_mpo_fixtures.py).

Shapes: N action samples, B batch, D action dims, K mixture components.
"""

from typing import NamedTuple, Tuple

import chex
import jax
import jax.numpy as jnp

from wpo_agent import distributions as dists
from wpo_agent import losses

Array = jax.Array
Distribution = losses.Distribution


class MPOStats(NamedTuple):
  """Acme's `MPOStats` (same names and meaning, less MO-MPO's), then ours."""
  dual_alpha_mean: Array    # mean_d alpha_mean_d
  dual_alpha_stddev: Array  # mean_d alpha_stddev_d
  dual_temperature: Array
  loss_policy: Array        # the *total* loss, as Acme (its name, its value)
  loss_alpha: Array         # the two alpha dual losses
  loss_temperature: Array
  kl_q_rel: Array           # KL(non-parametric || target) / epsilon
  kl_mean_rel: Array        # [D] batch-mean KL_mean / epsilon_mean
  kl_stddev_rel: Array      # [D] batch-mean KL_stddev / epsilon_stddev
  q_min: Array              # mean_b min_n Q
  q_max: Array              # mean_b max_n Q
  pi_stddev_min: Array      # mean_b min over the online scales (K x D ones)
  pi_stddev_max: Array
  pi_stddev_cond: Array     # mean_b max / min of the online scales
  # Not in Acme:
  loss_cross_entropy: Array  # the two weighted cross-entropies (M-step)
  ess: Array                # mean_b 1 / (N sum_n w_nb^2), in [1/N, 1]


def e_step_weights(*, q_values: Array, temperature: Array,
                   epsilon: float) -> Tuple[Array, Array]:
  """Non-parametric E-step weights and the temperature (dual) loss.

      w_nb   = softmax_n(Q_nb / eta)                        (no gradient)
      loss_eta = eta * (epsilon + mean_b logsumexp_n(Q_nb / eta) - log N)

  loss_eta is the dual of max_q E_q[Q] s.t. KL(q || pi_bar) <= epsilon with the
  expectation under pi_bar estimated from the N samples (hence the - log N).

  Args:
    q_values: [N, B] target-critic values of N target-policy samples.
    temperature: scalar eta > 0.
    epsilon: the E-step KL bound.

  Returns:
    (weights [N, B], scalar temperature loss).
  """
  chex.assert_rank([q_values, temperature], [2, 0])
  tempered = jax.lax.stop_gradient(q_values) / temperature  # [N, B]
  weights = jax.lax.stop_gradient(jax.nn.softmax(tempered, axis=0))  # [N, B]
  log_num_samples = jnp.log(float(q_values.shape[0]))
  q_logsumexp = jax.nn.logsumexp(tempered, axis=0)  # [B]
  loss = temperature * (epsilon + jnp.mean(q_logsumexp) - log_num_samples)
  return weights, loss


def nonparametric_kl(weights: Array) -> Array:
  """Acme's estimate of KL(q || pi_bar): sum_n w_n log(N w_n + 1e-8), [B]."""
  num_samples = weights.shape[0]
  return jnp.sum(weights * jnp.log(num_samples * weights + 1e-8), axis=0)


def weighted_cross_entropy(*, policy: Distribution, actions: Array,
                           weights: Array) -> Array:
  """M-step loss: - mean_b sum_n w_nb log pi(a_nb | s_b), a scalar."""
  chex.assert_rank([actions, weights], [3, 2])
  chex.assert_equal_shape_prefix([actions, weights], 2)
  log_prob = policy.log_prob(actions)  # [N, B]
  return jnp.mean(-jnp.sum(weights * log_prob, axis=0))


def decoupled_policies(online: Distribution, target: Distribution
                       ) -> Tuple[Distribution, Distribution]:
  """(mean part, stddev part) of the online policy, as in Acme's MPO.

  Gaussian (Acme): mean part N(mu, sigma_bar), stddev part N(mu_bar, sigma).
  Mixture (our extension; Acme's MPO takes a Gaussian): the mean part has the
  online logits and locs with the target scales, the stddev part the target
  logits and locs with the online scales; so the weights are learned with the
  means (and constrained by the mean KL, see `losses.decoupled_kl`).
  """
  if isinstance(online, dists.Gaussian) and isinstance(target, dists.Gaussian):
    return (dists.Gaussian(online.loc, target.scale),
            dists.Gaussian(target.loc, online.scale))
  if (isinstance(online, dists.MixtureOfGaussians) and
      isinstance(target, dists.MixtureOfGaussians)):
    return (dists.MixtureOfGaussians(online.logits, online.loc, target.scale),
            dists.MixtureOfGaussians(target.logits, target.loc, online.scale))
  raise TypeError('mpo needs two Gaussians or two mixtures, got '
                  f'{type(online).__name__} and {type(target).__name__}.')


def _stats(*, loss, loss_ce, loss_temperature, temperature, penalty, weights,
           q_values, online, epsilons) -> MPOStats:
  epsilon, epsilon_mean, epsilon_stddev = epsilons
  scale = online.scale.reshape(online.scale.shape[0], -1)  # [B, (K *) D]
  return MPOStats(
      dual_alpha_mean=jnp.mean(penalty.alpha_mean),
      dual_alpha_stddev=jnp.mean(penalty.alpha_stddev),
      dual_temperature=temperature,
      loss_policy=loss,
      loss_alpha=penalty.loss_dual,
      loss_temperature=loss_temperature,
      kl_q_rel=jnp.mean(nonparametric_kl(weights)) / epsilon,
      kl_mean_rel=penalty.kl_mean / epsilon_mean,
      kl_stddev_rel=penalty.kl_stddev / epsilon_stddev,
      q_min=jnp.mean(jnp.min(q_values, axis=0)),
      q_max=jnp.mean(jnp.max(q_values, axis=0)),
      pi_stddev_min=jnp.mean(jnp.min(scale, axis=-1)),
      pi_stddev_max=jnp.mean(jnp.max(scale, axis=-1)),
      pi_stddev_cond=jnp.mean(jnp.max(scale, axis=-1) / jnp.min(scale, -1)),
      loss_cross_entropy=loss_ce,
      ess=jnp.mean(1.0 / jnp.sum(jnp.square(weights), axis=0)) /
      q_values.shape[0])


def mpo_policy_loss(
    *,
    online: Distribution,
    target: Distribution,
    actions: Array,
    q_values: Array,
    log_temperature: Array,
    log_alpha_mean: Array,
    log_alpha_stddev: Array,
    epsilon: float,
    epsilon_mean: float,
    epsilon_stddev: float,
) -> Tuple[Array, MPOStats]:
  """Decoupled MPO loss; its gradient trains the policy and the three duals.

      eta = alpha_from_log(log_temperature), alpha_* likewise ([D] each)
      w, L_eta = e_step_weights(Q, eta, epsilon)
      L_ce = - mean_b sum_n w_nb [log pi_mean(a_nb) + log pi_stddev(a_nb)]
      L_kl = sum_d sg(alpha_mean_d) KL_mean_d + sg(alpha_stddev_d) KL_stddev_d
      L_alpha = sum_d alpha_mean_d (eps_mean - sg(KL_mean_d)) + (stddev alike)
      loss = L_ce + L_kl + L_alpha + L_eta

  pi_mean, pi_stddev: `decoupled_policies`; KL_*_d: batch means of
  `losses.decoupled_kl(online, target)`. The duals use `losses.alpha_from_log`,
  i.e. Acme's softplus(x) + 1e-8, but with x clipped at -18 inside (Acme clips
  the parameters after each update instead): the same values and gradients
  for x > -18; at x = -18 JAX gives half the gradient and below it none (Acme:
  a tiny one). `target`, `actions` and `q_values` are stop-gradiented.

  online, target: policies of batch [B], both Gaussian or both mixtures;
  actions [N, B, D]: target-policy samples; q_values [N, B]: their target-critic
  values; log_temperature scalar; log_alpha_* [D] (per-dimension constraints);
  epsilon*: the KL bounds of the E-step and of the M-step's two parts.
  Returns (scalar loss, MPOStats).
  """
  sg = jax.lax.stop_gradient
  target, actions, q_values = sg(target), sg(actions), sg(q_values)
  chex.assert_rank([actions, q_values, log_temperature], [3, 2, 0])
  chex.assert_equal_shape_prefix([actions, q_values], 2)
  chex.assert_equal_shape([online.loc, target.loc, online.scale, target.scale])
  chex.assert_equal(online.loc.shape[:1] + online.loc.shape[-1:],
                    actions.shape[1:])  # (B, D)
  temperature = losses.alpha_from_log(log_temperature)
  weights, loss_temperature = e_step_weights(
      q_values=q_values, temperature=temperature, epsilon=epsilon)  # [N, B]
  pi_mean, pi_stddev = decoupled_policies(online, target)
  loss_ce = sum(
      weighted_cross_entropy(policy=pi, actions=actions, weights=weights)
      for pi in (pi_mean, pi_stddev))
  penalty = losses.kl_penalty(
      losses.decoupled_kl(online, target), log_alpha_mean, log_alpha_stddev,
      epsilon_mean=epsilon_mean, epsilon_stddev=epsilon_stddev)
  loss = loss_ce + penalty.loss_kl + penalty.loss_dual + loss_temperature
  stats = _stats(loss=loss, loss_ce=loss_ce, loss_temperature=loss_temperature,
                 temperature=temperature, penalty=penalty, weights=weights,
                 q_values=q_values, online=online, epsilons=(
                     epsilon, epsilon_mean, epsilon_stddev))
  return loss, stats
