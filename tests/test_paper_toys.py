"""The paper's toy problems (docs/algorithm.md Secs. 9.1, 9.4), via
`wpo_agent.analysis.toy`."""

import math

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from wpo_agent.analysis import toy

# (mu, sigma, k, a*). k < 0 is Q = +|k| (a - a*)^2 / 2.
_CASES = (
    (1.0, 1.0, 1.0, 0.0),    # the paper's case: (-mu, -sigma)
    (1.0, 1.0, -1.0, 0.0),   # Q = +a^2/2: (+mu, +sigma)
    (2.0, 0.5, 3.0, -1.0),
    (-0.7, 1.5, 0.4, 2.0),
    (0.2, 0.3, 10.0, 0.5),
)
_SAMPLES = 200_000


class GaussianUpdateTest(parameterized.TestCase):
  """docs/algorithm.md Sec. 9.1: MC WPO update of N(mu, sigma), Q = -k (a-a*)^2/2."""

  def _check(self, res, exp_mu, exp_sigma):
    # Closed forms typed in independently of toy.expected_gaussian_update.
    np.testing.assert_allclose(res.expected_delta_mu, exp_mu, rtol=1e-12)
    np.testing.assert_allclose(res.expected_delta_sigma, exp_sigma, rtol=1e-12)
    for got, want, se in ((res.delta_mu, exp_mu, res.stderr_mu),
                          (res.delta_sigma, exp_sigma, res.stderr_sigma)):
      # The tolerance is 5 MC standard errors; make sure it is a tight one.
      self.assertTrue(np.all(se < 0.03 * np.maximum(1.0, np.abs(want))), se)
      np.testing.assert_array_less(np.abs(got - want), 5 * se)

  @parameterized.parameters(*_CASES)
  def test_natural_update(self, mu, sigma, k, a_star):
    res = toy.gaussian_update(mu, sigma, k, a_star, _SAMPLES, fisher=True,
                              seed=3)
    self._check(res, -k * (mu - a_star), -k * sigma)

  @parameterized.parameters(*_CASES)
  def test_update_without_fisher(self, mu, sigma, k, a_star):
    res = toy.gaussian_update(mu, sigma, k, a_star, _SAMPLES, fisher=False,
                              seed=4)
    self._check(res, -k * (mu - a_star) / sigma**2, -2 * k / sigma)

  def test_paper_values_to_three_digits(self):
    res = toy.gaussian_update(1.0, 1.0, 1.0, 0.0, _SAMPLES, fisher=True, seed=0)
    np.testing.assert_allclose([res.delta_mu, res.delta_sigma], [-1.0, -1.0],
                               atol=5e-3)
    res = toy.gaussian_update(1.0, 1.0, -1.0, 0.0, _SAMPLES, fisher=True, seed=1)
    np.testing.assert_allclose([res.delta_mu, res.delta_sigma], [1.0, 1.0],
                               atol=5e-3)

  @parameterized.parameters(True, False)
  def test_batched_multidimensional(self, fisher):
    # B = 3 states, D = 2 dims, each (b, d) its own problem (no cross-talk).
    mu = np.array([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]])
    sigma = np.array([[1.0, 0.5], [2.0, 0.3], [0.8, 1.2]])
    k = np.array([[1.0, 2.0], [-0.5, 4.0], [0.3, 1.0]])
    a_star = np.array([[0.0, 1.0], [-1.0, 0.2], [2.0, -3.0]])
    res = toy.gaussian_update(mu, sigma, k, a_star, _SAMPLES, fisher=fisher,
                              seed=5)
    self.assertEqual(res.delta_mu.shape, (3, 2))
    if fisher:
      self._check(res, -k * (mu - a_star), -k * sigma)
    else:
      self._check(res, -k * (mu - a_star) / sigma**2, -2 * k / sigma)

  def test_invalid_inputs_raise(self):
    with self.assertRaisesRegex(ValueError, 'sigma'):
      toy.gaussian_update(sigma=0.0)
    with self.assertRaisesRegex(ValueError, 'samples'):
      toy.gaussian_update(samples=0)
    with self.assertRaisesRegex(ValueError, 'rank'):
      toy.gaussian_update(mu=np.zeros((2, 2, 2)))


class MixtureToyTest(absltest.TestCase):
  """docs/algorithm.md Sec. 9.4 / paper Fig. 3: WPO puts one component on each
  maximum.

  Initial sigma 1.0 (the paper's figure is reported as either 10 or 1.0): with
  sigma = 1 the components start well inside the convex region of Q and clearly
  separated, so the early variance growth the paper describes is observable;
  sigma = 10 would start both components overlapping and far into the concave
  tails (Q'' < 0 for |a| > 4.08), where sigma must shrink from the first step.
  """

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.wpo_run = toy.run_mixture(steps=2000, method='wpo', lr=0.003, batch=1024,
                              seed=0)

  def test_quartic_q_maxima(self):
    self.assertAlmostEqual(toy.MIXTURE_OPTIMUM, math.sqrt(50.0))
    a = np.linspace(-10.0, 10.0, 200_001)
    q = np.asarray(toy.mixture_q(a))
    np.testing.assert_allclose(sorted(np.abs(a[q >= q.max() - 1e-6])),
                               math.sqrt(50.0), atol=1e-3)

  def test_wpo_finds_both_maxima(self):
    self.assertTrue(np.all(np.isfinite(self.wpo_run.loc)))
    final = np.sort(self.wpo_run.loc[-1])
    np.testing.assert_allclose(final, [-math.sqrt(50.0), math.sqrt(50.0)],
                               atol=0.5)
    # Both components survive: neither weight has collapsed.
    np.testing.assert_allclose(self.wpo_run.weights[-1], [0.5, 0.5], atol=0.1)

  def test_early_variance_grows_while_means_in_convex_region(self):
    run = self.wpo_run
    np.testing.assert_allclose(run.loc[0], [-1.0, 1.0])
    np.testing.assert_allclose(run.scale[0], [1.0, 1.0])
    inside = np.all(np.abs(run.loc) < toy.MIXTURE_CONVEX_EDGE, axis=1)
    first_out = int(np.argmin(inside))  # first step a mean leaves the region
    self.assertGreater(first_out, 50)
    # Throughout the early phase sigma is above its start, and clearly so later.
    early = run.scale[1:first_out]
    self.assertTrue(np.all(early > 1.0), early.min())
    self.assertTrue(np.all(early.max(axis=0) > 1.5), early.max(axis=0))
    # ... and only in the concave tails does it shrink again.
    self.assertTrue(np.all(run.scale[-1] < 0.5 * early.max(axis=0)))

  def test_pg_runs_on_same_problem(self):
    run = toy.run_mixture(steps=200, method='pg', seed=0)
    self.assertEqual(run.loc.shape, (201, 2))
    self.assertTrue(np.all(np.isfinite(run.loc)))
    # Same expected mean drift as WPO at sigma = 1: both means move outwards.
    self.assertLess(run.loc[-1, 0], -1.2)
    self.assertGreater(run.loc[-1, 1], 1.2)

  def test_unknown_method_rejected(self):
    with self.assertRaisesRegex(ValueError, "'pg'"):
      toy.run_mixture(steps=1, method='svg')


if __name__ == '__main__':
  absltest.main()
