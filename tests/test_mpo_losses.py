"""Tests of wpo_agent.mpo_losses: equal to Acme's MPO loss on committed fixtures
(tests/reference/acme_mpo_fixtures.py wrote them with Acme's own code), and
checks that do not rely on Acme (closed forms, finite differences).

The fixture comparisons run in float64 inside `jax.experimental.enable_x64()`,
which is restored on exit: the other tests of the process stay in float32.
"""

import functools
import os

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
from jax.experimental import enable_x64
import jax.numpy as jnp
import numpy as np

from wpo_agent import distributions as dists
from wpo_agent import mpo_losses

_FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                         'reference', 'fixtures')
_CASES = ('n8_b5_d3', 'n8_b5_d1', 'n16_b4_d2')
# The gradients the fixtures hold, in the order of `_loss`'s first arguments.
_GRADS = ('online_loc', 'online_scale', 'log_temperature', 'log_alpha_mean',
          'log_alpha_stddev')
_ACME_STATS = ('dual_alpha_mean', 'dual_alpha_stddev', 'dual_temperature',
               'loss_policy', 'loss_alpha', 'loss_temperature', 'kl_q_rel',
               'kl_mean_rel', 'kl_stddev_rel', 'q_min', 'q_max',
               'pi_stddev_min', 'pi_stddev_max', 'pi_stddev_cond')


def _loss(online_loc, online_scale, log_temperature, log_alpha_mean,
          log_alpha_stddev, *, target_loc, target_scale, actions, q_values,
          epsilon, epsilon_mean, epsilon_stddev, num_components=0):
  """mpo_policy_loss on Gaussians, or (num_components=1) 1-component mixtures.
  """
  online = dists.Gaussian(online_loc, online_scale)
  target = dists.Gaussian(target_loc, target_scale)
  if num_components:
    as_mixture = lambda d: dists.MixtureOfGaussians(
        jnp.zeros(d.loc.shape[:1] + (1,), d.loc.dtype), d.loc[:, None],
        d.scale[:, None])
    online, target = as_mixture(online), as_mixture(target)
  return mpo_losses.mpo_policy_loss(
      online=online, target=target, actions=actions, q_values=q_values,
      log_temperature=log_temperature, log_alpha_mean=log_alpha_mean,
      log_alpha_stddev=log_alpha_stddev, epsilon=epsilon,
      epsilon_mean=epsilon_mean, epsilon_stddev=epsilon_stddev)


def _loss_and_grads(args, **kwargs):
  """((loss, stats), grads w.r.t. the five `_GRADS` arguments), jitted."""
  loss_and_grads = jax.value_and_grad(lambda *a: _loss(*a, **kwargs),
                                      argnums=tuple(range(5)), has_aux=True)
  return jax.jit(loss_and_grads)(*args)


def _problem(dtype, *, num_samples=6, batch=4, dims=2, seed=0):
  """Random online/target policies, target samples and Q-values."""
  rng = np.random.RandomState(seed)
  t_loc, t_scale = rng.normal(size=(batch, dims)), np.exp(
      rng.uniform(-1, 0.5, size=(batch, dims)))
  loc = t_loc + 0.3 * rng.normal(size=(batch, dims))
  scale = t_scale * np.exp(0.2 * rng.normal(size=(batch, dims)))
  actions = t_loc + t_scale * rng.normal(size=(num_samples, batch, dims))
  q_values = -np.sum(actions**2, -1) + rng.normal(size=(num_samples, batch))
  cast = lambda x: jnp.asarray(x, dtype)
  args = (cast(loc), cast(scale), cast(0.3), cast(rng.normal(size=dims)),
          cast(rng.normal(size=dims)))
  kwargs = dict(target_loc=cast(t_loc), target_scale=cast(t_scale),
                actions=cast(actions), q_values=cast(q_values), epsilon=0.1,
                epsilon_mean=0.01, epsilon_stddev=1e-4)
  return args, kwargs


class AcmeFixturesTest(parameterized.TestCase):

  @parameterized.parameters(*_CASES)
  def test_loss_stats_and_gradients_equal_acme(self, name):
    with np.load(os.path.join(_FIXTURES, f'mpo_{name}.npz')) as npz:
      fix = dict(npz)
    x64_before = jax.config.jax_enable_x64
    with enable_x64():
      args = [jnp.asarray(fix[k]) for k in _GRADS]
      args[2] = args[2][0]  # Acme's log_temperature has shape [1]
      kwargs = {k: jnp.asarray(fix[k]) for k in (
          'target_loc', 'target_scale', 'actions', 'q_values')}
      kwargs.update({k: float(fix[k]) for k in (
          'epsilon', 'epsilon_mean', 'epsilon_stddev')})
      (loss, stats), grads = _loss_and_grads(args, **kwargs)
    self.assertEqual(jax.config.jax_enable_x64, x64_before)  # restored
    self.assertEqual(loss.dtype, jnp.float64)
    self.assertEqual(loss.shape, ())
    tol = dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(loss, fix['loss'], **tol)
    acme_stats = sorted(k[len('stats_'):] for k in fix
                        if k.startswith('stats_'))
    self.assertEqual(acme_stats, sorted(_ACME_STATS))
    for field in _ACME_STATS:
      np.testing.assert_allclose(getattr(stats, field), fix['stats_' + field],
                                 err_msg=field, **tol)
    for arg, grad in zip(_GRADS, grads):
      expected = fix['grad_' + arg]
      if arg == 'log_temperature':
        expected = expected[0]
      self.assertEqual(grad.shape, expected.shape)
      np.testing.assert_allclose(grad, expected, err_msg=arg, **tol)
    self.assertLess(np.max(np.abs(grads[0])), 1e3)  # the fixtures are sane
    self.assertGreater(np.max(np.abs(grads[0])), 1e-3)


class MPOLossTest(chex.TestCase):

  def test_one_component_mixture_equals_gaussian(self):
    args, kwargs = _problem(jnp.float32)
    gauss = _loss_and_grads(args, **kwargs)
    mix = _loss_and_grads(args, num_components=1, **kwargs)
    (loss_g, stats_g), grads_g = gauss
    (loss_m, stats_m), grads_m = mix
    np.testing.assert_allclose(loss_m, loss_g, rtol=1e-5)
    chex.assert_trees_all_close(stats_m, stats_g, rtol=1e-5, atol=1e-6)
    # The gradients w.r.t. the shared loc, scale [B, D] and the duals.
    chex.assert_trees_all_close(grads_m, grads_g, rtol=1e-5, atol=1e-6)

  def test_two_component_mixture_at_the_target(self):
    rng = np.random.RandomState(3)
    mix = dists.MixtureOfGaussians(  # B=4, K=2, D=3
        jnp.asarray(rng.normal(size=(4, 2)), jnp.float32),
        jnp.asarray(rng.normal(size=(4, 2, 3)), jnp.float32),
        jnp.asarray(np.exp(rng.normal(size=(4, 2, 3))), jnp.float32))
    # [N=5, B, D]; any actions will do (the target's samples in the learner).
    actions = jnp.asarray(rng.normal(size=(5, 4, 3)), jnp.float32)
    loss, stats = jax.jit(functools.partial(
        mpo_losses.mpo_policy_loss, epsilon=0.1, epsilon_mean=0.01,
        epsilon_stddev=1e-4))(
            online=mix, target=mix, actions=actions,
            q_values=jnp.zeros((5, 4)), log_temperature=jnp.float32(0.0),
            log_alpha_mean=jnp.zeros(3), log_alpha_stddev=jnp.zeros(3))
    # Online = target: both parts are the mixture itself, no KL, w = 1/N.
    np.testing.assert_allclose(stats.loss_cross_entropy,
                               -2 * jnp.mean(mix.log_prob(actions)), rtol=1e-5)
    chex.assert_shape([stats.kl_mean_rel, stats.kl_stddev_rel], (3,))
    np.testing.assert_allclose(stats.kl_mean_rel, 0.0, atol=1e-6)
    np.testing.assert_allclose(stats.kl_stddev_rel, 0.0, atol=1e-6)
    # All duals are softplus(0) = log 2: the dual losses are log 2 * epsilons.
    np.testing.assert_allclose(
        loss, stats.loss_cross_entropy + np.log(2) * (3 * 0.0101 + 0.1),
        rtol=1e-6)
    np.testing.assert_allclose(stats.pi_stddev_min,
                               jnp.mean(jnp.min(mix.scale, axis=(1, 2))))

  def test_temperature_gradient_is_the_dual_derivative(self):
    with enable_x64():
      args, kwargs = _problem(jnp.float64, num_samples=8, batch=5, dims=3)
      (_, stats), grads = _loss_and_grads(args, **kwargs)
      @jax.jit
      def loss_temperature(log_t):
        return _loss(*args[:2], log_t, *args[3:], **kwargs)[1].loss_temperature
      h = 1e-5
      finite_diff = (loss_temperature(args[2] + h) -
                     loss_temperature(args[2] - h)) / (2 * h)
    np.testing.assert_allclose(grads[2], finite_diff, rtol=1e-8)
    # Closed form: d/d eta of eta (eps + mean_b logsumexp(Q/eta) - log N) is
    # eps + mean_b [logsumexp(Q/eta) - log N - sum_n w_n Q_n / eta], times
    # d eta / d log_eta = sigmoid(log_eta).
    q, eta = np.asarray(kwargs['q_values']), float(stats.dual_temperature)
    lse = np.log(np.sum(np.exp(q / eta), axis=0))
    w = np.exp(q / eta - lse)
    d_eta = kwargs['epsilon'] + np.mean(
        lse - np.log(q.shape[0]) - np.sum(w * q, axis=0) / eta)
    sigmoid = 1 / (1 + np.exp(-float(args[2])))
    np.testing.assert_allclose(grads[2], d_eta * sigmoid, rtol=1e-10)

  def test_equal_q_gives_uniform_weights(self):
    args, kwargs = _problem(jnp.float32, num_samples=5)
    num_samples = kwargs['actions'].shape[0]
    per_state = jnp.array([1.0, -2.0, 3.0, 0.5])
    kwargs['q_values'] = jnp.broadcast_to(per_state, (num_samples, 4))
    eta = jnp.float32(0.7)
    weights, loss_t = mpo_losses.e_step_weights(
        q_values=kwargs['q_values'], temperature=eta, epsilon=0.1)
    np.testing.assert_allclose(weights, 1 / num_samples, rtol=1e-6)
    # logsumexp_n(c / eta) - log N = c / eta.
    np.testing.assert_allclose(loss_t, 0.7 * 0.1 + np.mean(per_state),
                               rtol=1e-5)
    online = dists.Gaussian(args[0], args[1])
    log_prob = online.log_prob(kwargs['actions'])  # [N, B]
    np.testing.assert_allclose(
        mpo_losses.weighted_cross_entropy(
            policy=online, actions=kwargs['actions'], weights=weights),
        -jnp.mean(log_prob), rtol=1e-5)
    # Online = target: both decoupled parts are the online policy, no KL.
    kwargs.update(target_loc=args[0], target_scale=args[1])
    _, stats = _loss(*args, **kwargs)
    np.testing.assert_allclose(stats.loss_cross_entropy,
                               -2 * jnp.mean(log_prob), rtol=1e-5)
    np.testing.assert_allclose(stats.ess, 1.0, rtol=1e-6)
    np.testing.assert_allclose(stats.kl_q_rel, 0.0, atol=1e-6)
    np.testing.assert_allclose(stats.kl_mean_rel, 0.0, atol=1e-6)
    np.testing.assert_allclose(stats.kl_stddev_rel, 0.0, atol=1e-6)

  def test_peaked_weights_have_small_ess(self):
    q = jnp.array([[0.0, 0.0], [0.0, 0.0], [10.0, 0.0]])  # [N=3, B=2]
    weights, _ = mpo_losses.e_step_weights(
        q_values=q, temperature=jnp.float32(0.01), epsilon=0.1)
    np.testing.assert_allclose(weights[:, 0], [0.0, 0.0, 1.0], atol=1e-6)
    args, kwargs = _problem(jnp.float32, num_samples=3, batch=2)
    kwargs['q_values'] = q
    _, stats = _loss(*args[:2], jnp.log(jnp.expm1(jnp.float32(0.01))),
                     *args[3:], **kwargs)
    # b=0: one sample takes all the weight (ESS 1/3); b=1: uniform (ESS 1).
    np.testing.assert_allclose(stats.ess, (1 / 3 + 1) / 2, rtol=1e-5)
    np.testing.assert_allclose(stats.dual_temperature, 0.01, rtol=1e-4)

  def test_bad_shapes_fail(self):
    args, kwargs = _problem(jnp.float32)
    # Traced, not run: chex's shape checks fire while tracing.
    loss = lambda *a, **k: jax.eval_shape(functools.partial(_loss, **k), *a)
    self.assertEqual(loss(*args, **kwargs)[0].shape, ())  # good shapes pass
    bad = [
        ({}, dict(q_values=kwargs['q_values'][:, :-1])),       # B mismatch
        ({}, dict(q_values=kwargs['q_values'][:-1])),          # N mismatch
        ({}, dict(actions=kwargs['actions'][0])),              # rank 2
        ({}, dict(target_loc=kwargs['target_loc'][:-1])),      # online/target
        ({2: args[2][None]}, {}),                              # temperature [1]
        ({3: args[3][:1]}, {}),                                # alpha [D - 1]
        ({4: jnp.zeros((3,))}, {}),                            # alpha [D + 1]
    ]
    for arg_updates, kwarg_updates in bad:
      bad_args = [arg_updates.get(i, a) for i, a in enumerate(args)]
      with self.assertRaises(AssertionError, msg=str(kwarg_updates)):
        loss(*bad_args, **dict(kwargs, **kwarg_updates))


if __name__ == '__main__':
  absltest.main()
