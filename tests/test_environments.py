"""Tests for wpo_agent.environments: specs, clipping, errors, seeding."""

import dm_env
from dm_control import suite
import numpy as np
import pytest

from wpo_agent import environments
from reference import acme_wrappers


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
  env = environments.make_environment('humanoid', None, seed=0)
  _check_specs(env, obs_dim=67, act_dim=21)


def test_default_tasks_cover_every_domain():
  assert set(environments.DEFAULT_TASKS) == set(suite.TASKS_BY_DOMAIN)
  for domain, task in environments.DEFAULT_TASKS.items():
    assert task in suite.TASKS_BY_DOMAIN[domain], (domain, task)
    if any(d == domain for d, _ in suite.BENCHMARKING):
      assert (domain, task) in suite.BENCHMARKING, (domain, task)


def test_two_dimensional_observation_fields_are_flattened():
  env = environments.make_environment('manipulator', None,
                                     seed=0)  # arm_pos [8, 2]
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
    environments.make_environment('not_a_domain', None, seed=0)
  message = str(info.value)
  assert isinstance(info.value, ValueError)
  for domain in ('cartpole', 'humanoid', 'cheetah', 'walker'):
    assert domain in message


def test_unknown_task_lists_tasks():
  with pytest.raises(ValueError) as info:
    environments.make_environment('cartpole', 'not_a_task', seed=0)
  message = str(info.value)
  for task in suite.TASKS_BY_DOMAIN['cartpole']:
    assert task in message


def test_seed_reproduces_first_observation():
  obs = [environments.make_environment('cartpole', 'swingup', seed=s)
         .reset().observation for s in (7, 7, 8)]
  np.testing.assert_array_equal(obs[0], obs[1])
  assert not np.array_equal(obs[0], obs[2])


def _assert_same_spec(a, b):
  assert type(a) is type(b), (a, b)
  assert a == b, (a, b)  # shape, dtype, name (+ bounds for BoundedArray)
  assert repr(a) == repr(b)
  if isinstance(a, dm_env.specs.BoundedArray):
    for x, y in ((a.minimum, b.minimum), (a.maximum, b.maximum)):
      assert np.asarray(x).dtype == np.asarray(y).dtype
      np.testing.assert_array_equal(x, y)


def _assert_same_value(x, y):
  if x is None or y is None:
    assert x is None and y is None, (x, y)
    return
  assert type(x) is type(y), (type(x), type(y))
  x, y = np.asarray(x), np.asarray(y)
  assert x.dtype == y.dtype and x.shape == y.shape, (x.dtype, y.dtype)
  assert np.array_equal(x, y), (x, y)


@pytest.mark.parametrize('domain,task,steps', [
    ('cartpole', 'swingup', 1000),  # a whole episode, up to LAST
    ('cheetah', 'run', 300),
    ('humanoid', 'run', 200),  # scalar field head_height
    ('manipulator', 'bring_ball', 60),  # 2-D field arm_pos [8, 2]
    ('fish', 'swim', 60),  # scalar field upright
    ('quadruped', 'run', 40),  # 0-d ndarray field torso_upright
])
def test_fused_wrapper_matches_acme_stack_exactly(domain, task, steps):
  fused = environments.make_environment(domain, task, seed=11)
  acme_env = acme_wrappers.make_acme_environment(domain, task, seed=11)
  assert isinstance(fused, environments.ControlSuiteWrapper)
  assert not isinstance(acme_env, environments.ControlSuiteWrapper)
  for name in ('observation_spec', 'action_spec', 'reward_spec',
               'discount_spec'):
    _assert_same_spec(getattr(fused, name)(), getattr(acme_env, name)())
  assert environments.environment_spec(fused) == (
      environments.environment_spec(acme_env))
  rng = np.random.default_rng(5)
  act_dim = fused.action_spec().shape[0]
  saw_last = False
  for episode in range(2):
    pair = [fused.reset(), acme_env.reset()]
    for t in range(steps + 1):
      a, b = pair
      assert a.step_type == b.step_type
      _assert_same_value(a.reward, b.reward)
      _assert_same_value(a.discount, b.discount)
      _assert_same_value(a.observation, b.observation)
      assert a.observation.dtype == np.float32
      if a.last() or t == steps:
        saw_last |= a.last()
        break
      # Out-of-range actions (clipped), in float32 (our actors) and float64.
      dtype = np.float32 if (t + episode) % 3 else np.float64
      action = rng.uniform(-3, 3, act_dim).astype(dtype)
      copy = action.copy()
      pair = [fused.step(action), acme_env.step(action.copy())]
      np.testing.assert_array_equal(action, copy)  # not mutated
      np.testing.assert_array_equal(  # same control reached the physics
          fused.physics.data.ctrl, acme_env.physics.data.ctrl)
  assert saw_last == (steps >= 1000)


class _RecordingEnv(dm_env.Environment):
  """A suite-like environment that records the action it receives."""

  def __init__(self, minimum, maximum):
    self._spec = dm_env.specs.BoundedArray(
        (len(minimum),), np.float64, minimum, maximum, name='action')
    self.received = None

  def reset(self):
    return dm_env.restart({'b': np.zeros(2), 'a': np.float64(1.0)})

  def step(self, action):
    self.received = np.array(action, copy=True)
    return dm_env.transition(0.5, {'b': np.ones(2), 'a': np.float64(2.0)})

  def observation_spec(self):
    return {'b': dm_env.specs.Array((2,), np.float64, 'b'),
            'a': dm_env.specs.Array((), np.float64, 'a')}

  def action_spec(self):
    return self._spec


def test_fused_action_mapping_is_bitwise_acme_on_odd_bounds():
  """Many actions (incl. +-1, 0, -0, tiny, huge, NaN) on asymmetric bounds."""
  from acme.wrappers import canonical_spec
  minimum = np.array([-0.3, 0.0, -2.5, -1e10, -0.8, 1.0 / 3])
  maximum = np.array([0.7, 3.1, 1e-3, 1e10, 1.1, 2.0 / 3])
  raw = _RecordingEnv(minimum, maximum)
  fused = environments.ControlSuiteWrapper(raw)
  fused.reset()
  rng = np.random.default_rng(0)
  special = np.array([-1, 1, 0, -0.0, 1e-30, -1e-30, 1 - 1e-7, -1 + 1e-7,
                      1e30, -1e30, np.nan, 0.5], np.float64)
  batches = [rng.uniform(-3, 3, (4000, 6)), rng.uniform(-1, 1, (4000, 6)),
             rng.choice(special, (500, 6))]
  for dtype in (np.float32, np.float64):
    for batch in batches:
      for action in batch.astype(dtype):
        want = canonical_spec._scale_nested_action(action, raw.action_spec(),
                                                   clip=True)
        fused.step(action)
        got = raw.received
        assert got.dtype == want.dtype == dtype
        assert np.array_equal(got, want, equal_nan=True), (action, got, want)
  # The toy observation is concatenated in sorted key order: 'a' then 'b'.
  np.testing.assert_array_equal(fused.step(np.zeros(6)).observation,
                                np.array([2.0, 1.0, 1.0], np.float32))


def test_episode_length_of_suite_tasks():
  assert environments.episode_length(
      environments.make_environment('cartpole', 'swingup', seed=0)) == 1000
  assert environments.episode_length(  # no time limit
      environments.make_environment('lqr', 'lqr_2_1', seed=0)) is None


def test_staggered_first_episodes_spread_over_one_episode():
  assert [environments.staggered_first_episodes(1000, index=i, count=8)
          for i in range(8)] == [0, 125, 250, 375, 500, 625, 750, 875]
  assert environments.staggered_first_episodes(None, index=3, count=8) == 0
