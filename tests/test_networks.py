"""Tests of `wpo_agent.networks` and of gradient isolation between the losses.

docs/algorithm.md Sec. 2 (sg on grad_a Q, the critic loss trains no policy
parameter), Sec. 5 (critic clips its action) and Sec. 7 (architecture, head
init).
"""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from wpo_agent import config as config_lib
from wpo_agent import distributions as dists
from wpo_agent import losses
from wpo_agent import networks

_OBS, _ACT = 3, 2
_BOUNDS = ([-1.0, -2.0], [1.0, 0.5])


def _kwargs(**overrides):
  """make_networks' keyword arguments: tiny layers, the rest as configured."""
  return config_lib.make_config(
      'acme', policy_layer_sizes=(16, 16), critic_layer_sizes=(16, 16),
      **overrides).network_kwargs()


@functools.lru_cache(maxsize=None)
def _make(family='gaussian'):
  """Tiny networks and their (policy, critic) params; cached: init is slow."""
  nets = networks.make_networks(
      _OBS, *_BOUNDS, **_kwargs(policy_family=family, num_components=3))
  return nets, jax.jit(nets.init)(jax.random.PRNGKey(0))


# Network tests run jitted only, and each test compiles once: eager Flax (op by
# op) and extra compiles cost seconds per test on a 2-core CPU.
_variants = chex.variants(with_jit=True)


def _all_zero(tree):
  return all(bool(jnp.all(x == 0)) for x in jax.tree_util.tree_leaves(tree))


def _observations():
  obs_b = jax.random.normal(jax.random.PRNGKey(1), (4, _OBS))  # [B, O]
  obs_nb = jax.random.normal(jax.random.PRNGKey(2), (5, 4, _OBS))  # [N, B, O]
  return obs_b, obs_nb


class LayerNormTest(chex.TestCase):
  """networks.LayerNorm (matrix-product statistics) is ordinary LayerNorm."""

  @_variants
  def test_matches_numpy_and_flax_values_and_gradients(self):
    import flax.linen as nn  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(0)
    x = (3.0 * rng.standard_normal((2, 5, 8)) + 1.5).astype(np.float32)
    params = {'params': {'scale': rng.uniform(0.5, 2, 8).astype(np.float32),
                         'bias': rng.standard_normal(8).astype(np.float32)}}
    ours, theirs = networks.LayerNorm(epsilon=1e-5), nn.LayerNorm(epsilon=1e-5)
    # Same parameter names and shapes, so checkpoints are interchangeable.
    init = ours.init(jax.random.PRNGKey(0), x)
    self.assertEqual(jax.tree.map(np.shape, init),
                     jax.tree.map(np.shape, theirs.init(jax.random.PRNGKey(0), x)))

    x64 = x.astype(np.float64)
    mean = x64.mean(-1, keepdims=True)
    var = ((x64 - mean) ** 2).mean(-1, keepdims=True)
    expected = ((x64 - mean) / np.sqrt(var + 1e-5) * params['params']['scale']
                + params['params']['bias'])

    def loss(module, p, x):  # a non-trivial cotangent for every output
      return jnp.sum(jnp.tanh(module.apply(p, x)) * jnp.arange(8.0))

    @self.variant
    def run(p, x):
      return (ours.apply(p, x), jax.grad(functools.partial(loss, ours),
                                         argnums=(0, 1))(p, x),
              jax.grad(functools.partial(loss, theirs), argnums=(0, 1))(p, x))

    y, grads_ours, grads_flax = run(params, x)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4,
                                   atol=1e-5), grads_ours, grads_flax)


class PolicyHeadTest(chex.TestCase):

  @_variants
  def test_gaussian_shapes_init_and_layer_norm(self):
    nets, (pp, _) = _make()
    # Same parameters, other sigma settings: init_scale is not a parameter.
    other = networks.make_networks(
        _OBS, *_BOUNDS, **_kwargs(init_scale=0.7, min_scale=1e-3)).policy

    @self.variant
    def forward(pp, obs_b, obs_nb):
      dist_b, state = nets.policy.apply(pp, obs_b, capture_intermediates=True,
                                        mutable=['intermediates'])
      return (dist_b, nets.policy.apply(pp, obs_nb), other.apply(pp, obs_b),
              state['intermediates'])

    dist_b, dist_nb, dist_other, inter = forward(pp, *_observations())
    for dist, batch in ((dist_b, (4,)), (dist_nb, (5, 4))):
      self.assertIsInstance(dist, dists.Gaussian)
      chex.assert_shape([dist.loc, dist.scale], batch + (_ACT,))
      # Near-zero heads: sigma starts at init_scale + min_scale, loc near 0.
      np.testing.assert_allclose(dist.scale, 0.5 + 1e-6, atol=0.02)
      self.assertLess(float(jnp.max(jnp.abs(dist.loc))), 0.05)
    np.testing.assert_allclose(dist_other.scale, 0.7 + 1e-3, atol=0.02)
    # Linear -> LayerNorm -> tanh: the LayerNorm output is normalised per row.
    ln = np.asarray(inter['LayerNormMLP_0']['LayerNorm_0']['__call__'][0])
    self.assertEqual(ln.shape, (4, 16))
    np.testing.assert_allclose(ln.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(ln.std(-1), 1.0, atol=5e-3)  # eps = 1e-5
    self.assertIn('LayerNorm_0', _make()[1][1]['params']['LayerNormMLP_0'])

  @_variants
  def test_mixture_shapes_and_init(self):
    nets, (pp, _) = _make('mixture')
    forward = self.variant(lambda pp, o1, o2: (nets.policy.apply(pp, o1),
                                               nets.policy.apply(pp, o2)))
    for dist, batch in zip(forward(pp, *_observations()), ((4,), (5, 4))):
      self.assertIsInstance(dist, dists.MixtureOfGaussians)
      chex.assert_shape(dist.logits, batch + (3,))
      chex.assert_shape([dist.loc, dist.scale], batch + (3, _ACT))
      np.testing.assert_allclose(dist.scale, 0.5 + 1e-6, atol=0.02)
      np.testing.assert_allclose(jax.nn.softmax(dist.logits), 1 / 3, atol=0.01)
      # Distinct component means, so their gradients can differ.
      self.assertGreater(float(jnp.min(jnp.std(dist.loc, axis=-2))), 1e-3)

  def test_bad_arguments_rejected(self):
    with self.assertRaisesRegex(ValueError, r"'beta'.*'gaussian', 'mixture'"):
      networks.make_networks(_OBS, *_BOUNDS,
                             **dict(_kwargs(), policy_family='beta'))
    with self.assertRaisesRegex(ValueError, 'bounds differ'):
      networks.make_networks(_OBS, [-1.0], [1.0, 1.0], **_kwargs())


class CriticTest(chex.TestCase):

  @_variants
  def test_clips_action_to_bounds(self):
    nets, (_, cp) = _make()
    obs = jax.random.normal(jax.random.PRNGKey(5), (3, _OBS))
    outside = jnp.array([[2.0, -3.0], [-1.5, 0.7], [0.3, -5.0]])
    clipped = jnp.array([[1.0, -2.0], [-1.0, 0.5], [0.3, -2.0]])

    @self.variant
    def q_and_grad(cp, obs, outside, clipped):
      q_fn = lambda a: nets.critic.apply(cp, obs, a)
      return q_fn(outside), q_fn(clipped), losses.action_gradient(
          q_fn, outside, samples_per_chunk=0)

    q_out, q_clipped, dq_da = q_and_grad(cp, obs, outside, clipped)
    self.assertEqual(q_out.shape, (3,))
    np.testing.assert_array_equal(q_out, q_clipped)
    inside = np.array([[False, False], [False, False], [True, False]])
    np.testing.assert_array_equal(np.asarray(dq_da)[~inside], 0.0)
    self.assertNotEqual(float(dq_da[2, 0]), 0.0)

  @_variants
  def test_action_gradient_matches_finite_differences(self):
    nets, (_, cp) = _make()
    # A larger output layer than the 0.01 init, so Q is O(1) and float32
    # central differences resolve grad_a Q well.
    cp = jax.tree_util.tree_map(lambda x: x, cp)
    cp['params']['Dense_0']['kernel'] = cp['params']['Dense_0']['kernel'] * 100
    obs_n = jnp.broadcast_to(_observations()[0], (5, 4, _OBS))  # [N, B, O]
    actions = jax.random.uniform(jax.random.PRNGKey(7), (5, 4, _ACT),
                                 minval=-0.9, maxval=0.4)  # inside the bounds
    h = 1e-2

    @self.variant
    def grad_and_fd(cp, actions):
      q_fn = lambda a: nets.critic.apply(cp, obs_n, a)  # [N, B, D] -> [N, B]
      fd = [(q_fn(actions + h * e) - q_fn(actions - h * e)) / (2 * h)
            for e in jnp.eye(_ACT)]
      return (losses.action_gradient(q_fn, actions, samples_per_chunk=0),
              jnp.stack(fd, axis=-1))

    dq_da, fd = grad_and_fd(cp, actions)
    self.assertGreater(float(jnp.max(jnp.abs(fd))), 0.05)
    np.testing.assert_allclose(dq_da, fd, rtol=1e-2, atol=2e-3)


class GradientIsolationTest(chex.TestCase):
  """The policy loss trains no critic parameter and vice versa (docs/algorithm.md Sec. 2)."""

  def _batch(self):
    keys = jax.random.split(jax.random.PRNGKey(8), 4)
    obs_tm1 = jax.random.normal(keys[0], (4, _OBS))
    obs_t = jax.random.normal(keys[1], (4, _OBS))
    a_tm1 = jax.random.uniform(keys[2], (4, _ACT), minval=-1.0, maxval=0.5)
    return obs_tm1, a_tm1, obs_t, keys[3]

  @_variants
  @parameterized.parameters('gaussian', 'mixture')
  def test_policy_loss_gives_critic_zero_gradient(self, family):
    nets, params = _make(family)
    obs, _, _, key = self._batch()

    def policy_loss(policy_params, critic_params):
      dist = nets.policy.apply(policy_params, obs)
      actions = dist.sample(key, (6,))  # [N, B, D], path to theta left intact
      obs_n = jnp.broadcast_to(obs, (6,) + obs.shape)
      dq_da = losses.action_gradient(
          lambda a: nets.critic.apply(critic_params, obs_n, a), actions,
          samples_per_chunk=0)
      return losses.wpo_policy_loss(dists.natural_gradient(dist), actions, dq_da,
                                    squash='identity')

    g_policy, g_critic = self.variant(jax.grad(policy_loss, (0, 1)))(*params)
    self.assertTrue(_all_zero(g_critic))
    self.assertFalse(_all_zero(g_policy))

  @_variants
  def test_critic_loss_gives_policy_zero_gradient(self):
    nets, params = _make()
    obs_tm1, a_tm1, obs_t, key = self._batch()

    def critic_loss(policy_params, critic_params, aggregate):
      q_tm1 = nets.critic.apply(critic_params, obs_tm1, a_tm1)  # [B]
      # The strictest case: bootstrap with the ONLINE networks and
      # reparameterised samples, so only the target's stop-gradient isolates.
      a_t = nets.policy.apply(policy_params, obs_t).sample(key, (5,))
      obs_n = jnp.broadcast_to(obs_t, (5,) + obs_t.shape)
      q_t = nets.critic.apply(critic_params, obs_n, a_t)  # [N, B]
      loss, _ = losses.critic_td_loss(q_tm1, jnp.ones(4), jnp.full(4, 0.9),
                                      q_t, aggregate=aggregate)
      return loss

    @self.variant
    def grads(policy_params, critic_params):
      return [jax.grad(critic_loss, (0, 1))(policy_params, critic_params, agg)
              for agg in losses.AGGREGATES]

    for g_policy, g_critic in grads(*params):
      self.assertTrue(_all_zero(g_policy))
      self.assertFalse(_all_zero(g_critic))


if __name__ == '__main__':
  absltest.main()
