"""Tests of losses.py: the decoupled KL regulariser, its duals and the critic
TD loss.

docs/algorithm.md Sec. 4 (KL) and Sec. 5 (critic); expected values computed by
hand.
"""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from wpo_agent import distributions as dists
from wpo_agent import losses

_softplus = lambda x: np.log1p(np.exp(x))
_sigmoid = lambda x: 1 / (1 + np.exp(-x))


class DecoupledKLTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_gaussian_parts_by_hand(self):
    mu, s = np.array([[0.5, -1.0]]), np.array([[2.0, 0.4]])
    mu_bar, s_bar = np.array([[0.1, -1.5]]), np.array([[1.5, 0.5]])
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    kl = self.variant(losses.decoupled_kl)(dists.Gaussian(f32(mu), f32(s)),
                                           dists.Gaussian(f32(mu_bar), f32(s_bar)))
    np.testing.assert_allclose(kl.mean, (mu - mu_bar)**2 / (2 * s_bar**2),
                               rtol=1e-5)
    np.testing.assert_allclose(
        kl.stddev, np.log(s / s_bar) + s_bar**2 / (2 * s**2) - 0.5, rtol=1e-5)
    # Both parts vanish when the online policy equals the target.
    same = losses.decoupled_kl(dists.Gaussian(f32(mu_bar), f32(s_bar)),
                               dists.Gaussian(f32(mu_bar), f32(s_bar)))
    np.testing.assert_allclose(same.mean, 0.0, atol=1e-7)
    np.testing.assert_allclose(same.stddev, 0.0, atol=1e-7)

  @chex.variants(with_jit=True, without_jit=True)
  def test_mixture_parts_by_hand(self):
    w_bar, w = np.array([0.3, 0.7]), np.array([0.5, 0.5])
    target = dists.MixtureOfGaussians(jnp.log(jnp.array([[0.3, 0.7]])),
                                      jnp.array([[[0.0], [1.0]]]),
                                      jnp.array([[[1.0], [2.0]]]))
    online = dists.MixtureOfGaussians(jnp.log(jnp.array([[0.5, 0.5]])),
                                      jnp.array([[[0.5], [1.2]]]),
                                      jnp.array([[[1.5], [2.0]]]))
    kl = self.variant(losses.decoupled_kl)(online, target)
    self.assertEqual(kl.mean.shape, (1, 1))
    cat = np.sum(w_bar * np.log(w_bar / w))
    mean = 0.3 * 0.5**2 / 2 + 0.7 * 0.2**2 / 8 + cat
    stddev = 0.3 * (np.log(1.5) + 1 / (2 * 2.25) - 0.5)  # component 2: 0
    np.testing.assert_allclose(kl.mean, [[mean]], rtol=1e-5)
    np.testing.assert_allclose(kl.stddev, [[stddev]], rtol=1e-5)

  def test_mismatched_types_rejected(self):
    g = dists.Gaussian(jnp.zeros((1, 1)), jnp.ones((1, 1)))
    m = dists.MixtureOfGaussians(jnp.zeros((1, 2)), jnp.zeros((1, 2, 1)),
                                 jnp.ones((1, 2, 1)))
    with self.assertRaisesRegex(TypeError, 'two Gaussians or two mixtures'):
      losses.decoupled_kl(g, m)


class KLPenaltyTest(chex.TestCase):

  def _setup(self):
    mu_bar = jnp.array([[0.0, 1.0], [0.5, -1.0], [1.0, 0.0]])  # [B=3, D=2]
    s_bar = jnp.array([[1.0, 0.5], [2.0, 1.0], [0.5, 0.5]])
    mu = mu_bar + jnp.array([[0.3, -0.2], [0.1, 0.4], [-0.5, 0.2]])
    s = s_bar * jnp.array([[1.2, 0.9], [0.8, 1.1], [1.0, 1.5]])
    log_alpha_mean, log_alpha_stddev = jnp.array([0.0, -1.0]), jnp.array([2.0,
                                                                          0.5])
    return mu_bar, s_bar, mu, s, log_alpha_mean, log_alpha_stddev

  @chex.variants(with_jit=True, without_jit=True)
  def test_gradients_reach_the_right_parameters(self):
    mu_bar, s_bar, mu, s, la_m, la_s = self._setup()
    eps_m, eps_s = 0.01, 1e-3

    def penalty(mu, s, la_m, la_s):
      kl = losses.decoupled_kl(dists.Gaussian(mu, s), dists.Gaussian(mu_bar,
                                                                     s_bar))
      return losses.kl_penalty(kl, la_m, la_s, epsilon_mean=eps_m,
                               epsilon_stddev=eps_s)

    def loss_kl(*args):
      return penalty(*args).loss_kl

    def loss_dual(*args):
      return penalty(*args).loss_dual

    @self.variant
    def all_outputs(*args):  # one trace / compile for the three quantities
      return (penalty(*args), jax.grad(loss_kl, (0, 1, 2, 3))(*args),
              jax.grad(loss_dual, (0, 1, 2, 3))(*args))

    out, g_kl, g_dual = all_outputs(mu, s, la_m, la_s)

    mu, s, mu_bar, s_bar = (np.asarray(x, np.float64) for x in (mu, s, mu_bar,
                                                                 s_bar))
    a_m, a_s = _softplus(np.asarray(la_m)), _softplus(np.asarray(la_s))
    kl_m = np.mean((mu - mu_bar)**2 / (2 * s_bar**2), 0)  # [D]
    kl_s = np.mean(np.log(s / s_bar) + s_bar**2 / (2 * s**2) - 0.5, 0)
    num = mu.shape[0]
    np.testing.assert_allclose(out.kl_mean, kl_m, rtol=1e-5)
    np.testing.assert_allclose(out.kl_stddev, kl_s, rtol=1e-5)
    np.testing.assert_allclose(out.alpha_mean, a_m, rtol=1e-6)
    np.testing.assert_allclose(out.loss_kl, a_m @ kl_m + a_s @ kl_s, rtol=1e-5)
    np.testing.assert_allclose(
        out.loss_dual, a_m @ (eps_m - kl_m) + a_s @ (eps_s - kl_s), rtol=1e-5)
    # loss_kl trains the policy with alpha held fixed, and never the duals.
    np.testing.assert_allclose(g_kl[0], a_m * (mu - mu_bar) / s_bar**2 / num,
                               rtol=1e-5)
    np.testing.assert_allclose(g_kl[1], a_s * (1 / s - s_bar**2 / s**3) / num,
                               rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(g_kl[2], 0.0)
    np.testing.assert_array_equal(g_kl[3], 0.0)
    # loss_dual trains the duals only: d/d log_alpha = sigmoid * (eps - KL).
    np.testing.assert_array_equal(g_dual[0], 0.0)
    np.testing.assert_array_equal(g_dual[1], 0.0)
    np.testing.assert_allclose(g_dual[2], _sigmoid(np.asarray(la_m)) *
                               (eps_m - kl_m), rtol=1e-5)
    np.testing.assert_allclose(g_dual[3], _sigmoid(np.asarray(la_s)) *
                               (eps_s - kl_s), rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_alpha_from_log_clipping(self):
    alpha = self.variant(losses.alpha_from_log)
    grad = self.variant(jax.grad(lambda x: losses.alpha_from_log(x)))
    np.testing.assert_allclose(alpha(jnp.array(-100.0)),
                               _softplus(-18.0) + 1e-8, rtol=1e-5)
    np.testing.assert_array_equal(alpha(jnp.array(-100.0)),
                                  alpha(jnp.array(-18.0)))
    self.assertEqual(float(grad(jnp.array(-100.0))), 0.0)  # clipped: no push
    np.testing.assert_allclose(alpha(jnp.array(0.0)), np.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(grad(jnp.array(0.0)), 0.5, rtol=1e-6)
    np.testing.assert_allclose(alpha(jnp.array(10000.0)), 10000.0, rtol=1e-6)

  def test_wrong_shapes_rejected(self):
    kl = losses.DecoupledKL(jnp.zeros((4, 2)), jnp.zeros((4, 2)))
    with self.assertRaisesRegex(AssertionError, 'shape'):
      losses.kl_penalty(kl, jnp.zeros(3), jnp.zeros(2), epsilon_mean=0.1,
                        epsilon_stddev=0.1)
    with self.assertRaisesRegex(AssertionError, 'shape'):
      losses.kl_penalty(kl, jnp.zeros(2), jnp.zeros((1, 2)),
                        epsilon_mean=0.1, epsilon_stddev=0.1)
    with self.assertRaisesRegex(AssertionError, 'rank'):
      losses.kl_penalty(losses.DecoupledKL(jnp.zeros(2), jnp.zeros(2)),
                        jnp.zeros(2), jnp.zeros(2), epsilon_mean=0.1,
                        epsilon_stddev=0.1)


class CriticTDLossTest(chex.TestCase):

  def _inputs(self):
    q_tm1 = jnp.array([1.0, 2.0])
    r_t = jnp.array([0.5, -1.0])
    discount_t = jnp.array([0.9, 0.0])  # second transition terminated
    q_t = jnp.array([[1.0, 3.0], [2.0, 5.0], [3.0, -1.0]])  # [N=3, B=2]
    return q_tm1, r_t, discount_t, q_t

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      # mean: V = (2, 7/3); max: V = (3, 5); the terminal one ignores V.
      ('mean', 'mean', [0.5 + 0.9 * 2.0, -1.0]),
      ('max', 'max', [0.5 + 0.9 * 3.0, -1.0]))
  def test_targets_loss_and_stopped_target(self, aggregate, target):
    q_tm1, r_t, discount_t, q_t = self._inputs()

    def loss_fn(q_tm1, r_t, discount_t, q_t):
      return losses.critic_td_loss(q_tm1, r_t, discount_t, q_t,
                                   aggregate=aggregate)

    (loss, y), grads = self.variant(
        jax.value_and_grad(loss_fn, (0, 1, 2, 3), has_aux=True))(
            q_tm1, r_t, discount_t, q_t)
    target = np.array(target)
    np.testing.assert_allclose(y, target, rtol=1e-6)
    td = target - np.array([1.0, 2.0])
    np.testing.assert_allclose(loss, 0.5 * np.mean(td**2), rtol=1e-6)
    np.testing.assert_allclose(grads[0], -td / 2, rtol=1e-6)
    for g in grads[1:]:  # nothing flows into the bootstrap target
      np.testing.assert_array_equal(g, 0.0)

  def test_invalid_aggregate_names_allowed_values(self):
    with self.assertRaisesRegex(ValueError, r"median.*'mean', 'max'"):
      losses.critic_td_loss(*self._inputs(), aggregate='median')

  def test_wrong_shapes_rejected(self):
    q_tm1, r_t, discount_t, q_t = self._inputs()
    with self.assertRaisesRegex(AssertionError, 'rank'):
      losses.critic_td_loss(q_tm1, r_t, discount_t, q_t[0], aggregate='mean')
    with self.assertRaisesRegex(AssertionError, 'shape'):
      losses.critic_td_loss(q_tm1, r_t, discount_t, jnp.zeros((3, 5)),
                            aggregate='mean')


if __name__ == '__main__':
  absltest.main()
