"""What train.csv records of a WPO SGD step, and what a mixture policy's
components do (the baselines' metrics: learning._baseline_sgd_step)."""

from typing import Dict

import jax
import jax.numpy as jnp
import optax

from wpo_agent import distributions as dists

Metrics = Dict[str, jax.Array]


def wpo_metrics(critic, policy) -> Metrics:
  """What train.csv records of one WPO SGD step (scalars), from its
  learning.CriticStep and learning.PolicyStep."""
  penalty, pi = policy.penalty, policy.pi
  return {
      'critic_loss': critic.loss,
      'policy_loss': policy.loss,
      'wpo_loss': policy.loss_wpo,
      'kl_loss': penalty.loss_kl,
      'dual_loss': penalty.loss_dual,
      'kl_mean': jnp.mean(penalty.kl_mean),
      'kl_stddev': jnp.mean(penalty.kl_stddev),
      'alpha_mean': jnp.mean(penalty.alpha_mean),
      'alpha_stddev': jnp.mean(penalty.alpha_stddev),
      'q_mean': jnp.mean(critic.q_tm1),
      'q_min': jnp.min(critic.q_tm1),
      'q_max': jnp.max(critic.q_tm1),
      'td_target_mean': jnp.mean(critic.td_target),
      'sigma_min': jnp.min(pi.scale),
      'sigma_max': jnp.max(pi.scale),
      'dq_da_abs_mean': jnp.mean(jnp.abs(policy.dq_da)),
      'policy_grad_norm': optax.global_norm(policy.grads),
      'critic_grad_norm': optax.global_norm(critic.grads),
      **mixture_metrics(pi),
  }


def mixture_metrics(pi) -> Metrics:
  """What a mixture policy's components do (batch means); {} for a Gaussian.

  Components keep their index through training (each has its own head rows), so
  `mix_weight_k` / `mix_scale_k` over time show which components the policy uses
  and how wide they are. `mix_effective_k` = exp(entropy of the weights), from 1
  (one component per state) to K; `mix_loc_spread` = the std of the K component
  means, averaged over states and action dimensions (0: all on one point).
  """
  if not isinstance(pi, dists.MixtureOfGaussians):
    return {}
  log_w = jax.nn.log_softmax(pi.logits, axis=-1)  # [B, K]
  w = jnp.exp(log_w)
  metrics = {}
  for k in range(w.shape[-1]):
    metrics[f'mix_weight_{k}'] = jnp.mean(w[..., k])
    metrics[f'mix_scale_{k}'] = jnp.mean(pi.scale[..., k, :])
  metrics['mix_effective_k'] = jnp.mean(jnp.exp(-jnp.sum(w * log_w, axis=-1)))
  metrics['mix_loc_spread'] = jnp.mean(jnp.std(pi.loc, axis=-2))
  return metrics
