"""The paper's baselines as objectives over the networks: MPO, DDPG, SAC.

Each is a pair of closures that learning.py's SGD step differentiates, in the
same state, optimisers, replay batches and target networks as WPO's, so that
the policy-improvement step is the only difference (docs/algorithm.md
Sec. 10):

  critic_loss(critic_params, policy_params, target_policy_params,
              target_critic_params, duals, batch, key)
      -> (loss, ([B] Q(s, a), [B] TD targets))          in critic_params
  policy_loss(policy_params, duals, target_policy_params, critic_params,
              target_critic_params, obs [B, O], key)
      -> (loss, metrics)                                in (policy, duals)

MPO: the E-step on N target-policy samples scored by the target critic,
  decoupled KL constraints with learned duals (mpo_losses.py); its critic is
  WPO's (N target-policy samples at s', aggregated by bootstrap_aggregate).
DDPG: deterministic policy, dQ/da of the online critic at its action
  (ddpg_losses.py); critic target at the target policy's action.
SAC: tanh-squashed Gaussian, twin critics, learned entropy temperature
  (sac_losses.py); the bootstrap action is the online policy's at s'.
"""

from typing import Callable, Dict, NamedTuple

import jax
import jax.numpy as jnp

from wpo_agent import config as config_lib
from wpo_agent import ddpg_losses
from wpo_agent import losses
from wpo_agent import mpo_losses
from wpo_agent import networks as networks_lib
from wpo_agent import sac_losses
from wpo_agent.types import Batch


class MPODuals(NamedTuple):
  log_temperature: jax.Array   # []
  log_alpha_mean: jax.Array    # [D]
  log_alpha_stddev: jax.Array  # [D]


class SACDuals(NamedTuple):
  log_alpha: jax.Array  # []: the entropy temperature is exp(log_alpha)


class NoDuals(NamedTuple):
  """DDPG has no dual variable."""


def init_duals(config: config_lib.WPOConfig, action_dim: int):
  """The algorithm's dual variables at their initial values."""
  if config.algorithm == 'mpo':
    return MPODuals(
        log_temperature=jnp.asarray(config.init_log_temperature, jnp.float32),
        log_alpha_mean=jnp.full((action_dim,), config.init_log_alpha_mean,
                                jnp.float32),
        log_alpha_stddev=jnp.full((action_dim,), config.init_log_alpha_stddev,
                                  jnp.float32))
  if config.algorithm == 'sac':
    return SACDuals(jnp.asarray(config.init_log_entropy_alpha, jnp.float32))
  return NoDuals()


class Objective(NamedTuple):
  critic_loss: Callable
  policy_loss: Callable


def sampled_critic_loss(networks: networks_lib.WPONetworks,
                        config: config_lib.WPOConfig) -> Callable:
  """WPO's and MPO's critic loss: y = R + gamma_n agg_n Q_bar(s', a_n),
  a_n ~ pi_bar(.|s') (docs/algorithm.md Sec. 5)."""
  policy, critic = networks.policy.apply, networks.critic.apply

  def critic_loss(critic_params, target_policy_params, target_critic_params,
                  batch: Batch, key):
    q_tm1 = critic(critic_params, batch.observation, batch.action)  # [B]
    pi_bar_t = policy(target_policy_params, batch.next_observation)
    a_t = pi_bar_t.sample(key, (config.num_action_samples,))  # [N, B, D]
    # The critic broadcasts s_{t+n} [B, O] over the samples a_t [N, B, D].
    q_t = critic(target_critic_params, batch.next_observation, a_t)  # [N, B]
    loss, target = losses.critic_td_loss(
        q_tm1, batch.reward, batch.discount, q_t,
        aggregate=config.bootstrap_aggregate)
    return loss, (q_tm1, target)

  return critic_loss


def _mpo(networks, config) -> Objective:
  policy, critic = networks.policy.apply, networks.critic.apply
  sampled = sampled_critic_loss(networks, config)

  def critic_loss(critic_params, policy_params, target_policy_params,
                  target_critic_params, duals, batch, key):
    del policy_params, duals
    return sampled(critic_params, target_policy_params, target_critic_params,
                   batch, key)

  def policy_loss(policy_params, duals, target_policy_params, critic_params,
                  target_critic_params, obs, key):
    del critic_params
    pi, pi_bar = policy(policy_params, obs), policy(target_policy_params, obs)
    actions = jax.lax.stop_gradient(
        pi_bar.sample(key, (config.num_action_samples,)))  # [N, B, D]
    q = critic(target_critic_params, obs, actions)  # [N, B]
    loss, stats = mpo_losses.mpo_policy_loss(
        online=pi, target=pi_bar, actions=actions, q_values=q,
        log_temperature=duals.log_temperature,
        log_alpha_mean=duals.log_alpha_mean,
        log_alpha_stddev=duals.log_alpha_stddev, epsilon=config.mpo_epsilon,
        epsilon_mean=config.epsilon_mean, epsilon_stddev=config.epsilon_stddev)
    return loss, _mpo_metrics(stats)

  return Objective(critic_loss, policy_loss)


def _mpo_metrics(stats: mpo_losses.MPOStats) -> Dict[str, jax.Array]:
  return {
      'cross_entropy_loss': stats.loss_cross_entropy,
      'temperature': stats.dual_temperature,
      'temperature_loss': stats.loss_temperature,
      'alpha_mean': stats.dual_alpha_mean,
      'alpha_stddev': stats.dual_alpha_stddev,
      'dual_loss': stats.loss_alpha,
      'kl_q_rel': stats.kl_q_rel,
      'kl_mean_rel': jnp.mean(stats.kl_mean_rel),
      'kl_stddev_rel': jnp.mean(stats.kl_stddev_rel),
      'ess': stats.ess,
      'sigma_min': stats.pi_stddev_min,
      'sigma_max': stats.pi_stddev_max,
  }


def _ddpg(networks, config) -> Objective:
  policy, critic = networks.policy.apply, networks.critic.apply
  clipping = config.dqda_clipping or None  # 0: none

  def critic_loss(critic_params, policy_params, target_policy_params,
                  target_critic_params, duals, batch, key):
    del policy_params, duals, key
    q_tm1 = critic(critic_params, batch.observation, batch.action)  # [B]
    a_t = policy(target_policy_params, batch.next_observation).mode()
    q_t = critic(target_critic_params, batch.next_observation,
                 a_t)[None]  # [1, B]: one bootstrap action
    loss, target = losses.critic_td_loss(q_tm1, batch.reward, batch.discount,
                                         q_t, aggregate='mean')
    return loss, (q_tm1, target)

  def policy_loss(policy_params, duals, target_policy_params, critic_params,
                  target_critic_params, obs, key):
    del duals, target_policy_params, target_critic_params, key
    a = policy(policy_params, obs).mode()  # [B, D]
    dqda = losses.action_gradient(
        lambda x: critic(critic_params, obs, x), a[None],
        samples_per_chunk=0)[0]  # [B, D]
    # Acme's D4PG: the mean over [B, D] of rlax.dpg_loss.
    loss = jnp.mean(ddpg_losses.dpg_loss(a_t=a, dqda_t=dqda,
                                         dqda_clipping=clipping))
    return loss, {'dq_da_abs_mean': jnp.mean(jnp.abs(dqda))}

  return Objective(critic_loss, policy_loss)


def _sac(networks, config) -> Objective:
  policy, critic = networks.policy.apply, networks.critic.apply
  target_entropy = config.target_entropy_per_dim * networks.action_dim

  def critic_loss(critic_params, policy_params, target_policy_params,
                  target_critic_params, duals, batch, key):
    del target_policy_params  # SAC bootstraps with the online policy
    q_tm1 = critic(critic_params, batch.observation, batch.action)  # [B, 2]
    a_t, log_pi_t = policy(policy_params,
                           batch.next_observation).sample_with_log_prob(key)
    q_t = critic(target_critic_params, batch.next_observation, a_t)  # [B, 2]
    loss, target = sac_losses.sac_critic_loss(
        q_tm1=q_tm1, r_t=batch.reward, discount_t=batch.discount, q_t=q_t,
        log_pi_t=jax.lax.stop_gradient(log_pi_t),
        alpha=jax.lax.stop_gradient(sac_losses.temperature(duals.log_alpha)))
    return loss, (jnp.min(q_tm1, axis=-1), target)

  def policy_loss(policy_params, duals, target_policy_params, critic_params,
                  target_critic_params, obs, key):
    del target_policy_params, target_critic_params
    pi = policy(policy_params, obs)
    a, log_pi = pi.sample_with_log_prob(key)  # reparameterised: [B, D], [B]
    alpha = sac_losses.temperature(duals.log_alpha)
    actor = sac_losses.sac_actor_loss(
        q_pi=critic(critic_params, obs, a), log_pi=log_pi, alpha=alpha)
    temperature = sac_losses.sac_temperature_loss(
        log_alpha=duals.log_alpha, log_pi=log_pi,
        target_entropy=target_entropy)
    return actor + temperature, {
        'actor_loss': actor, 'temperature_loss': temperature,
        'temperature': alpha, 'entropy': -jnp.mean(log_pi),
        'sigma_min': jnp.min(pi.scale), 'sigma_max': jnp.max(pi.scale)}

  return Objective(critic_loss, policy_loss)


def make_objective(networks: networks_lib.WPONetworks,
                   config: config_lib.WPOConfig) -> Objective:
  """The baseline `config.algorithm`'s losses, closed over networks/config."""
  makers = {'mpo': _mpo, 'ddpg': _ddpg, 'sac': _sac}
  if config.algorithm not in makers:
    raise ValueError(f'no baseline objective for algorithm='
                     f'{config.algorithm!r}; baselines: {sorted(makers)}')
  return makers[config.algorithm](networks, config)
