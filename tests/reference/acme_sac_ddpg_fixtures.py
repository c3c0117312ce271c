"""Writes tests/reference/fixtures/{sac,ddpg}_*.npz from Acme's SAC and rlax.

Not imported by the project's tests (they read the .npz files); it runs in a
scratch venv with Acme's source on sys.path:

  python3 -m venv /tmp/acme_ref_venv2
  /tmp/acme_ref_venv2/bin/pip install jax==0.4.30 jaxlib==0.4.30 'numpy<2' \\
      ml-dtypes==0.4.1 'scipy<1.14' tensorflow-probability==0.24.0 \\
      dm-haiku==0.0.12 rlax==0.1.6 distrax==0.1.5 chex==0.1.86 dm-tree
  # Acme at 770bc75e948cc276c785ebfcf3de0b0812b95e26:
  git --git-dir=<acme .git> archive 770bc75e94 acme | tar -x -C /tmp/acme_src2
  ACME_SRC=/tmp/acme_src2 /tmp/acme_ref_venv2/bin/python \\
      tests/reference/acme_sac_ddpg_fixtures.py

Used: Python 3.11.7, jax/jaxlib 0.4.30, tensorflow-probability 0.24.0 (needs
numpy < 2: it calls np.issctype), numpy 1.26.4, ml-dtypes 0.4.1, scipy 1.13.1,
dm-haiku 0.0.12, chex 0.1.86, rlax 0.1.6 (PyPI: rlax 0.1.8 needs jax >= 0.7;
0.1.6's dpg_loss and l2_loss are identical to rlax HEAD
4c5d25b2609879d321f5a432cdf88165574e57a7).

Everything is float64 (jax x64). SAC: the policy is Acme's own
`TanhTransformedDistribution` (acme/jax/networks/distributional.py), built as
`NormalTanhDistribution.__call__` builds it; samples come from its `sample`
with recorded keys and log-probs from its `log_prob`. The three losses are
closures inside `SACLearner.__init__`, so they are transcribed below (file and
lines given), with the networks replaced by arrays (the policy's loc/scale)
and a tiny closed-form twin critic. (One float32 inside Acme even so: tfp
converts the 0.999 clip threshold to float32 before its atanh, which sets the
saturated log-probs' tail boundary; sac_losses.acme_squashed_log_prob does the
same.) DDPG: `rlax.dpg_loss` vmapped over the
batch, as acme/agents/jax/d4pg/learning.py does.

distributional.py imports the TF-backed `tensorflow_probability` package for
one decorator (`auto_composite_tensor`, on a class unused here); TensorFlow is
not installed, so that decorator is stubbed by an identity while the module
loads, and the module is loaded from its file without acme/__init__.
"""

import importlib.util
import os
import sys
import types

import jax

jax.config.update('jax_enable_x64', True)

import haiku as hk  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
import rlax
import tensorflow_probability.substrates.jax as tfp

tfd = tfp.distributions
_HERE = os.path.dirname(os.path.abspath(__file__))
_OUT = os.path.join(_HERE, 'fixtures')


def _load_distributional():
  """acme/jax/networks/distributional.py, with the TF-only decorator stubbed."""
  path = os.path.join(os.environ.get('ACME_SRC', '/tmp/acme_src2'),
                      'acme', 'jax', 'networks', 'distributional.py')
  real = sys.modules['tensorflow_probability']
  stub = types.ModuleType('tensorflow_probability')
  stub.__path__ = real.__path__
  stub.experimental = types.SimpleNamespace(auto_composite_tensor=lambda c: c)
  sys.modules['tensorflow_probability'] = stub
  try:
    spec = importlib.util.spec_from_file_location('acme_distributional', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  finally:
    sys.modules['tensorflow_probability'] = real
  return module


dist_lib = _load_distributional()


def policy_apply(params, observation=None):
  """What NormalTanhDistribution.__call__ returns (distributional.py L259-265)
  for a given loc and scale (the network's outputs); observation unused."""
  del observation
  loc, scale = params
  return tfd.Independent(
      dist_lib.TanhTransformedDistribution(tfd.Normal(loc=loc, scale=scale)),
      reinterpreted_batch_ndims=1)


def twin_q(q_params, action):
  """Closed-form twin critic [B,2]: Q_h = b_h - k_h |a - c_h|^2 / 2 + w_h.a."""
  bias, w, k, c = q_params  # [B, 2], [2, D], [2], [2, D]
  sq = jnp.sum(jnp.square(action[:, None, :] - c[None]), axis=-1)  # [B, 2]
  return bias - 0.5 * k * sq + action @ w.T


# ---- Transcribed from acme/agents/jax/sac/learning.py at 770bc75e, lines
# 96-107 (alpha_loss), 109-128 (critic_loss), 130-143 (actor_loss). Changes:
# networks.policy_network.apply -> policy_apply, networks.q_network.apply ->
# twin_q, networks.sample/log_prob -> the distribution's sample/log_prob (as in
# sac/networks.py L141-142); reward_scale, discount, target_entropy are
# arguments instead of closure variables.


def alpha_loss(log_alpha, policy_params, key, target_entropy):
  dist_params = policy_apply(policy_params)
  action = dist_params.sample(seed=key)
  log_prob = dist_params.log_prob(action)
  alpha = jnp.exp(log_alpha)
  alpha_loss = alpha * jax.lax.stop_gradient(-log_prob - target_entropy)
  return jnp.mean(alpha_loss)


def critic_loss(q_old_action, next_policy_params, target_q_params, alpha,
                reward, transition_discount, key, reward_scale, discount):
  # q_old_action = networks.q_network.apply(q_params, obs, action): given.
  next_dist_params = policy_apply(next_policy_params)
  next_action = next_dist_params.sample(seed=key)
  next_log_prob = next_dist_params.log_prob(next_action)
  next_q = twin_q(target_q_params, next_action)
  next_v = jnp.min(next_q, axis=-1) - alpha * next_log_prob
  target_q = jax.lax.stop_gradient(reward * reward_scale +
                                   transition_discount * discount * next_v)
  q_error = q_old_action - jnp.expand_dims(target_q, -1)
  q_loss = 0.5 * jnp.mean(jnp.square(q_error))
  return q_loss, target_q  # target_q returned for the fixture only


def actor_loss(policy_params, q_params, alpha, key):
  dist_params = policy_apply(policy_params)
  action = dist_params.sample(seed=key)
  log_prob = dist_params.log_prob(action)
  q_action = twin_q(q_params, action)
  min_q = jnp.min(q_action, axis=-1)
  actor_loss = alpha * log_prob - min_q
  return jnp.mean(actor_loss)

# ---- end of the transcription.


def _sample_record(loc, scale, key, prefix):
  """Acme's sample and log_prob at (loc, scale), and the noise behind them."""
  dist = policy_apply((loc, scale))
  action = dist.sample(seed=key)
  # Normal._sample_n draws samplers.normal(shape, seed) * scale + loc.
  eps = tfd.Normal(jnp.zeros_like(loc), jnp.ones_like(loc)).sample(seed=key)
  pre_tanh = loc + scale * eps
  np.testing.assert_allclose(jnp.tanh(pre_tanh), action, rtol=0, atol=1e-15)
  return {f'{prefix}loc': loc, f'{prefix}scale': scale, f'{prefix}eps': eps,
          f'{prefix}action': action, f'{prefix}pre_tanh': pre_tanh,
          f'{prefix}log_prob': dist.log_prob(action)}


def _check_haiku_head(rng):
  """NormalTanhDistribution (the haiku module) builds what policy_apply does."""
  obs = jnp.asarray(rng.normal(size=(4, 5)))
  net = hk.without_apply_rng(hk.transform(
      lambda o: dist_lib.NormalTanhDistribution(3)(o)))
  params = net.init(jax.random.PRNGKey(1), obs)
  dist = net.apply(params, obs)
  inner = dist.distribution.distribution
  same = policy_apply((inner.loc, inner.scale))
  action = dist.sample(seed=jax.random.PRNGKey(2))
  np.testing.assert_array_equal(dist.log_prob(action), same.log_prob(action))


def sac_case(rng, *, seed, loc_range, scale_range, batch=6, dims=3):
  """Inputs, Acme's losses and their gradients for one random case."""
  u = lambda lo, hi, shape: jnp.asarray(rng.uniform(lo, hi, size=shape))
  loc, loc_t = (u(*loc_range, (batch, dims)) for _ in range(2))
  scale, scale_t = (u(*scale_range, (batch, dims)) for _ in range(2))
  q_params = (u(-1, 1, (batch, 2)), u(-1, 1, (2, dims)), u(0.5, 2, (2,)),
              u(-1, 1, (2, dims)))
  target_q_params = tuple(p + u(-0.2, 0.2, p.shape) for p in q_params)
  q_old_action = u(-2, 2, (batch, 2))
  reward = u(-1, 1, (batch,))
  transition_discount = jnp.asarray(
      (np.arange(batch) % 4 != 3).astype(np.float64))  # some terminations
  reward_scale, discount = 2.0, 0.97
  log_alpha, target_entropy = jnp.asarray(-0.7), -float(dims)
  key_alpha, key_critic, key_actor = jax.random.split(
      jax.random.PRNGKey(seed), 3)
  alpha = jnp.exp(log_alpha)
  out = dict(q_bias=q_params[0], q_w=q_params[1], q_k=q_params[2],
             q_c=q_params[3], target_q_bias=target_q_params[0],
             target_q_w=target_q_params[1], target_q_k=target_q_params[2],
             target_q_c=target_q_params[3], q_old_action=q_old_action,
             reward=reward, transition_discount=transition_discount,
             reward_scale=reward_scale, discount=discount, log_alpha=log_alpha,
             target_entropy=target_entropy)
  out.update(_sample_record(loc, scale, key_actor, 'actor_'))
  out.update(_sample_record(loc, scale, key_alpha, 'alpha_'))
  out.update(_sample_record(loc_t, scale_t, key_critic, 'critic_'))
  val, (g_la, g_pol) = jax.value_and_grad(alpha_loss, argnums=(0, 1))(
      log_alpha, (loc, scale), key_alpha, target_entropy)
  out.update(alpha_loss=val, alpha_loss_grad_log_alpha=g_la,
             alpha_loss_grad_loc=g_pol[0])
  (val, target), (g_q, g_pol, g_alpha) = jax.value_and_grad(
      critic_loss, argnums=(0, 1, 3), has_aux=True)(
          q_old_action, (loc_t, scale_t), target_q_params, alpha, reward,
          transition_discount, key_critic, reward_scale, discount)
  out.update(critic_loss=val, critic_target=target,
             critic_loss_grad_q_old_action=g_q, critic_loss_grad_loc=g_pol[0],
             critic_loss_grad_alpha=g_alpha)
  val, (g_pol, g_alpha) = jax.value_and_grad(actor_loss, argnums=(0, 2))(
      (loc, scale), q_params, alpha, key_actor)
  out.update(actor_loss=val, actor_loss_grad_loc=g_pol[0],
             actor_loss_grad_scale=g_pol[1], actor_loss_grad_alpha=g_alpha)
  return {k: np.asarray(v, np.float64) for k, v in out.items()}


def ddpg_case(rng, *, batch=5, dims=3, obs_dims=4):
  """rlax.dpg_loss as D4PG applies it, with and without dqda clipping."""
  s = jnp.asarray(rng.normal(size=(batch, obs_dims)))
  w = jnp.asarray(rng.normal(size=(obs_dims, dims)) * 0.5)
  dqda = jnp.asarray(rng.normal(size=(batch, dims)) * 1.5)
  dqda = dqda.at[0].set(jnp.array([0.3, -0.2, 0.1]))  # norm < 1: no clip
  dqda = dqda.at[1].set(0.0)  # the zero row (rlax's double where)
  out = dict(s=s, w=w, dqda=dqda)
  batched = jax.vmap(rlax.dpg_loss, in_axes=(0, 0, None))
  for name, clip in (('noclip', None), ('clip1', 1.0), ('clip05', 0.5)):
    loss_a = lambda a, c=clip: jnp.mean(batched(a, dqda, c))  # d4pg L96-98
    loss_w = lambda w_, c=clip: loss_a(jnp.tanh(s @ w_), c)
    a = jnp.tanh(s @ w)
    out[f'{name}_loss'] = batched(a, dqda, clip)  # [B, D]
    out[f'{name}_grad_a'] = jax.grad(loss_a)(a)
    out[f'{name}_grad_w'] = jax.grad(loss_w)(w)
  out['a'] = jnp.tanh(s @ w)
  return {k: np.asarray(v, np.float64) for k, v in out.items()}


def main():
  rng = np.random.default_rng(20240611)
  _check_haiku_head(rng)
  os.makedirs(_OUT, exist_ok=True)
  cases = {'sac_moderate': dict(seed=7, loc_range=(-1.0, 1.0),
                                 scale_range=(0.2, 1.0)),
           # |u| beyond atanh(0.999) ~ 3.8: Acme's tail-average density.
           'sac_saturated': dict(seed=8, loc_range=(-6.0, 6.0),
                                 scale_range=(0.05, 1.5))}
  for name, kwargs in cases.items():
    record = sac_case(rng, **kwargs)
    saturated = np.mean(np.abs(np.tanh(record['actor_pre_tanh'])) >= 0.999)
    print(name, 'fraction of saturated actor samples:', saturated)
    np.savez(os.path.join(_OUT, f'{name}.npz'), **record)
  np.savez(os.path.join(_OUT, 'ddpg_dpg_loss.npz'), **ddpg_case(rng))
  print('wrote', sorted(f for f in os.listdir(_OUT)
                        if f.startswith(('sac_', 'ddpg_'))))


if __name__ == '__main__':
  main()
