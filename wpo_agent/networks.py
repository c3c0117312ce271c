"""Flax (Linen) networks for WPO: LayerNormMLP torso, policy heads, critic.

Architecture follows Acme's control networks (docs/algorithm.md Sec. 7): the first
layer is Linear -> LayerNorm -> tanh, later layers Linear -> ELU; policy heads start
near zero; the critic clips its action input to the action bounds.
"""

import dataclasses
from typing import Any, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from wpo_agent import distributions as dists

Array = jax.Array
Params = Any

POLICY_FAMILIES = ('gaussian', 'mixture')
# The policy-improvement step: WPO, or one of the paper's baselines on the
# same torsos, critic, replay and actors (learning.py, baselines.py).
ALGORITHMS = ('wpo', 'mpo', 'ddpg', 'sac')
GAUSSIAN_ONLY = ('ddpg', 'sac')  # their own policy forms; no mixture


_OWN_POLICY = {'sac': 'a tanh-squashed Gaussian', 'ddpg': 'deterministic'}


def gaussian_only_error(algorithm: str, policy_family: str) -> str:
  return (f'algorithm={algorithm} cannot use policy_family={policy_family}: '
          f'its policy is {_OWN_POLICY[algorithm]} (policy_family=gaussian '
          'selects it); a mixture policy works with wpo or mpo')


_torso_init = nn.initializers.variance_scaling(0.333, 'fan_in', 'uniform')
_head_init = nn.initializers.variance_scaling(1e-4, 'fan_in', 'truncated_normal')


def _row_mean(x: Array) -> Array:
  """mean over the last axis, [..., H] -> [..., 1], as a matrix-vector product.

  XLA:CPU's row reductions (and their transposes) are several times slower than
  a GEMV; HIGHEST precision keeps accelerators from rounding to TF32 here.
  """
  ones = jnp.full((x.shape[-1], 1), 1.0 / x.shape[-1], x.dtype)
  return jnp.matmul(x, ones, precision=jax.lax.Precision.HIGHEST)


def _broadcast_last(x: Array, size: int) -> Array:
  """[..., 1] -> [..., size] as an outer product, whose transpose is a GEMV."""
  ones = jnp.ones((1, size), x.dtype)
  return jnp.matmul(x, ones, precision=jax.lax.Precision.HIGHEST)


class LayerNorm(nn.Module):
  """Layer normalisation over the last axis with a learned scale and bias.

  The same function and parameters ('scale', 'bias') as `flax.linen.LayerNorm`
  (two-pass variance, so closer to exact than flax's default one-pass), but the
  row statistics and their broadcasts are matrix products: on CPU this made
  LayerNorm on [5120, 512] ~7x faster forward and ~3x with its gradient, which
  is ~15% of a learner step at humanoid sizes (BUILD_NOTES.md).
  """
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: Array) -> Array:
    size = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (size,))
    bias = self.param('bias', nn.initializers.zeros, (size,))
    centred = x - _broadcast_last(_row_mean(x), size)
    variance = _row_mean(jnp.square(centred))
    inv_std = _broadcast_last(jax.lax.rsqrt(variance + self.epsilon), size)
    return centred * inv_std * scale + bias


class LayerNormMLP(nn.Module):
  """Linear(h0) -> LayerNorm -> tanh, then (Linear -> ELU) per further layer.

  `inputs` are the parts of one concatenated input, e.g. (obs, action). The
  first Linear applies the matching row block of its kernel to each part, which
  equals Linear(concat(parts)) but lets parts broadcast: the critic projects
  obs [B, O] once instead of once per action sample [N, B, D] (for humanoid
  that is ~7% of the learner's FLOPs).
  """
  layer_sizes: Sequence[int]

  @nn.compact
  def __call__(self, *inputs: Array) -> Array:
    dims = [x.shape[-1] for x in inputs]
    kernel = self.param('input_kernel', _torso_init,
                        (sum(dims), self.layer_sizes[0]))
    x = self.param('input_bias', nn.initializers.zeros,
                   (self.layer_sizes[0],))
    offset = 0
    for part, dim in zip(inputs, dims):
      x = x + part @ kernel[offset:offset + dim]  # broadcasts across parts
      offset += dim
    x = LayerNorm(epsilon=1e-5)(x)
    x = jnp.tanh(x)
    for size in self.layer_sizes[1:]:
      x = nn.elu(nn.Dense(size, kernel_init=_torso_init)(x))
    return x


def _positive_scale(raw: Array, init_scale: float, min_scale: float) -> Array:
  """sigma = softplus(raw) * init_scale / softplus(0) + min_scale.

  At raw = 0 (the near-zero head init) sigma starts at init_scale + min_scale.
  """
  return jax.nn.softplus(raw) * (init_scale / jax.nn.softplus(0.0)) + min_scale


class GaussianPolicy(nn.Module):
  """obs [B, O] -> Gaussian over [B, D] (outputs sigma itself, not log sigma);
  with `tanh`, the Gaussian of u and the action tanh(u) (SAC: TanhGaussian)."""
  layer_sizes: Sequence[int]
  action_dim: int
  init_scale: float = 0.5
  min_scale: float = 1e-6
  tanh: bool = False

  @nn.compact
  def __call__(self, obs: Array):
    h = LayerNormMLP(self.layer_sizes)(obs)
    loc = nn.Dense(self.action_dim, kernel_init=_head_init, name='loc')(h)
    raw = nn.Dense(self.action_dim, kernel_init=_head_init, name='scale')(h)
    family = dists.TanhGaussian if self.tanh else dists.Gaussian
    return family(loc, _positive_scale(raw, self.init_scale, self.min_scale))


class DeterministicPolicy(nn.Module):
  """obs [B, O] -> the action tanh(Linear(torso)) in (-1, 1)^D, which actors
  explore around with N(0, noise_scale^2) (DDPG: NoisyDeterministic)."""
  layer_sizes: Sequence[int]
  action_dim: int
  noise_scale: float

  @nn.compact
  def __call__(self, obs: Array) -> dists.NoisyDeterministic:
    h = LayerNormMLP(self.layer_sizes)(obs)
    action = jnp.tanh(nn.Dense(self.action_dim, kernel_init=_head_init,
                               name='loc')(h))
    return dists.NoisyDeterministic(action,
                                    jnp.asarray(self.noise_scale, action.dtype))


class MixturePolicy(nn.Module):
  """obs [B, O] -> mixture of K diagonal Gaussians over [B, D].

  Component means start spread uniformly over [-init_spread, init_spread] (a
  fixed bias) so the components are not identical at initialisation, which would
  make their gradients identical forever.
  """
  layer_sizes: Sequence[int]
  action_dim: int
  num_components: int = 5
  init_scale: float = 0.5
  min_scale: float = 1e-6
  init_spread: float = 0.5

  @nn.compact
  def __call__(self, obs: Array) -> dists.MixtureOfGaussians:
    k, d = self.num_components, self.action_dim
    h = LayerNormMLP(self.layer_sizes)(obs)
    logits = nn.Dense(k, kernel_init=_head_init, name='logits')(h)
    spread = self.init_spread

    def loc_bias_init(key, shape, dtype=jnp.float32):
      return jax.random.uniform(key, shape, dtype, -spread, spread)

    loc = nn.Dense(k * d, kernel_init=_head_init, bias_init=loc_bias_init,
                   name='loc')(h)
    raw = nn.Dense(k * d, kernel_init=_head_init, name='scale')(h)
    batch = obs.shape[:-1]
    loc = loc.reshape(batch + (k, d))
    scale = _positive_scale(raw, self.init_scale, self.min_scale)
    return dists.MixtureOfGaussians(logits, loc, scale.reshape(batch + (k, d)))


class Critic(nn.Module):
  """Q(s, a) = Linear(1)(LayerNormMLP(concat(obs, clip(a)))).

  obs [..., O] and action [..., D] broadcast against each other: obs [B, O]
  with actions [N, B, D] gives Q [N, B].
  """
  layer_sizes: Sequence[int]
  action_min: Tuple[float, ...]
  action_max: Tuple[float, ...]

  @nn.compact
  def __call__(self, obs: Array, action: Array) -> Array:
    # Clipping zeroes grad_a Q outside the bounds: there the environment clips too,
    # so moving the action further out changes nothing.
    action = jnp.clip(action, jnp.asarray(self.action_min),
                      jnp.asarray(self.action_max))
    h = LayerNormMLP(self.layer_sizes)(obs, action)
    q = nn.Dense(1, kernel_init=nn.initializers.truncated_normal(0.01))(h)
    return q[..., 0]


class TwinCritic(nn.Module):
  """Two independent critics, Q [..., 2] (SAC's clipped double Q: the
  minimum of the two is used; Fujimoto et al. 2018)."""
  layer_sizes: Sequence[int]
  action_min: Tuple[float, ...]
  action_max: Tuple[float, ...]

  @nn.compact
  def __call__(self, obs: Array, action: Array) -> Array:
    return jnp.stack([
        Critic(self.layer_sizes, self.action_min, self.action_max,
               name=f'q{i}')(obs, action) for i in range(2)], axis=-1)


@dataclasses.dataclass(frozen=True)
class WPONetworks:
  """The policy and critic modules plus the shapes they were built for."""
  policy: nn.Module
  critic: nn.Module
  obs_dim: int
  action_dim: int

  def init(self, key: Array) -> Tuple[Params, Params]:
    """Returns (policy_params, critic_params)."""
    key_p, key_c = jax.random.split(key)
    obs = jnp.zeros((1, self.obs_dim), jnp.float32)
    act = jnp.zeros((1, self.action_dim), jnp.float32)
    return (self.policy.init(key_p, obs), self.critic.init(key_c, obs, act))


def make_networks(
    obs_dim: int,
    action_min: Sequence[float],
    action_max: Sequence[float],
    *,
    policy_layer_sizes: Sequence[int],
    critic_layer_sizes: Sequence[int],
    policy_family: str,
    num_components: int,
    init_scale: float,
    min_scale: float,
    algorithm: str,
    exploration_stddev: float,
) -> WPONetworks:
  """Builds the networks for flat observations [O] and bounded actions [D].

  The keyword arguments are WPOConfig's fields of the same names
  (`WPOConfig.network_kwargs()`); `num_components` is used by 'mixture' only.
  The algorithm picks the heads on the same torsos: WPO and MPO the policy
  family's Gaussian or mixture and one critic; SAC a tanh-squashed Gaussian
  and twin critics; DDPG a deterministic tanh policy (explored with
  `exploration_stddev`) and one critic.
  """
  action_min = tuple(float(x) for x in np.ravel(action_min))
  action_max = tuple(float(x) for x in np.ravel(action_max))
  if len(action_min) != len(action_max):
    raise ValueError(f'action bounds differ in size: {len(action_min)} vs '
                     f'{len(action_max)}')
  if obs_dim < 1 or not action_min:
    raise ValueError(f'need obs_dim >= 1 and >= 1 action dim; got obs_dim='
                     f'{obs_dim}, action_dim={len(action_min)}')
  action_dim = len(action_min)
  if algorithm not in ALGORITHMS:
    raise ValueError(f'algorithm={algorithm!r}; allowed: {list(ALGORITHMS)}')
  if algorithm in GAUSSIAN_ONLY and policy_family != 'gaussian':
    raise ValueError(gaussian_only_error(algorithm, policy_family))
  layers = tuple(critic_layer_sizes)
  critic = (TwinCritic if algorithm == 'sac' else Critic)(layers, action_min,
                                                          action_max)
  if algorithm == 'ddpg':
    policy = DeterministicPolicy(tuple(policy_layer_sizes), action_dim,
                                 exploration_stddev)
  elif policy_family == 'gaussian':
    policy = GaussianPolicy(tuple(policy_layer_sizes), action_dim, init_scale,
                            min_scale, tanh=algorithm == 'sac')
  elif policy_family == 'mixture':
    policy = MixturePolicy(tuple(policy_layer_sizes), action_dim,
                           num_components, init_scale, min_scale)
  else:
    raise ValueError(f'policy_family={policy_family!r}; allowed: '
                     f'{list(POLICY_FAMILIES)}')
  return WPONetworks(policy, critic, obs_dim, action_dim)


def make_networks_from_spec(spec, **kwargs) -> WPONetworks:
  """Builds from a dm-acme EnvironmentSpec (flat observation array, bounded actions)."""
  obs_shape = tuple(spec.observations.shape)
  if len(obs_shape) != 1:
    raise ValueError(f'expected flat observations [O], got shape {obs_shape}; '
                     'concatenate the observation dict first')
  return make_networks(obs_shape[0], spec.actions.minimum * np.ones(
      spec.actions.shape), spec.actions.maximum * np.ones(spec.actions.shape),
                       **kwargs)
