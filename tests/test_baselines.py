"""The paper's baselines (MPO, DDPG, SAC; baselines.py) in WPO's learner:
their configs, networks, SGD steps, target updates and checkpoints.

The losses themselves are tested against Acme's and rlax's on fixtures
(test_mpo_losses.py, test_sac_ddpg_losses.py); here, how the learning step
composes them: which parameters each loss reads, what each update changes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wpo_agent import baselines
from wpo_agent import checkpointing
from wpo_agent import config as config_lib
from wpo_agent import distributions as dists
from wpo_agent import learning
from wpo_agent import networks as networks_lib
from wpo_agent import resume
from wpo_agent import runs
from wpo_agent.types import Batch
import tiny

OBS, ACT, BATCH = 3, 2, 32


def _setup(algorithm, **overrides):
  config = tiny.config(algorithm=algorithm, batch_size=BATCH, **overrides)
  nets = networks_lib.make_networks(OBS, -np.ones(ACT), np.ones(ACT),
                                    **config.network_kwargs())
  state = learning.init_training_state(nets, config, jax.random.PRNGKey(0))
  return config, nets, state


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  return Batch(
      observation=rng.normal(size=(BATCH, OBS)).astype(np.float32),
      action=rng.uniform(-1, 1, size=(BATCH, ACT)).astype(np.float32),
      reward=rng.normal(size=(BATCH,)).astype(np.float32),
      discount=np.full((BATCH,), 0.9, np.float32),
      next_observation=rng.normal(size=(BATCH, OBS)).astype(np.float32))


def test_configs_take_each_algorithms_own_values():
  sac = config_lib.make_config('acme', algorithm='sac')
  # Acme's run_sac.py / sac/config.py.
  assert (sac.n_step, sac.samples_per_insert, sac.min_replay_size,
          sac.target_update_tau, sac.dual_learning_rate) == (
              2, 256.0, 10_000, 0.005, 3e-4)
  mpo = config_lib.make_config('acme', algorithm='mpo')
  assert (mpo.n_step, mpo.kl_constraint, mpo.init_log_temperature,
          mpo.init_log_alpha_mean, mpo.grad_norm_clip) == (
              4, 'hard', 10.0, 10.0, 40.0)
  # Another preset keeps its data settings; an override wins over both.
  small = config_lib.make_config('small', algorithm='ddpg',
                                 exploration_stddev=0.3)
  assert small.samples_per_insert == config_lib.PRESETS['small'][
      'samples_per_insert']
  assert (small.exploration_stddev, small.dqda_clipping) == (0.3, 1.0)
  assert config_lib.make_config('acme') == config_lib.WPOConfig(
      **config_lib.PRESETS['acme'])  # WPO unchanged


def test_bad_algorithm_choices_are_one_line():
  with pytest.raises(config_lib.ConfigError,
                     match=r"^algorithm='td3': allowed values are \['wpo', "
                     r"'mpo', 'ddpg', 'sac'\]$"):
    config_lib.make_config('small', algorithm='td3')
  for algorithm in ('sac', 'ddpg'):
    with pytest.raises(config_lib.ConfigError,
                       match=rf'^algorithm={algorithm} cannot use '
                       'policy_family=mixture: .*works with wpo or mpo$'):
      config_lib.make_config('small', algorithm=algorithm,
                             policy_family='mixture')
  assert config_lib.parse_override('algorithm=mpo') == ('algorithm', 'mpo')


def test_a_resume_with_another_algorithm_is_refused(tmp_path):
  workdir = str(tmp_path)
  run = runs.RunOptions(domain='cartpole', workdir=workdir)
  resume.write_run_config(workdir, run, tiny.config())
  (tmp_path / 'checkpoints' / '100').mkdir(parents=True)
  with pytest.raises(resume.WorkdirMismatchError,
                     match="algorithm: saved 'wpo', now 'sac'"):
    resume.write_run_config(workdir, run, tiny.config(algorithm='sac'))


def test_policies_of_the_baselines():
  obs = jnp.asarray(_batch().observation)
  _, nets, state = _setup('sac')
  pi = nets.policy.apply(state.policy_params, obs)
  assert isinstance(pi, dists.TanhGaussian)
  a = pi.sample(jax.random.PRNGKey(1), (100,))
  assert jnp.all(jnp.abs(a) < 1)
  q = nets.critic.apply(state.critic_params, obs, a)
  assert q.shape == (100, BATCH, 2)  # twin critics
  assert not np.allclose(q[..., 0], q[..., 1])  # independently initialised
  config, nets, state = _setup('ddpg', exploration_stddev=0.25)
  pi = nets.policy.apply(state.policy_params, obs)
  assert isinstance(pi, dists.NoisyDeterministic)
  noise = pi.sample(jax.random.PRNGKey(2), (2000,)) - pi.mode()
  np.testing.assert_allclose(np.std(noise), 0.25, rtol=0.05)


def test_sac_temperature_first_step_and_polyak_targets():
  """Adam's first step moves log alpha by -lr * sign(grad), grad = alpha *
  (entropy - target) with alpha = 1; the targets move by tau towards the
  updated online parameters."""
  config, nets, state = _setup('sac')
  new, metrics = jax.jit(learning.make_sgd_step(nets, config))(state,
                                                               _batch())
  gap = float(metrics['entropy']) - config.target_entropy_per_dim * ACT
  np.testing.assert_allclose(
      float(new.dual_params.log_alpha),
      -config.dual_learning_rate * np.sign(gap), rtol=1e-4)
  tau = config.target_update_tau
  for target, old, online in ((new.target_critic_params,
                               state.target_critic_params, new.critic_params),
                              (new.target_policy_params,
                               state.target_policy_params, new.policy_params)):
    jax.tree.map(lambda t, o, n: np.testing.assert_allclose(
        t, (1 - tau) * o + tau * n, rtol=1e-6, atol=1e-7), target, old, online)


def test_mpo_learns_its_duals_only_under_a_hard_constraint():
  for constraint, moves in (('hard', True), ('soft', False)):
    config, nets, state = _setup('mpo', kl_constraint=constraint)
    new, _ = jax.jit(learning.make_sgd_step(nets, config))(state, _batch())
    assert isinstance(new.dual_params, baselines.MPODuals)
    changed = [not np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(new.dual_params), jax.tree.leaves(state.dual_params))]
    assert changed == [moves] * 3


def test_ddpg_critic_targets_the_target_policys_action():
  """y = r + d * Qbar(s', mu_bar(s')), computed here from the networks."""
  config, nets, state = _setup('ddpg')
  batch = _batch()
  objective = baselines.make_objective(nets, config)
  _, (q_tm1, target) = objective.critic_loss(
      state.critic_params, state.policy_params, state.target_policy_params,
      state.target_critic_params, state.dual_params, batch,
      jax.random.PRNGKey(0))
  a_t = nets.policy.apply(state.target_policy_params,
                         batch.next_observation).action  # no noise
  expected = batch.reward + batch.discount * nets.critic.apply(
      state.target_critic_params, batch.next_observation, a_t)
  np.testing.assert_allclose(target, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(q_tm1, nets.critic.apply(
      state.critic_params, batch.observation, batch.action))


@pytest.mark.parametrize('algorithm', ['mpo', 'sac', 'ddpg'])
def test_checkpoints_continue_the_duals_exactly(tmp_path, algorithm):
  from test_checkpointing import assert_bit_equal  # pylint: disable=g-import-not-at-top
  config, nets, state = _setup(algorithm)
  step = jax.jit(learning.make_sgd_step(nets, config))
  state, _ = step(state, _batch(0))
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  ckpt.save(10, state, {'actor_steps': 10})
  like = learning.init_training_state(nets, config, jax.random.PRNGKey(9))
  restored, _ = ckpt.restore(like)
  assert type(restored.dual_params) is type(state.dual_params)
  assert_bit_equal(step(jax.device_put(restored), _batch(1))[0],
                   step(state, _batch(1))[0])
