"""Tests of sac_losses.py and ddpg_losses.py.

Equality to Acme's SAC losses and to rlax.dpg_loss on the committed fixtures
(tests/reference/fixtures/{sac,ddpg}_*.npz, written by
tests/reference/acme_sac_ddpg_fixtures.py), in float64 under a scoped x64
context (the other tests in this process run in float32); then checks that do
not depend on the fixtures: the tanh-Gaussian density by change of variables,
its stability at |u| = 20, the twin-critic min, the temperature gradient's
sign and the DPG gradient.
"""

import math
import os

from absl.testing import absltest
from absl.testing import parameterized
import jax
from jax.experimental import enable_x64
import jax.numpy as jnp
import numpy as np

from wpo_agent import ddpg_losses
from wpo_agent import distributions as dists
from wpo_agent import sac_losses

_FIXTURES = os.path.join(os.path.dirname(__file__), 'reference', 'fixtures')
_TOL = dict(rtol=1e-12, atol=1e-13)
_ACME_THRESHOLD = 0.999  # TanhTransformedDistribution's default


def _load(name):
  with np.load(os.path.join(_FIXTURES, f'{name}.npz')) as data:
    return {k: jnp.asarray(v) for k, v in data.items()}


def _twin_q(f, prefix, action):
  """The fixtures' closed-form twin critic, [B, 2]."""
  bias, w, k, c = (f[prefix + n] for n in ('q_bias', 'q_w', 'q_k', 'q_c'))
  sq = jnp.sum(jnp.square(action[:, None, :] - c[None]), axis=-1)
  return bias - 0.5 * k * sq + action @ w.T


def _acme_log_pi(loc, scale, eps):
  sample = sac_losses.squashed_sample(loc=loc, scale=scale, eps=eps)
  return sample, sac_losses.acme_squashed_log_prob(
      loc=loc, scale=scale, action=sample.action, threshold=_ACME_THRESHOLD)


class X64TestCase(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.enter_context(enable_x64())


class SacFixtureTest(X64TestCase):

  @parameterized.parameters('sac_moderate', 'sac_saturated')
  def test_samples_and_log_probs(self, case):
    f = _load(case)
    self.assertEqual(f['actor_loc'].dtype, jnp.float64)
    saturated = []
    for p in ('actor_', 'alpha_', 'critic_'):
      loc, scale, eps = f[p + 'loc'], f[p + 'scale'], f[p + 'eps']
      sample, log_pi = _acme_log_pi(loc, scale, eps)
      np.testing.assert_allclose(sample.action, f[p + 'action'], **_TOL)
      np.testing.assert_allclose(sample.pre_tanh, f[p + 'pre_tanh'], **_TOL)
      np.testing.assert_allclose(log_pi, f[p + 'log_prob'], **_TOL)
      exact = sac_losses.squashed_log_prob(loc=loc, scale=scale,
                                           pre_tanh=sample.pre_tanh)
      rows = np.any(np.abs(sample.action) >= _ACME_THRESHOLD, axis=-1)
      saturated.append(rows)
      # The exact density is Acme's away from the clipped tails, not in them.
      np.testing.assert_allclose(exact[~rows], f[p + 'log_prob'][~rows],
                                 **_TOL)
      self.assertTrue(np.all(np.abs(exact - f[p + 'log_prob'])[rows] > 1e-3))
    self.assertEqual(np.any(saturated), case == 'sac_saturated')

  @parameterized.parameters('sac_moderate', 'sac_saturated')
  def test_temperature_loss(self, case):
    f = _load(case)

    def loss(log_alpha, loc):
      _, log_pi = _acme_log_pi(loc, f['alpha_scale'], f['alpha_eps'])
      return sac_losses.sac_temperature_loss(
          log_alpha=log_alpha, log_pi=log_pi,
          target_entropy=float(f['target_entropy']))

    value, (g_log_alpha, g_loc) = jax.value_and_grad(loss, (0, 1))(
        f['log_alpha'], f['alpha_loc'])
    np.testing.assert_allclose(value, f['alpha_loss'], **_TOL)
    np.testing.assert_allclose(g_log_alpha, f['alpha_loss_grad_log_alpha'],
                               **_TOL)
    np.testing.assert_array_equal(g_loc, f['alpha_loss_grad_loc'])  # zeros

  @parameterized.parameters('sac_moderate', 'sac_saturated')
  def test_critic_loss(self, case):
    f = _load(case)

    def loss(q_tm1, loc_t, alpha):
      sample, log_pi_t = _acme_log_pi(loc_t, f['critic_scale'],
                                      f['critic_eps'])
      return sac_losses.sac_critic_loss(
          q_tm1=q_tm1, r_t=f['reward_scale'] * f['reward'],
          discount_t=f['discount'] * f['transition_discount'],
          q_t=_twin_q(f, 'target_', sample.action), log_pi_t=log_pi_t,
          alpha=alpha)

    alpha = sac_losses.temperature(f['log_alpha'])
    (value, target), (g_q, g_loc, g_alpha) = jax.value_and_grad(
        loss, (0, 1, 2), has_aux=True)(f['q_old_action'], f['critic_loc'],
                                       alpha)
    np.testing.assert_allclose(value, f['critic_loss'], **_TOL)
    np.testing.assert_allclose(target, f['critic_target'], **_TOL)
    np.testing.assert_allclose(g_q, f['critic_loss_grad_q_old_action'],
                               **_TOL)
    np.testing.assert_array_equal(g_loc, f['critic_loss_grad_loc'])  # zeros
    np.testing.assert_array_equal(g_alpha, f['critic_loss_grad_alpha'])

  @parameterized.parameters('sac_moderate', 'sac_saturated')
  def test_actor_loss(self, case):
    f = _load(case)

    def loss(loc, scale, alpha):
      sample, log_pi = _acme_log_pi(loc, scale, f['actor_eps'])
      return sac_losses.sac_actor_loss(
          q_pi=_twin_q(f, '', sample.action), log_pi=log_pi, alpha=alpha)

    alpha = sac_losses.temperature(f['log_alpha'])
    value, (g_loc, g_scale, g_alpha) = jax.value_and_grad(loss, (0, 1, 2))(
        f['actor_loc'], f['actor_scale'], alpha)
    np.testing.assert_allclose(value, f['actor_loss'], **_TOL)
    np.testing.assert_allclose(g_loc, f['actor_loss_grad_loc'], **_TOL)
    np.testing.assert_allclose(g_scale, f['actor_loss_grad_scale'], **_TOL)
    # Acme's closure leaves alpha live, but only takes policy gradients; here
    # alpha is stopped so one grad over all parameters gives Acme's updates.
    self.assertEqual(g_alpha, 0.0)
    self.assertNotEqual(f['actor_loss_grad_alpha'], 0.0)

  def test_exact_log_prob_gives_acme_actor_loss_when_unsaturated(self):
    f = _load('sac_moderate')

    def loss(loc, scale):
      sample = sac_losses.squashed_sample(loc=loc, scale=scale,
                                          eps=f['actor_eps'])
      log_pi = sac_losses.squashed_log_prob(loc=loc, scale=scale,
                                            pre_tanh=sample.pre_tanh)
      return sac_losses.sac_actor_loss(
          q_pi=_twin_q(f, '', sample.action), log_pi=log_pi,
          alpha=sac_losses.temperature(f['log_alpha']))

    value, (g_loc, g_scale) = jax.value_and_grad(loss, (0, 1))(
        f['actor_loc'], f['actor_scale'])
    np.testing.assert_allclose(value, f['actor_loss'], **_TOL)
    np.testing.assert_allclose(g_loc, f['actor_loss_grad_loc'], **_TOL)
    np.testing.assert_allclose(g_scale, f['actor_loss_grad_scale'], **_TOL)


class Float32Test(parameterized.TestCase):
  """The project trains in float32: same numbers, to float32 accuracy."""

  @parameterized.parameters('sac_moderate', 'sac_saturated')
  def test_log_probs_in_float32(self, case):
    f = {k: np.asarray(v, np.float32) for k, v in _load(case).items()}
    loc, scale, eps = f['actor_loc'], f['actor_scale'], f['actor_eps']
    sample, log_pi = _acme_log_pi(loc, scale, eps)
    self.assertEqual(log_pi.dtype, jnp.float32)
    np.testing.assert_allclose(log_pi, f['actor_log_prob'], rtol=1e-4)
    if case == 'sac_moderate':
      exact = sac_losses.squashed_log_prob(loc=loc, scale=scale,
                                           pre_tanh=sample.pre_tanh)
      np.testing.assert_allclose(exact, f['actor_log_prob'], rtol=1e-5)


class DdpgFixtureTest(X64TestCase):

  @parameterized.parameters(('noclip', None), ('clip1', 1.0), ('clip05', 0.5))
  def test_matches_rlax(self, name, clipping):
    f = _load('ddpg_dpg_loss')
    dqda = f['dqda']

    def mean_loss(a):  # as acme/agents/jax/d4pg/learning.py reduces it
      return jnp.mean(ddpg_losses.dpg_loss(a_t=a, dqda_t=dqda,
                                           dqda_clipping=clipping))

    a = jnp.tanh(f['s'] @ f['w'])
    np.testing.assert_allclose(a, f['a'], **_TOL)
    np.testing.assert_allclose(
        ddpg_losses.dpg_loss(a_t=a, dqda_t=dqda, dqda_clipping=clipping),
        f[f'{name}_loss'], **_TOL)
    np.testing.assert_allclose(jax.grad(mean_loss)(a), f[f'{name}_grad_a'],
                               **_TOL)
    grad_w = jax.grad(lambda w: mean_loss(jnp.tanh(f['s'] @ w)))(f['w'])
    np.testing.assert_allclose(grad_w, f[f'{name}_grad_w'], **_TOL)


class TanhGaussianTest(X64TestCase):

  def test_density_is_the_derivative_of_the_cdf(self):
    # 1-D: P(tanh(u) <= a) = Phi((atanh(a) - loc) / scale); its numeric
    # derivative in a is the density of the squashed variable.
    loc, scale, h = 0.4, 0.7, 1e-6
    actions = np.linspace(-0.95, 0.95, 9)
    cdf = lambda a: jax.scipy.special.ndtr((np.arctanh(a) - loc) / scale)
    numeric = np.log((cdf(actions + h) - cdf(actions - h)) / (2 * h))
    log_pi = sac_losses.squashed_log_prob(
        loc=jnp.full((9, 1), loc), scale=jnp.full((9, 1), scale),
        pre_tanh=jnp.asarray(np.arctanh(actions))[:, None])
    np.testing.assert_allclose(log_pi, numeric, rtol=0, atol=1e-7)

  def test_naive_change_of_variables_and_sum_over_dims(self):
    loc = np.array([[0.3, -1.2], [2.0, 0.1]])
    scale = np.array([[0.5, 1.5], [0.8, 0.3]])
    u = np.array([[1.1, -2.5], [4.0, 0.2]])
    naive = (-0.5 * ((u - loc) / scale)**2 - np.log(scale) -
             0.5 * np.log(2 * np.pi) - np.log(1 - np.tanh(u)**2)).sum(-1)
    log_pi = sac_losses.squashed_log_prob(loc=loc, scale=scale, pre_tanh=u)
    np.testing.assert_allclose(log_pi, naive, rtol=1e-12)

  @parameterized.parameters(jnp.float32, jnp.float64)
  def test_finite_where_the_naive_formula_overflows(self, dtype):
    u = jnp.array([[-20.0], [20.0]], dtype)
    with np.errstate(divide='ignore'):
      naive_log_det = np.log(1 - np.tanh(np.asarray(u))**2)
    self.assertTrue(np.all(np.isneginf(naive_log_det)))
    log_det = dists.tanh_log_det_jacobian(u)
    # log(sech(u)^2) = 2 log 2 - 2|u| - 2 log(1 + e^{-2|u|}).
    np.testing.assert_allclose(log_det, 2 * math.log(2) - 40.0, rtol=1e-6)
    log_prob = lambda loc: jnp.sum(sac_losses.squashed_log_prob(
        loc=loc, scale=jnp.ones_like(u), pre_tanh=u))
    value, grad = jax.value_and_grad(log_prob)(jnp.zeros_like(u))
    self.assertTrue(np.isfinite(value) and np.all(np.isfinite(grad)))
    self.assertEqual(value.dtype, dtype)


class SacLossTest(X64TestCase):

  def test_critic_target_uses_the_min_head(self):
    loss, target = sac_losses.sac_critic_loss(
        q_tm1=jnp.array([[2.0, 1.0], [0.0, 1.0]]), r_t=jnp.array([1.0, 0.5]),
        discount_t=jnp.array([0.9, 0.0]),
        q_t=jnp.array([[1.0, 3.0], [5.0, 2.0]]),
        log_pi_t=jnp.array([0.5, -1.0]), alpha=jnp.asarray(0.2))
    # y_0 = 1 + 0.9 * (min(1, 3) - 0.2 * 0.5) = 1.81; y_1 = 0.5 (terminal).
    np.testing.assert_allclose(target, [1.81, 0.5], rtol=1e-12)
    errors = np.array([[2 - 1.81, 1 - 1.81], [-0.5, 0.5]])
    np.testing.assert_allclose(loss, 0.5 * np.mean(errors**2), rtol=1e-12)

  def test_actor_loss_uses_the_min_head(self):
    q_pi = jnp.array([[1.0, 3.0], [5.0, 2.0]])
    log_pi = jnp.array([0.5, -1.0])
    loss, grad = jax.value_and_grad(
        lambda q: sac_losses.sac_actor_loss(q_pi=q, log_pi=log_pi,
                                            alpha=jnp.asarray(0.2)))(q_pi)
    np.testing.assert_allclose(loss, np.mean([0.1 - 1.0, -0.2 - 2.0]))
    np.testing.assert_allclose(grad, [[-0.5, 0.0], [0.0, -0.5]])

  @parameterized.parameters((2.0, 1.0), (4.0, -1.0), (3.0, 0.0))
  def test_temperature_gradient_sign(self, target_entropy, sign):
    # Entropy estimate -mean(log pi) = 3: above the target, descent on
    # log_alpha lowers alpha; below it, raises it.
    log_pi = jnp.array([-2.0, -4.0, -3.0])
    grad = jax.grad(lambda la: sac_losses.sac_temperature_loss(
        log_alpha=la, log_pi=log_pi, target_entropy=target_entropy))(
            jnp.asarray(math.log(0.5)))
    np.testing.assert_allclose(grad, 0.5 * (3.0 - target_entropy),
                               rtol=1e-12)
    self.assertEqual(np.sign(grad), sign)


class DpgLossTest(X64TestCase):

  @parameterized.parameters(None, 1.0)
  def test_gradient_is_minus_the_clipped_dqda(self, clipping):
    a = jnp.array([[0.1, -0.2], [0.5, 0.3], [0.0, 0.9]])
    dqda = jnp.array([[0.3, 0.4], [3.0, -4.0], [0.0, 0.0]])  # norms .5, 5, 0
    expected = dqda if clipping is None else dqda.at[1].set([0.6, -0.8])
    loss = lambda a_, d_: jnp.sum(ddpg_losses.dpg_loss(
        a_t=a_, dqda_t=d_, dqda_clipping=clipping))
    value, (g_a, g_dqda) = jax.value_and_grad(loss, (0, 1))(a, dqda)
    np.testing.assert_allclose(g_a, -expected, rtol=1e-12)
    np.testing.assert_array_equal(g_dqda, np.zeros_like(dqda))
    np.testing.assert_allclose(value, 0.5 * np.sum(np.square(expected)),
                               rtol=1e-12)

  def test_non_positive_clipping_rejected(self):
    with self.assertRaisesRegex(ValueError, 'dqda_clipping'):
      ddpg_losses.dpg_loss(a_t=jnp.zeros((1, 2)), dqda_t=jnp.ones((1, 2)),
                           dqda_clipping=0.0)


if __name__ == '__main__':
  absltest.main()
