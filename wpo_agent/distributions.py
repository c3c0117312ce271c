"""Policy distributions in pure JAX: diagonal Gaussian and mixture of diagonal Gaussians.

Both are NamedTuples (so they are pytrees and pass through `jit`, `vmap`, `vjp`)
with the small API WPO needs: `sample`, `log_prob`, `mode`; and the baselines'
policies: SAC's `TanhGaussian`, DDPG's `NoisyDeterministic`. WPO only ever needs
`log_prob` to be differentiable in the action (paper Sec. 3), so `sample` is never
differentiated: callers stop-gradient the samples.

Shapes: a distribution over actions of dimension D with batch shape [B].
  Gaussian:  loc, scale            [B, D]
  Mixture:   logits [B, K]; loc, scale [B, K, D]
`sample(key, (N,))` gives [N, B, D]; `log_prob(a)` takes [..., B, D] -> [..., B].

The natural-gradient adaptors (`natural_gradient_*`) rescale gradients by the
inverse Fisher of the parameterisation, straight-through: forward values are
unchanged, only the backward pass is scaled (paper Sec. 3.2 / docs/algorithm.md
Sec. 3).
"""

import math
from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp

Array = jax.Array

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)  # a float: no JAX at import
_LOG_2 = math.log(2.0)


def normal_log_density(x: Array, loc: Array, scale: Array) -> Array:
  """Elementwise log N(x; loc, scale^2)."""
  z = (x - loc) / scale
  return -0.5 * jnp.square(z) - jnp.log(scale) - _HALF_LOG_2PI


def scale_gradient(x: Array, factor: Array) -> Array:
  """Identity in the forward pass; multiplies the incoming gradient by `factor`.

  x' = sg(f) * x + sg((1 - f) * x): value x, d x'/d x = f. `factor` broadcasts to x
  and never receives a gradient.
  """
  factor = jax.lax.stop_gradient(factor)
  return factor * x + jax.lax.stop_gradient((1.0 - factor) * x)


class Gaussian(NamedTuple):
  """Diagonal Gaussian N(loc, diag(scale^2)); loc, scale: [B, D]."""
  loc: Array
  scale: Array

  def sample(self, key: Array, sample_shape: Tuple[int, ...] = ()) -> Array:
    """Draws [*sample_shape, B, D] actions (differentiable only via reparam)."""
    shape = tuple(sample_shape) + jnp.shape(self.loc)
    eps = jax.random.normal(key, shape, dtype=jnp.result_type(self.loc))
    return self.loc + self.scale * eps

  def log_prob(self, actions: Array) -> Array:
    """log pi(a), summed over the action dimension: [..., B, D] -> [..., B]."""
    return jnp.sum(normal_log_density(actions, self.loc, self.scale), axis=-1)

  def mode(self) -> Array:
    return self.loc

  def entropy(self) -> Array:
    """Differential entropy, [B]: sum_d 0.5 log(2 pi e sigma_d^2)."""
    return jnp.sum(0.5 + _HALF_LOG_2PI + jnp.log(self.scale), axis=-1)

  def kl_per_dim(self, other: 'Gaussian') -> Array:
    """KL(self || other) for each action dimension, [B, D] (closed form)."""
    var_ratio = jnp.square(self.scale / other.scale)
    mean_term = jnp.square((self.loc - other.loc) / other.scale)
    return 0.5 * (var_ratio + mean_term - 1.0 - jnp.log(var_ratio))

  def kl(self, other: 'Gaussian') -> Array:
    """KL(self || other), [B]."""
    return jnp.sum(self.kl_per_dim(other), axis=-1)


class MixtureOfGaussians(NamedTuple):
  """Mixture of K diagonal Gaussians.

  logits: [B, K] unnormalised component log-weights.
  loc, scale: [B, K, D].
  """
  logits: Array
  loc: Array
  scale: Array

  @property
  def log_weights(self) -> Array:
    return jax.nn.log_softmax(self.logits, axis=-1)

  def component_log_probs(self, actions: Array) -> Array:
    """log N_k(a), [..., B, D] -> [..., B, K]."""
    a = actions[..., None, :]  # [..., B, 1, D]
    return jnp.sum(normal_log_density(a, self.loc, self.scale), axis=-1)

  def log_prob(self, actions: Array) -> Array:
    """log sum_k w_k N_k(a): [..., B, D] -> [..., B]."""
    return jax.nn.logsumexp(
        self.log_weights + self.component_log_probs(actions), axis=-1)

  def sample(self, key: Array, sample_shape: Tuple[int, ...] = ()) -> Array:
    """Draws [*sample_shape, B, D]: a component per draw, then its Gaussian."""
    key_k, key_eps = jax.random.split(key)
    batch_shape = jnp.shape(self.logits)[:-1]
    shape = tuple(sample_shape) + batch_shape
    k = jax.random.categorical(key_k, self.logits, shape=shape)  # [*S, B]
    loc = jnp.take_along_axis(
        jnp.broadcast_to(self.loc, shape + self.loc.shape[-2:]),
        k[..., None, None], axis=-2)[..., 0, :]
    scale = jnp.take_along_axis(
        jnp.broadcast_to(self.scale, shape + self.scale.shape[-2:]),
        k[..., None, None], axis=-2)[..., 0, :]
    eps = jax.random.normal(key_eps, loc.shape, dtype=loc.dtype)
    return loc + scale * eps

  def mode(self) -> Array:
    """Mean of the heaviest component, [B, D].

    The true mode of a mixture has no closed form; for evaluation the centre of
    the most probable component is the usual stand-in.
    """
    k = jnp.argmax(self.logits, axis=-1)  # [B]
    return jnp.take_along_axis(self.loc, k[..., None, None], axis=-2)[..., 0, :]

  def mean(self) -> Array:
    w = jax.nn.softmax(self.logits, axis=-1)[..., None]  # [B, K, 1]
    return jnp.sum(w * self.loc, axis=-2)


def tanh_log_det_jacobian(u: Array) -> Array:
  """log |d tanh(u) / du| = log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)),
  elementwise: the form of tfp's Tanh bijector, finite for any u (about
  -2|u| for large |u|), where log(1 - tanh(u)^2) itself is log(0) = -inf once
  tanh(u) rounds to 1 (|u| > ~9 in float32, ~19 in float64)."""
  return 2.0 * (_LOG_2 - u - jax.nn.softplus(-2.0 * u))


class TanhGaussian(NamedTuple):
  """a = tanh(u), u ~ N(loc, scale^2) diagonal (SAC's policy, Haarnoja et al.
  2018 App. C); loc, scale: [B, D] of the Gaussian before the tanh."""
  loc: Array
  scale: Array

  def sample_with_log_prob(self, key: Array, sample_shape: Tuple[int, ...] = ()
                           ) -> Tuple[Array, Array]:
    """Reparameterised actions [*S, B, D] and their log-densities [*S, B]."""
    u = Gaussian(self.loc, self.scale).sample(key, sample_shape)
    return jnp.tanh(u), self.log_prob_pre_tanh(u)

  def sample(self, key: Array, sample_shape: Tuple[int, ...] = ()) -> Array:
    return self.sample_with_log_prob(key, sample_shape)[0]

  def log_prob_pre_tanh(self, u: Array) -> Array:
    """log pi(tanh(u)) [..., B] from the pre-tanh value u [..., B, D]:
    sum_d [log N(u_d; loc_d, scale_d^2) - log(1 - tanh(u_d)^2)], exact and
    finite for every u."""
    return (jnp.sum(normal_log_density(u, self.loc, self.scale), axis=-1) -
            jnp.sum(tanh_log_det_jacobian(u), axis=-1))

  def log_prob(self, actions: Array) -> Array:
    """log pi(a) [..., B] of actions in (-1, 1) (clipped just inside, where
    atanh is finite)."""
    bound = 1.0 - jnp.finfo(jnp.result_type(actions)).eps
    return self.log_prob_pre_tanh(jnp.arctanh(jnp.clip(actions, -bound,
                                                        bound)))

  def mode(self) -> Array:
    """tanh(loc): the evaluation action (SAC's deterministic policy)."""
    return jnp.tanh(self.loc)


class NoisyDeterministic(NamedTuple):
  """DDPG's policy: the action `action` [B, D]; the actors explore with
  Gaussian noise of stddev `noise_scale` (Lillicrap et al. 2016; Acme's D4PG
  behaviour policy adds it unclipped, and the environment clips)."""
  action: Array
  noise_scale: Array  # scalar, or broadcasting to [B, D]

  def sample(self, key: Array, sample_shape: Tuple[int, ...] = ()) -> Array:
    shape = tuple(sample_shape) + jnp.shape(self.action)
    eps = jax.random.normal(key, shape, dtype=jnp.result_type(self.action))
    return self.action + self.noise_scale * eps

  def mode(self) -> Array:
    return self.action


def natural_gradient_gaussian(dist: Gaussian) -> Gaussian:
  """Straight-through inverse-Fisher scaling for a (loc, scale) Gaussian.

  The Fisher of N(mu, sigma^2) in (mu, sigma) is diag(1/sigma^2, 2/sigma^2), so
  F^{-1} scales the gradient reaching mu by sigma^2 and the one reaching sigma by
  sigma^2 / 2 (paper Sec. 3.2, Eq. for the natural WPO update). Valid only when
  the network outputs sigma itself, not log sigma.
  """
  var = jnp.square(dist.scale)
  return Gaussian(loc=scale_gradient(dist.loc, var),
                  scale=scale_gradient(dist.scale, 0.5 * var))


def natural_gradient_mixture(dist: MixtureOfGaussians) -> MixtureOfGaussians:
  """The paper's approximate preconditioner for a mixture of Gaussians.

  As in the paper's mixture experiments, the gradients of each component's mean,
  sigma and weight logit are scaled by that component's sigma^2 (not the exact
  Fisher). For D > 1 the weight logit uses the component's mean sigma^2 over
  action dimensions.
  """
  var = jnp.square(dist.scale)  # [B, K, D]
  return MixtureOfGaussians(
      logits=scale_gradient(dist.logits, jnp.mean(var, axis=-1)),
      loc=scale_gradient(dist.loc, var),
      scale=scale_gradient(dist.scale, var))


def natural_gradient(dist):
  """Dispatches to the adaptor matching the distribution type."""
  if isinstance(dist, Gaussian):
    return natural_gradient_gaussian(dist)
  if isinstance(dist, MixtureOfGaussians):
    return natural_gradient_mixture(dist)
  raise TypeError(
      f'No natural-gradient adaptor for {type(dist).__name__}; '
      'expected Gaussian or MixtureOfGaussians.')
