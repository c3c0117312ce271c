"""WPO losses as pure functions: policy (WPO) loss, decoupled KL + duals, critic TD.

Naming follows rlax: `_tm1` for the sampled transition's first state/action, `_t`
for the bootstrap state s_{t+n}. Shapes: N action samples, B batch, D action dims.
"""

from typing import Callable, NamedTuple, Tuple, Union

import chex
import jax
import jax.numpy as jnp

from wpo_agent import distributions as dists

Array = jax.Array
Distribution = Union[dists.Gaussian, dists.MixtureOfGaussians]

SQUASH_FNS = {
    'identity': lambda x: x,
    'cbrt': jnp.cbrt,
}
SQUASHES = tuple(SQUASH_FNS)
AGGREGATES = ('mean', 'max')
# 'soft': the alphas stay at their initial values (a fixed KL penalty);
# 'hard': they are learned by the dual loss of `kl_penalty` (learning.py).
KL_CONSTRAINTS = ('soft', 'hard')


def action_gradient(q_fn: Callable[[Array], Array], actions: Array, *,
                    samples_per_chunk: int) -> Array:
  """grad_a Q(s, a) for every sample, via one vjp with unit cotangents.

  `q_fn` maps actions [n, B, D] to values [n, B] for any n; each value depends
  only on its own action, so a vjp with ones gives the per-sample gradient
  [N, B, D]. With `samples_per_chunk` = 0 all N samples go through `q_fn` at
  once; with c > 0 (c divides N) the N samples go
  through `q_fn` c at a time under `lax.map`: the same numbers, but on a CPU the
  critic's [c * B, H] activations stay in cache (see BUILD_NOTES.md).
  """
  num_samples = actions.shape[0]
  if samples_per_chunk and samples_per_chunk < num_samples:
    if num_samples % samples_per_chunk:
      raise ValueError(f'samples_per_chunk={samples_per_chunk} must divide the '
                       f'number of samples {num_samples}')
    chunks = actions.reshape((num_samples // samples_per_chunk,
                              samples_per_chunk) + actions.shape[1:])
    dq_da = jax.lax.map(
        lambda a: action_gradient(q_fn, a, samples_per_chunk=0), chunks)
    return dq_da.reshape(actions.shape)
  q, vjp_fn = jax.vjp(q_fn, actions)
  (dq_da,) = vjp_fn(jnp.ones_like(q))
  return dq_da


def wpo_policy_loss(
    policy: Distribution,
    actions: Array,
    dq_da: Array,
    *,
    squash: str,
) -> Array:
  """The WPO surrogate whose theta-gradient is the WPO direction (paper Eq. 9).

      L = - mean_b sum_n sum_d [grad_a log pi(a_nb|s_b)]_d * sg(f([grad_a Q(s_b,a_nb)]_d))

  grad_a log pi comes from `jax.vjp` of `log_prob` at the *stopped* actions, so the
  outer gradient w.r.t. the policy parameters (closed over by `policy`) is the mixed
  derivative grad_theta grad_a log pi. If the actions kept their reparameterised
  path, grad_a log pi of a Gaussian would be -eps/sigma and the mean would get no
  gradient. Pass a `natural_gradient(...)`-adapted policy for the natural update.

  Args:
    policy: distribution with batch shape [B] over D-dim actions.
    actions: [N, B, D] samples from the online policy.
    dq_da: [N, B, D] grad_a Q at `actions` (stop-gradiented here).
    squash: 'identity' or 'cbrt' (elementwise cube root of grad_a Q).

  Returns:
    Scalar loss.
  """
  chex.assert_rank(actions, 3)
  chex.assert_equal_shape([actions, dq_da])
  if squash not in SQUASH_FNS:
    raise ValueError(f'squash={squash!r}; allowed: {sorted(SQUASH_FNS)}')
  actions = jax.lax.stop_gradient(actions)
  dq_da = jax.lax.stop_gradient(SQUASH_FNS[squash](dq_da))
  log_prob, vjp_fn = jax.vjp(policy.log_prob, actions)  # [N, B]
  (dlogpi_da,) = vjp_fn(jnp.ones_like(log_prob))  # [N, B, D]
  per_state = jnp.sum(dlogpi_da * dq_da, axis=(0, 2))  # [B]
  return -jnp.mean(per_state)


class DecoupledKL(NamedTuple):
  """Per-dimension KLs, each [B, D]."""
  mean: Array    # KL(pi_bar || N(mu, sigma_bar)): how far the mean moved
  stddev: Array  # KL(pi_bar || N(mu_bar, sigma)): how far the stddev moved


def decoupled_kl(online: Distribution, target: Distribution) -> DecoupledKL:
  """MPO-style decoupled KL(target || online), split into mean and stddev parts.

  Gaussian: per dimension,
    mean   = (mu - mu_bar)^2 / (2 sigma_bar^2)
    stddev = log(sigma / sigma_bar) + sigma_bar^2 / (2 sigma^2) - 1/2.
  Mixture: the Gaussian terms per component, weighted by the target weights
  (components matched by index); the KL between the component weights is
  counted with the mean part, spread evenly over the D dimensions.
  """
  if isinstance(online, dists.Gaussian) and isinstance(target, dists.Gaussian):
    chex.assert_equal_shape([online.loc, target.loc, online.scale, target.scale])
    mean_part = dists.Gaussian(online.loc, target.scale)
    std_part = dists.Gaussian(target.loc, online.scale)
    return DecoupledKL(mean=target.kl_per_dim(mean_part),
                       stddev=target.kl_per_dim(std_part))
  if (isinstance(online, dists.MixtureOfGaussians) and
      isinstance(target, dists.MixtureOfGaussians)):
    chex.assert_equal_shape([online.loc, target.loc])
    w_bar = jax.nn.softmax(target.logits, axis=-1)  # [B, K]
    per_comp = decoupled_kl(dists.Gaussian(online.loc, online.scale),
                            dists.Gaussian(target.loc, target.scale))  # [B,K,D]
    cat_kl = jnp.sum(w_bar * (target.log_weights - online.log_weights), -1)
    num_dims = online.loc.shape[-1]
    mean = jnp.sum(w_bar[..., None] * per_comp.mean, axis=-2)
    mean = mean + cat_kl[..., None] / num_dims
    stddev = jnp.sum(w_bar[..., None] * per_comp.stddev, axis=-2)
    return DecoupledKL(mean=mean, stddev=stddev)
  raise TypeError('decoupled_kl needs two Gaussians or two mixtures, got '
                  f'{type(online).__name__} and {type(target).__name__}.')


def alpha_from_log(log_alpha: Array) -> Array:
  """alpha = softplus(log_alpha) + 1e-8 with log_alpha clipped at -18."""
  return jax.nn.softplus(jnp.maximum(log_alpha, -18.0)) + 1e-8


class KLPenalty(NamedTuple):
  loss_kl: Array     # scalar: trains the policy
  loss_dual: Array   # scalar: trains the log-alphas (zero gradient when frozen)
  kl_mean: Array     # [D] batch-mean KL per dimension, for logging
  kl_stddev: Array   # [D]
  alpha_mean: Array  # [D]
  alpha_stddev: Array  # [D]


def kl_penalty(
    kl: DecoupledKL,
    log_alpha_mean: Array,
    log_alpha_stddev: Array,
    *,
    epsilon_mean: float,
    epsilon_stddev: float,
) -> KLPenalty:
  """Lagrangian KL regulariser with per-dimension duals (MPO, Abdolmaleki 2018).

      loss_kl   = sum_d sg(alpha_d) * mean_b KL_bd
      loss_dual = sum_d alpha_d * (epsilon - sg(mean_b KL_bd))

  With frozen duals ("soft KL", the paper's Control Suite setting) only loss_kl
  matters; learning the duals ("hard KL") enforces mean KL ~ epsilon.
  """
  chex.assert_rank([kl.mean, kl.stddev], 2)
  num_dims = kl.mean.shape[-1]
  chex.assert_shape([log_alpha_mean, log_alpha_stddev], (num_dims,))
  alpha_mean = alpha_from_log(log_alpha_mean)
  alpha_stddev = alpha_from_log(log_alpha_stddev)
  kl_mean = jnp.mean(kl.mean, axis=0)  # [D]
  kl_stddev = jnp.mean(kl.stddev, axis=0)  # [D]
  sg = jax.lax.stop_gradient
  loss_kl = (jnp.sum(sg(alpha_mean) * kl_mean) +
             jnp.sum(sg(alpha_stddev) * kl_stddev))
  loss_dual = (jnp.sum(alpha_mean * (epsilon_mean - sg(kl_mean))) +
               jnp.sum(alpha_stddev * (epsilon_stddev - sg(kl_stddev))))
  return KLPenalty(loss_kl, loss_dual, kl_mean, kl_stddev, alpha_mean,
                   alpha_stddev)


def critic_td_loss(
    q_tm1: Array,
    r_t: Array,
    discount_t: Array,
    q_t_samples: Array,
    *,
    aggregate: str,
) -> Tuple[Array, Array]:
  """n-step TD loss with a sampled-action bootstrap.

      y = R + gamma_n * agg_n Q_bar(s_{t+n}, a_n),  a_n ~ pi_bar(.|s_{t+n})
      L = mean_b 0.5 * (sg(y) - Q(s_t, a_t))^2

  `discount_t` is the n-step bootstrap discount the adder stored (gamma^n times
  the episode discounts, zero at termination). `aggregate`: 'mean' (Acme) or
  'max' (the paper, for WPO on the Control Suite).

  Args:
    q_tm1: [B] online Q at the stored action.
    r_t: [B] discounted n-step reward sum.
    discount_t: [B] bootstrap discount.
    q_t_samples: [N, B] target critic at N target-policy samples of s_{t+n}.
    aggregate: 'mean' or 'max' over the N samples.

  Returns:
    (scalar loss, [B] TD targets).
  """
  chex.assert_rank([q_tm1, r_t, discount_t, q_t_samples], [1, 1, 1, 2])
  chex.assert_equal_shape([q_tm1, r_t, discount_t, q_t_samples[0]])
  if aggregate == 'mean':
    v_t = jnp.mean(q_t_samples, axis=0)
  elif aggregate == 'max':
    v_t = jnp.max(q_t_samples, axis=0)
  else:
    raise ValueError(f'aggregate={aggregate!r}; allowed: {list(AGGREGATES)}')
  target = jax.lax.stop_gradient(r_t + discount_t * v_t)
  loss = 0.5 * jnp.mean(jnp.square(target - q_tm1))
  return loss, target
