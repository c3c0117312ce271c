"""Tests for wpo_agent.acting: VariableClient, WPOActor, VectorActor, episode
into replay."""

import subprocess
import sys

import acme
from acme.utils import loggers
import jax
import numpy as np
import pytest

from wpo_agent import acting
from wpo_agent import environments
from wpo_agent import networks
import streams
import tiny

OBS_DIM, ACT_DIM = 5, 3


class CountingSource:
  """A VariableSource that counts get_variables calls."""

  def __init__(self, params):
    self.params = params
    self.calls = 0

  def get_variables(self, names):
    self.calls += 1
    return [self.params for _ in names]


def _networks(obs_dim=OBS_DIM, act_dim=ACT_DIM, **overrides):
  return networks.make_networks(obs_dim, -np.ones(act_dim), np.ones(act_dim),
                                **tiny.network_kwargs(**overrides))


def _init(nets, seed):
  # Eager on purpose: op-by-op kernels are cached across tests, while a jitted
  # init of each new module recompiles (~1 s on 2 CPU cores).
  return nets.init(jax.random.PRNGKey(seed))


def _perturbed_policy_params(nets, seed, scale=0.3):
  """Init params plus noise, so loc and sigma depend on the observation."""
  params, _ = _init(nets, seed)
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
  leaves = [x + scale * jax.random.normal(k, x.shape)
            for x, k in zip(leaves, keys)]
  return jax.tree_util.tree_unflatten(treedef, leaves)


def _actor(params, seed=0, deterministic=False, **kwargs):
  nets = _networks()
  client = acting.VariableClient(CountingSource(params), update_period=10)
  return acting.WPOActor(nets.policy, client, seed=seed,
                         deterministic=deterministic, **kwargs)


OBS = np.linspace(-1, 1, OBS_DIM).astype(np.float32)


def test_deterministic_actor_returns_mode():
  nets = _networks()
  params = _perturbed_policy_params(nets, 0)
  actor = _actor(params, deterministic=True)
  expected = np.asarray(nets.policy.apply(params, OBS[None]).mode()[0])
  actions = [actor.select_action(OBS) for _ in range(3)]
  for a in actions:
    assert a.shape == (ACT_DIM,) and a.dtype == np.float32
    np.testing.assert_array_equal(a, actions[0])
  np.testing.assert_allclose(actions[0], expected, rtol=1e-6, atol=1e-7)
  assert np.abs(expected).max() > 1e-2  # a non-trivial mode


def test_stochastic_actions_follow_the_policy():
  nets = _networks()
  params = _perturbed_policy_params(nets, 1)
  dist = nets.policy.apply(params, OBS[None])
  loc, sigma = np.asarray(dist.loc[0]), np.asarray(dist.scale[0])
  actor = _actor(params, seed=3)
  actions = np.stack([actor.select_action(OBS) for _ in range(3000)])
  assert actions.dtype == np.float32
  assert len(np.unique(actions, axis=0)) == len(actions)  # fresh key per step
  np.testing.assert_allclose(actions.std(0), sigma, rtol=0.1)
  np.testing.assert_allclose(actions.mean(0), loc,
                             atol=4 * sigma.max() / np.sqrt(len(actions)))
  # One compiled executable, no retracing across steps.
  assert actor._step._cache_size() == 1  # pylint: disable=protected-access


def test_seeds_reproduce_action_sequences():
  params = _perturbed_policy_params(_networks(), 2)
  runs = [_actor(params, seed=s) for s in (5, 5, 6)]
  seqs = [np.stack([a.select_action(OBS) for _ in range(5)]) for a in runs]
  np.testing.assert_array_equal(seqs[0], seqs[1])
  assert not np.array_equal(seqs[0], seqs[2])


def test_actions_are_not_clipped():
  nets = _networks(init_scale=5.0)
  params, _ = _init(nets, 0)
  client = acting.VariableClient(CountingSource(params))
  actor = acting.WPOActor(nets.policy, client, seed=0)
  actions = np.stack([actor.select_action(OBS) for _ in range(50)])
  assert np.abs(actions).max() > 1.5


def test_variable_client_refetches_every_update_period():
  source = CountingSource('v0')
  client = acting.VariableClient(source, key='policy', update_period=3)
  assert source.calls == 0  # lazy: nothing fetched before first use
  assert client.params == 'v0' and source.calls == 1
  fetches = []
  for i in range(1, 10):
    source.params = f'v{i}'
    client.update()
    fetches.append(source.calls)
  # Calls 3, 6, 9 refetch.
  assert fetches == [1, 1, 2, 2, 2, 3, 3, 3, 4]
  assert client.params == 'v9'
  source.params = 'now'
  client.update_and_wait()
  assert client.params == 'now' and source.calls == 5
  with pytest.raises(ValueError):
    acting.VariableClient(source, update_period=0)


def test_actor_picks_up_new_parameters_without_retracing():
  nets = _networks()
  old, new = (_perturbed_policy_params(nets, s) for s in (0, 1))
  source = CountingSource(old)
  client = acting.VariableClient(source, update_period=2)
  actor = acting.WPOActor(nets.policy, client, seed=0, deterministic=True)
  a_old = actor.select_action(OBS)
  source.params = new
  actor.update()
  np.testing.assert_array_equal(actor.select_action(OBS), a_old)  # 1 of 2
  actor.update()
  a_new = actor.select_action(OBS)
  assert not np.allclose(a_new, a_old)
  assert actor._step._cache_size() == 1  # pylint: disable=protected-access


def test_acting_module_does_not_import_reverb_or_tensorflow():
  code = ('import sys, wpo_agent.acting; '
          'bad = [m for m in ("reverb", "tensorflow") if m in sys.modules]; '
          'assert not bad, bad')
  subprocess.run([sys.executable, '-c', code], check=True)


def test_episode_into_replay():
  """A cartpole episode through acme's EnvironmentLoop lands in reverb."""
  import reverb  # pylint: disable=g-import-not-at-top
  from wpo_agent import replay  # pylint: disable=g-import-not-at-top
  import nstep_adder  # pylint: disable=g-import-not-at-top
  env = environments.make_environment('cartpole', 'swingup', seed=0)
  spec = environments.environment_spec(env)
  nets = networks.make_networks_from_spec(
      spec, **tiny.network_kwargs(init_scale=2.0))
  params, _ = _init(nets, 0)
  table = replay.make_replay_table(
      spec, name=replay.DEFAULT_TABLE, max_size=5000, min_size=1,
      samples_per_insert=1.0, rate_limiter='min_size')
  server = reverb.Server([table], port=None)
  client = reverb.Client(f'localhost:{server.port}')
  n_step = 5
  adder = nstep_adder.make_adder(client, table=replay.DEFAULT_TABLE,
                                 n_step=n_step, discount=0.99)
  source = CountingSource(params)
  actor = nstep_adder.AdderActor(
      acting.WPOActor(nets.policy,
                      acting.VariableClient(source, update_period=100),
                      seed=0),
      adder)
  loop = acme.EnvironmentLoop(env, actor, logger=loggers.NoOpLogger())
  result = loop.run_episode()
  steps = int(result['episode_length'])
  assert steps == 1000  # cartpole: time limit, no termination
  # T transitions plus n - 1 shorter ones at the episode end.
  assert replay.num_items(client, replay.DEFAULT_TABLE) == steps + n_step - 1
  assert source.calls == 1 + steps // 100
  items = [s.data for s in client.sample(replay.DEFAULT_TABLE, 200,
                                         emit_timesteps=False,
                                         unpack_as_table_signature=True)]
  assert items[0].observation.shape == spec.observations.shape
  assert items[0].observation.dtype == np.float32
  # sigma ~2 at init: replay holds actions outside [-1, 1] (stored unclipped).
  assert max(abs(float(d.action[0])) for d in items) > 1.0
  # Close the writer before the server, or stopping the server waits ~5 s.
  del loop, actor, adder
  server.stop()


def test_vector_actor_keys_and_actions_match_single_actors():
  policy, source = streams.policy()
  seeds = [3, 11, 12, 40]
  vector = acting.VectorActor(policy, acting.VariableClient(source),
                              seeds=seeds)
  singles = [acting.WPOActor(policy, acting.VariableClient(source), seed=s)
             for s in seeds]
  one = acting.VectorActor(policy, acting.VariableClient(source),
                           seeds=seeds[:1])
  rng = np.random.default_rng(0)
  for _ in range(20):
    obs = rng.standard_normal((4, 5)).astype(np.float32)
    got = vector.select_actions(obs)
    want = np.stack([a.select_action(o) for a, o in zip(singles, obs)])
    # Same keys, so the same noise; XLA's matmul rounds differently for 4
    # rows than for 1, hence float tolerance for E = 4.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(one.select_actions(obs[:1]), want[:1])
  np.testing.assert_array_equal(np.asarray(vector._keys),  # pylint: disable=protected-access
                                np.stack([np.asarray(a._key)  # pylint: disable=protected-access
                                          for a in singles]))


def test_variable_client_counts_environment_steps():
  source = acting.StaticVariableSource(policy=0)
  client = acting.VariableClient(source, update_period=10)
  assert client.params == 0
  source.set('policy', 1)
  client.update(steps=4)
  client.update(steps=4)
  assert client.params == 0  # 8 steps
  client.update(steps=4)
  assert client.params == 1  # 12 >= 10: refetched
