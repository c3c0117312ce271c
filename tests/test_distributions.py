"""Tests of `wpo_agent.distributions` against closed forms and Monte Carlo."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from wpo_agent import distributions as dists

_N = 200_000


def _mixture_1d():
  w = np.array([0.2, 0.5, 0.3])
  loc = np.array([-2.0, 0.5, 3.0])
  scale = np.array([0.5, 1.0, 0.3])
  dist = dists.MixtureOfGaussians(
      jnp.log(jnp.asarray(w, jnp.float32))[None],  # [B=1, K]
      jnp.asarray(loc, jnp.float32)[None, :, None],  # [B=1, K, D=1]
      jnp.asarray(scale, jnp.float32)[None, :, None])
  return dist, w, loc, scale


class GaussianTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_log_prob_closed_form_and_shapes(self):
    loc, scale = jnp.array([[0.5, -1.0], [2.0, 0.0]]), jnp.array([[0.8, 1.7],
                                                                   [0.1, 3.0]])
    a = jax.random.normal(jax.random.PRNGKey(0), (5, 2, 2))  # [N, B, D]
    logp = self.variant(lambda a: dists.Gaussian(loc, scale).log_prob(a))(a)
    self.assertEqual(logp.shape, (5, 2))
    an, ln, sn = (np.asarray(x, np.float64) for x in (a, loc, scale))
    dens = np.exp(-0.5 * ((an - ln) / sn)**2) / (sn * np.sqrt(2 * np.pi))
    np.testing.assert_allclose(logp, np.log(dens).sum(-1), rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_entropy_closed_form_and_monte_carlo(self):
    loc, scale = jnp.array([[0.3, -2.0, 1.0]]), jnp.array([[0.5, 1.0, 4.0]])
    dist = dists.Gaussian(loc, scale)
    ent = self.variant(lambda d: d.entropy())(dist)
    by_hand = np.sum(0.5 * np.log(2 * np.pi * np.e * np.array([0.25, 1., 16.])))
    np.testing.assert_allclose(ent, [by_hand], rtol=1e-6)
    logp = dist.log_prob(dist.sample(jax.random.PRNGKey(1), (_N,)))  # [N, 1]
    se = float(jnp.std(logp)) / np.sqrt(_N)
    self.assertLess(abs(float(-jnp.mean(logp)) - by_hand), 5 * se)

  @chex.variants(with_jit=True, without_jit=True)
  def test_kl_matches_monte_carlo(self):
    p = dists.Gaussian(jnp.array([[0.3, -1.0]]), jnp.array([[0.5, 2.0]]))
    q = dists.Gaussian(jnp.array([[1.0, 0.5]]), jnp.array([[1.5, 1.2]]))
    kl_per_dim = self.variant(lambda p, q: p.kl_per_dim(q))(p, q)
    kl = self.variant(lambda p, q: p.kl(q))(p, q)
    self.assertEqual(kl_per_dim.shape, (1, 2))
    np.testing.assert_allclose(kl, kl_per_dim.sum(-1), rtol=1e-6)
    a = p.sample(jax.random.PRNGKey(2), (_N,))  # [N, 1, 2]
    # Per dimension: E_p[log p_d(a_d) - log q_d(a_d)].
    per_dim = lambda d: dists.Gaussian(d.loc[..., None], d.scale[..., None])
    diff = (per_dim(p).log_prob(a[..., None]) -
            per_dim(q).log_prob(a[..., None]))  # [N, 1, 2]
    se = np.asarray(jnp.std(diff, axis=0)) / np.sqrt(_N)
    np.testing.assert_array_less(
        np.abs(np.asarray(jnp.mean(diff, axis=0)) - kl_per_dim), 5 * se)
    self.assertTrue(np.all(kl_per_dim > 0.1))
    np.testing.assert_allclose(self.variant(lambda p: p.kl(p))(p), 0.0,
                               atol=1e-6)

  def test_sample_moments_and_mode(self):
    dist = dists.Gaussian(jnp.array([[0.3, -1.0]]), jnp.array([[0.5, 2.0]]))
    a = dist.sample(jax.random.PRNGKey(3), (_N,))
    self.assertEqual(a.shape, (_N, 1, 2))
    np.testing.assert_allclose(jnp.mean(a, 0), dist.loc,
                               atol=5 * 2.0 / np.sqrt(_N))
    np.testing.assert_allclose(jnp.std(a, 0), dist.scale, rtol=0.01)
    np.testing.assert_array_equal(dist.mode(), dist.loc)


class MixtureTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_density_integrates_to_one(self):
    dist, _, _, _ = _mixture_1d()
    grid = np.linspace(-12.0, 12.0, 48_001, dtype=np.float32)
    logp = self.variant(dist.log_prob)(jnp.asarray(grid)[:, None, None])
    self.assertEqual(logp.shape, (grid.size, 1))
    np.testing.assert_allclose(np.trapz(np.exp(logp[:, 0]), grid), 1.0,
                               atol=1e-4)

  @chex.variants(with_jit=True, without_jit=True)
  def test_log_prob_matches_weighted_sum(self):
    dist, w, loc, scale = _mixture_1d()
    a = np.array([-2.5, -0.3, 0.0, 1.7, 3.1])
    got = self.variant(dist.log_prob)(jnp.asarray(a, jnp.float32)[:, None, None])
    dens = np.sum(w * np.exp(-0.5 * ((a[:, None] - loc) / scale)**2) /
                  (scale * np.sqrt(2 * np.pi)), axis=-1)
    np.testing.assert_allclose(got[:, 0], np.log(dens), rtol=1e-5)

  def test_samples_match_mixture_moments_and_histogram(self):
    dist, w, loc, scale = _mixture_1d()
    a = np.asarray(jax.jit(lambda k: dist.sample(k, (_N,)))(
        jax.random.PRNGKey(4)))
    self.assertEqual(a.shape, (_N, 1, 1))
    a = a[:, 0, 0].astype(np.float64)
    mean = np.sum(w * loc)
    var = np.sum(w * (scale**2 + loc**2)) - mean**2
    self.assertLess(abs(a.mean() - mean), 5 * np.sqrt(var / _N))
    np.testing.assert_allclose(a.var(), var, rtol=0.02)
    # Histogram vs the density integrated over each bin (binomial SE <= 1.2e-3).
    edges = np.linspace(-4.0, 5.0, 37)
    counts, _ = np.histogram(a, edges)
    fine = np.linspace(-4.0, 5.0, 36 * 200 + 1, dtype=np.float32)
    dens = np.exp(np.asarray(dist.log_prob(jnp.asarray(fine)[:, None, None])))
    cdf = np.concatenate([[0.0], np.cumsum(
        (dens[1:, 0] + dens[:-1, 0]) / 2 * np.diff(fine))])
    np.testing.assert_allclose(counts / _N, np.diff(cdf[::200]), atol=6e-3)

  def test_multidim_sample_shape_and_mode(self):
    logits = jnp.array([[0.0, 2.0, -1.0], [3.0, 0.0, 0.0]])  # [B=2, K=3]
    loc = jnp.arange(2 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 4)
    dist = dists.MixtureOfGaussians(logits, loc, jnp.ones((2, 3, 4)))
    self.assertEqual(dist.sample(jax.random.PRNGKey(5), (7,)).shape, (7, 2, 4))
    self.assertEqual(dist.log_prob(jnp.zeros((7, 2, 4))).shape, (7, 2))
    # Mode = mean of the heaviest component: component 1 for b=0, 0 for b=1.
    np.testing.assert_array_equal(dist.mode(), np.stack([loc[0, 1], loc[1, 0]]))
    w = jax.nn.softmax(logits)
    np.testing.assert_allclose(dist.mean(), jnp.einsum('bk,bkd->bd', w, loc),
                               rtol=1e-6)

  def test_natural_gradient_mixture_scales_by_component_variance(self):
    scale = jnp.array([[[0.5, 1.0], [2.0, 3.0]]])  # [B=1, K=2, D=2]
    loc, logits = jnp.zeros((1, 2, 2)), jnp.zeros((1, 2))

    def total(logits, loc, scale):
      nat = dists.natural_gradient(dists.MixtureOfGaussians(logits, loc, scale))
      return jnp.sum(nat.logits) + jnp.sum(nat.loc) + jnp.sum(nat.scale)

    g_logits, g_loc, g_scale = jax.grad(total, (0, 1, 2))(logits, loc, scale)
    var = np.asarray(scale)**2
    np.testing.assert_allclose(g_loc, var, rtol=1e-6)
    np.testing.assert_allclose(g_scale, var, rtol=1e-6)
    np.testing.assert_allclose(g_logits, [[(0.25 + 1) / 2, (4 + 9) / 2]],
                               rtol=1e-6)


class ScaleGradientTest(parameterized.TestCase):

  def test_identity_forward_scaled_backward(self):
    x, f = jnp.array([1.5, -2.0, 0.3]), jnp.array([2.0, 0.5, 0.0])
    np.testing.assert_array_equal(dists.scale_gradient(x, f), x)
    g_x, g_f = jax.grad(
        lambda x, f: jnp.sum(jnp.array([1., 2., 3.]) * dists.scale_gradient(x, f)),
        (0, 1))(x, f)
    np.testing.assert_allclose(g_x, [2.0, 1.0, 0.0])
    np.testing.assert_array_equal(g_f, 0.0)

  def test_natural_gradient_rejects_other_types(self):
    with self.assertRaisesRegex(TypeError, 'Gaussian or MixtureOfGaussians'):
      dists.natural_gradient(jnp.zeros(3))


if __name__ == '__main__':
  absltest.main()
