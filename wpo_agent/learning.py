"""The WPO learner's state and its pure SGD step (no I/O, no Acme, no Reverb).

One SGD step (docs/algorithm.md Secs. 1-6):
  1. critic: n-step TD towards R + gamma_n * agg_n Q_bar(s_{t+n}, a_n ~ pi_bar);
  2. policy: WPO loss at N fresh online-policy samples, with grad_a Q from the
     online critic, plus the decoupled KL to the target policy;
  3. duals: Lagrangian update of the per-dimension alphas (hard KL only);
  4. targets: hard copy of policy and critic every `target_update_period` steps.
`learner_step` fuses K such steps with `lax.scan`. Everything is batch-first and
free of per-device code, so the batch axis can be sharded over devices/hosts
by `jax.jit` shardings (see `sharding.py`).
"""

import functools
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import chex
import jax
import jax.numpy as jnp
import optax

from wpo_agent import baselines
from wpo_agent import config as config_lib
from wpo_agent import distributions as dists
from wpo_agent import losses
from wpo_agent import networks as networks_lib
from wpo_agent import train_metrics
from wpo_agent.types import Batch

Params = Any
Metrics = Dict[str, jax.Array]


class DualParams(NamedTuple):
  log_alpha_mean: jax.Array    # [D]
  log_alpha_stddev: jax.Array  # [D]


class TrainingState(NamedTuple):
  """Everything the learner needs to continue bit for bit after a restore."""
  policy_params: Params
  target_policy_params: Params
  critic_params: Params
  target_critic_params: Params
  policy_opt_state: optax.OptState
  critic_opt_state: optax.OptState
  dual_params: DualParams
  dual_opt_state: optax.OptState
  steps: jax.Array  # int32 scalar: SGD steps taken
  key: jax.Array    # PRNG key for the next step


class Optimizers(NamedTuple):
  policy: optax.GradientTransformation
  critic: optax.GradientTransformation
  dual: optax.GradientTransformation


def make_optimizers(config: config_lib.WPOConfig) -> Optimizers:
  def adam(lr):
    adam = optax.adamw(lr, b1=config.adam_b1, b2=config.adam_b2,
                       weight_decay=config.weight_decay)
    if not config.grad_norm_clip:
      return adam
    return optax.chain(optax.clip_by_global_norm(config.grad_norm_clip), adam)
  return Optimizers(policy=adam(config.policy_learning_rate),
                    critic=adam(config.critic_learning_rate),
                    dual=optax.adam(config.dual_learning_rate))


def init_training_state(networks: networks_lib.WPONetworks,
                        config: config_lib.WPOConfig,
                        key: jax.Array) -> TrainingState:
  key_init, key_state = jax.random.split(key)
  policy_params, critic_params = networks.init(key_init)
  opt = make_optimizers(config)
  dims = networks.action_dim
  if config.algorithm == 'wpo':
    duals = DualParams(
        log_alpha_mean=jnp.full((dims,), config.init_log_alpha_mean,
                                jnp.float32),
        log_alpha_stddev=jnp.full((dims,), config.init_log_alpha_stddev,
                                  jnp.float32))
  else:
    duals = baselines.init_duals(config, dims)
  return TrainingState(
      policy_params=policy_params,
      # Distinct buffers, so the jitted step may donate the whole state.
      target_policy_params=jax.tree.map(jnp.copy, policy_params),
      critic_params=critic_params,
      target_critic_params=jax.tree.map(jnp.copy, critic_params),
      policy_opt_state=opt.policy.init(policy_params),
      critic_opt_state=opt.critic.init(critic_params),
      dual_params=duals,
      dual_opt_state=opt.dual.init(duals),
      steps=jnp.zeros((), jnp.int32),
      key=key_state)


def resolve_samples_per_chunk(config: config_lib.WPOConfig,
                              backend: Optional[str] = None) -> int:
  """`action_samples_per_chunk`, with 0 (auto) resolved for the jax backend.

  On CPU, 4 samples at a time was 1.2-1.3x faster than all N (BUILD_NOTES.md);
  accelerators want one large batch.
  """
  if config.action_samples_per_chunk:
    return config.action_samples_per_chunk
  n = config.num_action_samples
  if (backend or jax.default_backend()) != 'cpu':
    return n
  return max(d for d in range(1, min(n, 4) + 1) if n % d == 0)


class LossFns(NamedTuple):
  """The named pieces of one SGD step (benchmarks time these, not copies).

  critic_loss(critic_params, target_policy_params, target_critic_params,
      batch [B], key) -> (loss, ([B] q_tm1, [B] TD targets))
  action_gradient(critic_params, obs [B, O], actions [N, B, D]) -> [N, B, D]
  policy_loss(policy_params, dual_params, target_policy_params, obs [B, O],
      actions [N, B, D], dq_da [N, B, D]) -> (loss, (wpo loss, KLPenalty, pi))
  """
  critic_loss: Callable
  action_gradient: Callable
  policy_loss: Callable


def make_loss_fns(networks: networks_lib.WPONetworks,
                  config: config_lib.WPOConfig) -> LossFns:
  """The losses of docs/algorithm.md, closed over networks and config."""
  policy_apply = networks.policy.apply
  critic_apply = networks.critic.apply
  samples_per_chunk = resolve_samples_per_chunk(config)

  critic_loss = baselines.sampled_critic_loss(networks, config)

  def action_gradient(critic_params, obs, actions):
    return losses.action_gradient(
        lambda a: critic_apply(critic_params, obs, a), actions,
        samples_per_chunk=samples_per_chunk)  # [N, B, D]

  def policy_loss(policy_params, dual_params: DualParams,
                  target_policy_params, obs, actions, dq_da):
    pi = policy_apply(policy_params, obs)
    pi_wpo = dists.natural_gradient(pi) if config.use_natural_gradient else pi
    loss_wpo = losses.wpo_policy_loss(pi_wpo, actions, dq_da,
                                      squash=config.dq_da_squash)
    # The KL terms use the plain (un-adapted) online distribution.
    pi_bar = policy_apply(target_policy_params, obs)
    penalty = losses.kl_penalty(
        losses.decoupled_kl(pi, pi_bar), dual_params.log_alpha_mean,
        dual_params.log_alpha_stddev, epsilon_mean=config.epsilon_mean,
        epsilon_stddev=config.epsilon_stddev)
    loss = loss_wpo + penalty.loss_kl + penalty.loss_dual
    return loss, (loss_wpo, penalty, pi)

  return LossFns(critic_loss, action_gradient, policy_loss)


class CriticStep(NamedTuple):
  """The critic's part of one SGD step (docs/algorithm.md Sec. 5)."""
  loss: jax.Array       # L_Q
  q_tm1: jax.Array      # [B] Q(s, a)
  td_target: jax.Array  # [B] y
  grads: Params         # grad L_Q in the critic's params


class PolicyStep(NamedTuple):
  """The policy's part of one SGD step (docs/algorithm.md Secs. 2-4)."""
  loss: jax.Array            # L_wpo + L_kl + L_dual
  loss_wpo: jax.Array        # L_wpo
  penalty: losses.KLPenalty  # L_kl, L_dual and their KLs and alphas
  pi: Any                    # the online policy at the policy-loss states
  dq_da: jax.Array           # [N, B, D] grad_a Q at the sampled actions
  grads: Params              # in the policy's params
  dual_grads: DualParams     # in the log-alphas


def critic_step(loss_fns: LossFns, state: TrainingState, batch: Batch,
                key: jax.Array) -> CriticStep:
  """L_Q and its gradient, towards a target from pi_bar and Q_bar (Sec. 5)."""
  (loss, (q_tm1, td_target)), grads = jax.value_and_grad(
      loss_fns.critic_loss, has_aux=True)(
          state.critic_params, state.target_policy_params,
          state.target_critic_params, batch, key)
  return CriticStep(loss, q_tm1, td_target, grads)


def policy_observations(batch: Batch, *, on_next_obs: bool) -> jax.Array:
  """The policy-loss states: s [B, O], or s and s' [2B, O] (Sec. 2)."""
  if on_next_obs:
    return jnp.concatenate([batch.observation, batch.next_observation], axis=0)
  return batch.observation


def policy_step(policy_apply: Callable, loss_fns: LossFns,
                state: TrainingState, obs: jax.Array, key: jax.Array, *,
                num_samples: int) -> PolicyStep:
  """L_wpo + L_kl + L_dual and their gradients (Secs. 2-4).

  The N actions per state are fresh samples of the online pi, stopped; grad_a Q
  comes from the online critic as it was before this step's update.
  """
  pi = policy_apply(state.policy_params, obs)
  actions = jax.lax.stop_gradient(pi.sample(key, (num_samples,)))  # [N, B, D]
  dq_da = loss_fns.action_gradient(state.critic_params, obs,
                                   actions)  # [N, B, D]
  (loss, (loss_wpo, penalty, pi)), (grads, dual_grads) = jax.value_and_grad(
      loss_fns.policy_loss, argnums=(0, 1), has_aux=True)(
          state.policy_params, state.dual_params, state.target_policy_params,
          obs, actions, dq_da)
  return PolicyStep(loss, loss_wpo, penalty, pi, dq_da, grads, dual_grads)


def _optimise(optimizer: optax.GradientTransformation, grads, opt_state,
              params) -> Tuple[Any, optax.OptState]:
  """(params, optimiser state) after one step of `optimizer`."""
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def periodic_target(target: Params, online: Params, steps: jax.Array,
                    period: int) -> Params:
  """A hard copy of `online` after every `period`-th step, else `target`
  unchanged (Sec. 6)."""
  copy = steps % period == 0
  return jax.tree.map(lambda t, o: jnp.where(copy, o, t), target, online)


def polyak_target(target: Params, online: Params, tau: float) -> Params:
  """(1 - tau) target + tau online, every step (SAC; Acme's form)."""
  return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)


def apply_updates(opt: Optimizers, state: TrainingState, *, critic_grads,
                  policy_grads, dual_grads, key: jax.Array, learn_duals: bool,
                  config: config_lib.WPOConfig) -> TrainingState:
  """The next TrainingState: one optimiser step of the critic, the policy and
  (if `learn_duals`, Sec. 4) the duals, then the targets: the periodic hard
  copy (Sec. 6), or Polyak averaging where target_update_tau > 0."""
  critic_params, critic_opt_state = _optimise(
      opt.critic, critic_grads, state.critic_opt_state, state.critic_params)
  policy_params, policy_opt_state = _optimise(
      opt.policy, policy_grads, state.policy_opt_state, state.policy_params)
  if learn_duals:
    dual_params, dual_opt_state = _optimise(
        opt.dual, dual_grads, state.dual_opt_state, state.dual_params)
  else:  # soft KL: the alphas stay at their initial values
    dual_params, dual_opt_state = state.dual_params, state.dual_opt_state
  steps = state.steps + 1
  tau = config.target_update_tau
  target = (functools.partial(polyak_target, tau=tau) if tau else
            functools.partial(periodic_target, steps=steps,
                              period=config.target_update_period))
  return TrainingState(
      policy_params=policy_params,
      target_policy_params=target(state.target_policy_params, policy_params),
      critic_params=critic_params,
      target_critic_params=target(state.target_critic_params, critic_params),
      policy_opt_state=policy_opt_state,
      critic_opt_state=critic_opt_state,
      dual_params=dual_params,
      dual_opt_state=dual_opt_state,
      steps=steps,
      key=key)


def make_sgd_step(networks: networks_lib.WPONetworks,
                  config: config_lib.WPOConfig
                  ) -> Callable[[TrainingState, Batch], Tuple[TrainingState,
                                                               Metrics]]:
  """Returns the pure (un-jitted) single SGD step closed over networks/config.

  Every term is computed from the parameters at the step's start, then all
  parts are updated together (docs/algorithm.md Sec. 1). A baseline
  algorithm's step: `_baseline_sgd_step`.
  """
  if config.algorithm != 'wpo':
    return _baseline_sgd_step(networks, config)
  policy_apply = networks.policy.apply
  opt = make_optimizers(config)
  loss_fns = make_loss_fns(networks, config)

  def sgd_step(state: TrainingState, batch: Batch):
    chex.assert_rank([batch.observation, batch.action, batch.reward,
                      batch.discount, batch.next_observation],
                     [2, 2, 1, 1, 2])
    key, key_critic, key_policy = jax.random.split(state.key, 3)
    critic = critic_step(loss_fns, state, batch, key_critic)
    obs = policy_observations(batch,
                              on_next_obs=config.policy_loss_on_next_obs)
    policy = policy_step(policy_apply, loss_fns, state, obs, key_policy,
                         num_samples=config.num_action_samples)
    new_state = apply_updates(
        opt, state, critic_grads=critic.grads, policy_grads=policy.grads,
        dual_grads=policy.dual_grads, key=key,
        learn_duals=config.kl_constraint == 'hard', config=config)
    return new_state, train_metrics.wpo_metrics(critic, policy)

  return sgd_step


def _baseline_sgd_step(networks: networks_lib.WPONetworks,
                       config: config_lib.WPOConfig):
  """MPO's, DDPG's or SAC's SGD step (baselines.py) on WPO's state, batches
  and updates: the critic, then the policy and duals, from the parameters at
  the step's start. MPO's duals learn under kl_constraint='hard' (its
  default), SAC's temperature always."""
  objective = baselines.make_objective(networks, config)
  opt = make_optimizers(config)
  learn_duals = (config.algorithm == 'sac' or
                 (config.algorithm == 'mpo' and config.kl_constraint == 'hard'))

  def sgd_step(state: TrainingState, batch: Batch):
    key, key_critic, key_policy = jax.random.split(state.key, 3)
    (critic_loss, (q_tm1, td_target)), critic_grads = jax.value_and_grad(
        objective.critic_loss, has_aux=True)(
            state.critic_params, state.policy_params,
            state.target_policy_params, state.target_critic_params,
            state.dual_params, batch, key_critic)
    obs = policy_observations(batch,
                              on_next_obs=config.policy_loss_on_next_obs)
    (policy_loss, metrics), (policy_grads, dual_grads) = jax.value_and_grad(
        objective.policy_loss, argnums=(0, 1), has_aux=True)(
            state.policy_params, state.dual_params,
            state.target_policy_params, state.critic_params,
            state.target_critic_params, obs, key_policy)
    new_state = apply_updates(
        opt, state, critic_grads=critic_grads, policy_grads=policy_grads,
        dual_grads=dual_grads, key=key, learn_duals=learn_duals,
        config=config)
    return new_state, {
        'critic_loss': critic_loss, 'policy_loss': policy_loss,
        'q_mean': jnp.mean(q_tm1), 'q_min': jnp.min(q_tm1),
        'q_max': jnp.max(q_tm1), 'td_target_mean': jnp.mean(td_target),
        'policy_grad_norm': optax.global_norm(policy_grads),
        'critic_grad_norm': optax.global_norm(critic_grads), **metrics}

  return sgd_step


def make_learner_step(networks: networks_lib.WPONetworks,
                      config: config_lib.WPOConfig):
  """K fused SGD steps: (state, Batch with leading [K] axis) -> (state, metrics).

  Metrics are averaged over the K steps. Returned un-jitted; the caller jits it
  (with shardings on multi-device hosts).
  """
  sgd_step = make_sgd_step(networks, config)

  def learner_step(state: TrainingState, batches: Batch):
    state, metrics = jax.lax.scan(sgd_step, state, batches)
    return state, jax.tree.map(jnp.mean, metrics)

  return learner_step


# Fold-in constant for the sampling key: independent of the keys the SGD step
# splits from the same state.key.
_SAMPLE_SALT = 0x5A3D


def sample_key(training_key: jax.Array) -> jax.Array:
  """The key an SGD step draws its replay batch with (device replay)."""
  return jax.random.fold_in(training_key, _SAMPLE_SALT)


def make_sampling_learner_step(
    networks: networks_lib.WPONetworks, config: config_lib.WPOConfig,
    sample: Callable[[Any, jax.Array], Batch]):
  """K = sgd_steps_per_learner_step SGD steps, each drawing its own batch.

  `sample(replay_state, key)` draws a [B, ...] batch inside the step (the
  device replay, `device_replay.DeviceReplay.sample`), keyed by
  `sample_key(state.key)` before each SGD step, so a call moves no batch
  between host and device. Same metrics as `make_learner_step`.
  """
  sgd_step = make_sgd_step(networks, config)

  def learner_step(state: TrainingState, replay_state):
    def one(state, _):
      return sgd_step(state, sample(replay_state, sample_key(state.key)))
    state, metrics = jax.lax.scan(
        one, state, None, length=config.sgd_steps_per_learner_step)
    return state, jax.tree.map(jnp.mean, metrics)

  return learner_step
