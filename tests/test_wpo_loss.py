"""Tests of `losses.wpo_policy_loss` against closed forms (docs/algorithm.md Secs.
2-3, 9.2-9.3).

Per-sample estimates are read off in one gradient call by giving every sample its
own copy of the parameters: with mu, sigma of shape [B, 1] and actions [1, B, 1],
d(loss)/d mu_b is that sample's estimate divided by B (the loss averages over b).
"""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from wpo_agent import distributions as dists
from wpo_agent import losses


def _per_sample_wpo(mu, sigma, actions, dq_da, fisher=True):
  """Per-sample WPO update (-grad of the loss) w.r.t. mu, sigma: [B, D] each."""
  def loss(mu, sigma):
    policy = dists.Gaussian(mu, sigma)
    if fisher:
      policy = dists.natural_gradient(policy)
    return losses.wpo_policy_loss(policy, actions, dq_da, squash='identity')
  g_mu, g_sigma = jax.grad(loss, argnums=(0, 1))(mu, sigma)
  batch = mu.shape[0]
  return -batch * g_mu, -batch * g_sigma


class LinearQTest(chex.TestCase):
  """docs/algorithm.md Sec. 9.2: for Q = w.a the natural mean update is w per sample."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_mean_update_is_w_for_every_sample(self):
    num, dim = 4096, 3
    w = jnp.array([0.7, -1.3, 2.0])
    mu = jnp.broadcast_to(jnp.array([0.5, -1.0, 2.0]), (num, dim))
    sigma = jnp.broadcast_to(jnp.array([0.3, 1.0, 2.5]), (num, dim))
    eps = jax.random.normal(jax.random.PRNGKey(0), (1, num, dim))
    actions = mu + sigma * eps  # [1, B, D]: one sample per parameter copy
    dq_da = jnp.broadcast_to(w, actions.shape)

    @self.variant
    def estimates(mu, sigma, actions):
      wpo_mu, _ = _per_sample_wpo(mu, sigma, actions, dq_da)
      # Score-function PG per sample: Q(a) grad_mu log pi = Q(a) (a - mu) / sigma^2.
      def pg_loss(mu):
        policy = dists.Gaussian(mu, sigma)
        q = jnp.sum(w * actions, axis=-1)  # [1, B]
        return -jnp.mean(jax.lax.stop_gradient(q) * policy.log_prob(actions))
      pg_mu = -num * jax.grad(pg_loss)(mu)
      return wpo_mu, pg_mu

    wpo_mu, pg_mu = estimates(mu, sigma, actions)
    # Zero variance: every single-sample estimate is w to float precision.
    np.testing.assert_allclose(wpo_mu, np.broadcast_to(w, (num, dim)),
                               rtol=1e-5, atol=1e-6)
    self.assertLess(float(jnp.max(jnp.var(wpo_mu, axis=0))), 1e-10)
    # The score-function estimate has the same mean w but a clearly non-zero
    # variance (it is (w.a) (a - mu) / sigma^2).
    pg_std = np.asarray(jnp.std(pg_mu, axis=0))
    self.assertTrue(np.all(pg_std > 0.1), pg_std)
    np.testing.assert_allclose(jnp.mean(pg_mu, axis=0), w,
                               atol=float(5 * pg_std.max() / np.sqrt(num)))


def _gaussian_expectations(name, mu, s):
  """d/d(mu, sigma) of E_{a ~ N(mu, s)} Q(a), in closed form."""
  if name == 'sin':  # E sin(a) = sin(mu) exp(-s^2 / 2)
    e = np.exp(-s**2 / 2)
    return np.cos(mu) * e, -s * np.sin(mu) * e
  # Q = -a^4/100 + a^2: E a^2 = mu^2 + s^2, E a^4 = mu^4 + 6 mu^2 s^2 + 3 s^4.
  d_mu = -(4 * mu**3 + 12 * mu * s**2) / 100 + 2 * mu
  d_s = -(12 * mu**2 * s + 12 * s**3) / 100 + 2 * s
  return d_mu, d_s


_Q_FNS = {'sin': jnp.sin, 'quartic': lambda a: -a**4 / 100 + a**2}


class ExpectedUpdateTest(chex.TestCase):
  """docs/algorithm.md Sec. 9.3: natural WPO = SVG(0) = score-function PG in mean.

  All three estimate the plain gradient of E[Q]: the raw WPO direction is
  F grad E[Q] for a Gaussian (Stein / Price), so F^{-1} recovers grad E[Q]. SVG(0)
  and PG are therefore compared without the Fisher adaptor.
  """

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(('sin', 0.3, 0.7), ('quartic', 1.5, 2.0))
  def test_wpo_svg0_and_pg_agree_in_expectation(self, q_name, mu0, sigma0):
    num = 40_000
    q_fn = _Q_FNS[q_name]
    mu = jnp.full((num, 1), mu0, jnp.float32)
    sigma = jnp.full((num, 1), sigma0, jnp.float32)
    key = jax.random.PRNGKey(1)

    @self.variant
    def estimates(mu, sigma):
      actions = dists.Gaussian(mu, sigma).sample(key, (1,))  # [1, B, 1]
      dq_da = losses.action_gradient(lambda a: q_fn(a)[..., 0], actions,
                                     samples_per_chunk=0)
      wpo = _per_sample_wpo(mu, sigma, actions, dq_da)

      def svg0_loss(mu, sigma):  # reparameterised: a = mu + sigma eps
        policy = dists.Gaussian(mu, sigma)
        return -jnp.mean(q_fn(policy.sample(key, (1,))))

      def pg_loss(mu, sigma):
        policy = dists.Gaussian(mu, sigma)
        q = jax.lax.stop_gradient(q_fn(actions)[..., 0])
        return -jnp.mean(q * policy.log_prob(actions))

      svg0 = jax.grad(svg0_loss, argnums=(0, 1))(mu, sigma)
      pg = jax.grad(pg_loss, argnums=(0, 1))(mu, sigma)
      return wpo, tuple(-num * g for g in svg0), tuple(-num * g for g in pg)

    expected = _gaussian_expectations(q_name, mu0, sigma0)
    results = dict(zip(('wpo', 'svg0', 'pg'), estimates(mu, sigma)))
    for method, per_sample in results.items():
      for value, target in zip(per_sample, expected):
        value = np.asarray(value, np.float64)
        stderr = value.std() / np.sqrt(num)
        self.assertLess(abs(value.mean() - target), 5 * stderr + 1e-6,
                        f'{method}: {value.mean()} vs {target} (se {stderr})')
    # Same mean, different variance: the score function is the noisiest.
    self.assertGreater(np.var(results['pg'][0]), 2 * np.var(results['wpo'][0]))


def _mixture_grad_log_prob(a, w, loc, scale):
  """Analytic grad_a log pi for a 1-state mixture: sum_k r_k(a) (-(a-mu_k)/s_k^2)."""
  a = a[..., None, :]  # [N, 1, D] against [K, D]
  log_comp = np.sum(-0.5 * ((a - loc) / scale)**2 - np.log(scale), -1)
  log_joint = np.log(w) + log_comp  # [N, K]
  resp = np.exp(log_joint - log_joint.max(-1, keepdims=True))
  resp /= resp.sum(-1, keepdims=True)
  return np.sum(resp[..., None] * (-(a - loc) / scale**2), axis=-2)  # [N, D]


def _central_difference(fn, x, h=1e-2):
  """d(sum fn)/dx by central differences, per element (fn is per-sample)."""
  grads = np.zeros_like(x)
  for d in range(x.shape[-1]):
    e = np.zeros_like(x)
    e[..., d] = h
    grads[..., d] = (np.asarray(fn(x + e)) - np.asarray(fn(x - e))) / (2 * h)
  return grads


class GradLogProbTest(chex.TestCase):
  """docs/algorithm.md Sec. 2: grad_a log pi via vjp, and the stopped actions."""

  def _dists(self):
    gauss = dists.Gaussian(jnp.array([[0.5, -1.0]]), jnp.array([[0.8, 1.7]]))
    w = np.array([0.2, 0.5, 0.3])
    loc = np.array([[-2.0, 0.0], [0.5, 1.0], [3.0, -1.0]])
    scale = np.array([[0.5, 1.0], [1.0, 0.7], [0.3, 2.0]])
    mix = dists.MixtureOfGaussians(jnp.log(jnp.asarray(w, jnp.float32))[None],
                                   jnp.asarray(loc, jnp.float32)[None],
                                   jnp.asarray(scale, jnp.float32)[None])
    gauss_analytic = lambda a: -(a - np.asarray(gauss.loc)) / np.asarray(
        gauss.scale)**2
    mix_analytic = lambda a: _mixture_grad_log_prob(a[:, 0], w, loc, scale)[:,
                                                                            None]
    return {'gaussian': (gauss, gauss_analytic), 'mixture': (mix, mix_analytic)}

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters('gaussian', 'mixture')
  def test_vjp_matches_analytic_and_finite_differences(self, family):
    dist, analytic = self._dists()[family]
    a = np.asarray(jax.random.uniform(jax.random.PRNGKey(2), (64, 1, 2),
                                      minval=-3.0, maxval=3.5))  # [N, B, D]

    @self.variant
    def grad_log_prob(a):
      logp, vjp_fn = jax.vjp(dist.log_prob, a)
      return vjp_fn(jnp.ones_like(logp))[0]

    got = np.asarray(grad_log_prob(a))
    np.testing.assert_allclose(got, analytic(a.astype(np.float64)), rtol=1e-4,
                               atol=1e-4)
    fd = _central_difference(jax.jit(dist.log_prob), a.astype(np.float32))
    np.testing.assert_allclose(got, fd, rtol=2e-3, atol=2e-3)

    # The loss is exactly -mean_b sum_{n,d} grad_a log pi * dq_da.
    dq_da = jax.random.normal(jax.random.PRNGKey(3), a.shape)
    loss = self.variant(functools.partial(losses.wpo_policy_loss,
                                          squash='identity'))(dist, a, dq_da)
    np.testing.assert_allclose(loss, -np.sum(analytic(a) * np.asarray(dq_da)),
                               rtol=1e-4)

  @chex.variants(with_jit=True, without_jit=True)
  def test_mean_gets_gradient_even_from_reparameterised_actions(self):
    """Actions computed from mu inside the loss must not kill the mean update."""
    mu, sigma = jnp.array([[0.4, -0.2]]), jnp.array([[1.3, 0.6]])
    eps = jax.random.normal(jax.random.PRNGKey(4), (256, 1, 2))
    dq_da = jax.random.normal(jax.random.PRNGKey(5), eps.shape)

    def library_loss(mu, sigma):
      actions = mu + sigma * eps  # keeps a path to mu; the loss must stop it
      return losses.wpo_policy_loss(dists.Gaussian(mu, sigma), actions, dq_da,
                                    squash='identity')

    def naive_loss(mu, sigma):  # the "silent bug" of docs/algorithm.md Sec. 2
      actions = mu + sigma * eps
      logp, vjp_fn = jax.vjp(dists.Gaussian(mu, sigma).log_prob, actions)
      return -jnp.sum(vjp_fn(jnp.ones_like(logp))[0] * dq_da)

    g_mu = self.variant(jax.grad(library_loss))(mu, sigma)
    # d/d mu of -sum_n (-(a - mu) / sigma^2) dq_n = -sum_n dq_n / sigma^2.
    expected = -np.sum(np.asarray(dq_da), axis=0) / np.asarray(sigma)**2
    np.testing.assert_allclose(g_mu, expected, rtol=1e-4)
    self.assertGreater(float(jnp.min(jnp.abs(g_mu))), 1.0)
    g_naive = self.variant(jax.grad(naive_loss))(mu, sigma)
    np.testing.assert_allclose(g_naive, 0.0, atol=1e-4)

  @chex.variants(with_jit=True, without_jit=True)
  def test_cbrt_squash_and_stopped_dq(self):
    mu, sigma = jnp.array([[0.0]]), jnp.array([[2.0]])
    actions = jnp.array([[[1.0]], [[-3.0]]])  # [N=2, B=1, D=1]
    dq_da = jnp.array([[[8.0]], [[-27.0]]])

    def loss(mu, dq):
      return losses.wpo_policy_loss(dists.Gaussian(mu, sigma), actions, dq,
                                    squash='cbrt')

    value, (g_mu, g_dq) = self.variant(jax.value_and_grad(loss, (0, 1)))(
        mu, dq_da)
    # grad_a log pi = -a / 4 = (-0.25, 0.75); cbrt(dq) = (2, -3).
    np.testing.assert_allclose(value, -(-0.25 * 2 + 0.75 * -3), rtol=1e-6)
    np.testing.assert_allclose(g_mu, [[-(2 - 3) / 4]], rtol=1e-6)
    np.testing.assert_array_equal(g_dq, 0.0)  # grad_a Q is a fixed target

  def test_natural_adaptor_keeps_values_and_scales_gradients(self):
    mu, sigma = jnp.array([[0.3, -2.0]]), jnp.array([[0.5, 3.0]])
    nat = dists.natural_gradient(dists.Gaussian(mu, sigma))
    np.testing.assert_array_equal(nat.loc, mu)
    np.testing.assert_array_equal(nat.scale, sigma)
    g_mu, g_sigma = jax.grad(
        lambda m, s: jnp.sum(dists.natural_gradient(dists.Gaussian(m, s)).loc +
                             dists.natural_gradient(dists.Gaussian(m, s)).scale),
        argnums=(0, 1))(mu, sigma)
    np.testing.assert_allclose(g_mu, [[0.25, 9.0]], rtol=1e-6)
    np.testing.assert_allclose(g_sigma, [[0.125, 4.5]], rtol=1e-6)


class ActionGradientTest(chex.TestCase):
  """grad_a Q against the closed form of a quadratic Q, whole and in chunks."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0, 1, 2, 3, 6)
  def test_matches_closed_form(self, samples_per_chunk):
    # Q(s, a) = -sum_d (a_d - c_d(s))^2 with c(s) = s @ W: grad_a Q = -2 (a - c(s)).
    n, b, o, d = 6, 5, 3, 4
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((b, o)).astype(np.float32)
    w = rng.standard_normal((o, d)).astype(np.float32)
    actions = rng.standard_normal((n, b, d)).astype(np.float32)
    expected = -2.0 * (actions - obs @ w)  # [N, B, D], numpy

    def q_fn(a):  # [n, B, D] -> [n, B] for any n
      return -jnp.sum(jnp.square(a - obs @ w), axis=-1)

    @self.variant
    def grad(a):
      return losses.action_gradient(q_fn, a,
                                    samples_per_chunk=samples_per_chunk)

    np.testing.assert_allclose(grad(actions), expected, rtol=1e-5, atol=1e-5)

  def test_chunk_must_divide_samples(self):
    with self.assertRaisesRegex(ValueError, 'must divide'):
      losses.action_gradient(lambda a: jnp.sum(a, -1), jnp.zeros((6, 2, 1)),
                             samples_per_chunk=4)


class ShapeErrorTest(parameterized.TestCase):

  def test_rank_two_actions_rejected(self):
    dist = dists.Gaussian(jnp.zeros((4, 2)), jnp.ones((4, 2)))
    with self.assertRaisesRegex(AssertionError, 'rank'):
      losses.wpo_policy_loss(dist, jnp.zeros((4, 2)), jnp.zeros((4, 2)),
                             squash='identity')

  def test_mismatched_dq_da_rejected(self):
    dist = dists.Gaussian(jnp.zeros((4, 2)), jnp.ones((4, 2)))
    with self.assertRaisesRegex(AssertionError, 'shape'):
      losses.wpo_policy_loss(dist, jnp.zeros((3, 4, 2)), jnp.zeros((3, 4, 1)),
                             squash='identity')

  def test_unknown_squash_names_allowed_values(self):
    dist = dists.Gaussian(jnp.zeros((4, 2)), jnp.ones((4, 2)))
    with self.assertRaisesRegex(ValueError, "'cbrt'.*'identity'"):
      losses.wpo_policy_loss(dist, jnp.zeros((3, 4, 2)), jnp.zeros((3, 4, 2)),
                             squash='tanh')


if __name__ == '__main__':
  absltest.main()
