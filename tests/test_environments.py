"""Tests for wpo_agent.environments: specs, clipping, errors, seeding."""

import dm_env
from dm_control import suite
import numpy as np
import pytest

from wpo_agent import environments


def _check_specs(env, obs_dim, act_dim):
  spec = environments.environment_spec(env)
  assert spec.observations.shape == (obs_dim,)
  assert spec.observations.dtype == np.float32
  assert spec.actions.shape == (act_dim,)
  assert isinstance(spec.actions, dm_env.specs.BoundedArray)
  np.testing.assert_array_equal(spec.actions.minimum, -np.ones(act_dim))
  np.testing.assert_array_equal(spec.actions.maximum, np.ones(act_dim))
  assert spec.rewards.dtype == np.float32
  assert spec.discounts.dtype == np.float32
  ts = env.reset()
  assert ts.first()
  assert ts.observation.shape == (obs_dim,)
  assert ts.observation.dtype == np.float32
  ts = env.step(np.zeros(act_dim, np.float32))
  assert ts.observation.dtype == np.float32
  assert np.asarray(ts.reward).dtype == np.float32
  assert np.asarray(ts.discount).dtype == np.float32
  return spec


def test_cartpole_swingup_specs():
  env = environments.make_environment('cartpole', 'swingup', seed=0)
  _check_specs(env, obs_dim=5, act_dim=1)


def test_humanoid_default_task_is_run():
  assert environments.DEFAULT_TASKS['humanoid'] == 'run'
  env = environments.make_environment('humanoid', seed=0)
  _check_specs(env, obs_dim=67, act_dim=21)


def test_default_tasks_cover_every_domain():
  assert set(environments.DEFAULT_TASKS) == set(suite.TASKS_BY_DOMAIN)
  for domain, task in environments.DEFAULT_TASKS.items():
    assert task in suite.TASKS_BY_DOMAIN[domain], (domain, task)
    if any(d == domain for d, _ in suite.BENCHMARKING):
      assert (domain, task) in suite.BENCHMARKING, (domain, task)


def test_two_dimensional_observation_fields_are_flattened():
  env = environments.make_environment('manipulator', seed=0)  # arm_pos [8, 2]
  spec = _check_specs(env, obs_dim=44, act_dim=5)
  assert len(spec.observations.shape) == 1


def test_out_of_range_action_is_clipped():
  """5.0 must act exactly like 1.0 (and -5.0 like -1.0), with no error."""
  envs = [environments.make_environment('cartpole', 'swingup', seed=3)
          for _ in range(2)]
  for env in envs:
    env.reset()
  for sign in (1.0, -1.0):
    ts_big = envs[0].step(np.array([5.0 * sign], np.float32))
    ts_one = envs[1].step(np.array([1.0 * sign], np.float32))
    np.testing.assert_array_equal(ts_big.observation, ts_one.observation)
    assert ts_big.reward == ts_one.reward
  # And an in-range action differs from the clipped one.
  ts_half = envs[0].step(np.array([0.5], np.float32))
  ts_one = envs[1].step(np.array([1.0], np.float32))
  assert not np.array_equal(ts_half.observation, ts_one.observation)


def test_unknown_domain_lists_domains():
  with pytest.raises(environments.UnknownTaskError) as info:
    environments.make_environment('not_a_domain')
  message = str(info.value)
  assert isinstance(info.value, ValueError)
  for domain in ('cartpole', 'humanoid', 'cheetah', 'walker'):
    assert domain in message


def test_unknown_task_lists_tasks():
  with pytest.raises(ValueError) as info:
    environments.make_environment('cartpole', 'not_a_task')
  message = str(info.value)
  for task in suite.TASKS_BY_DOMAIN['cartpole']:
    assert task in message


def test_seed_reproduces_first_observation():
  obs = [environments.make_environment('cartpole', 'swingup', seed=s)
         .reset().observation for s in (7, 7, 8)]
  np.testing.assert_array_equal(obs[0], obs[1])
  assert not np.array_equal(obs[0], obs[2])
