"""Several environments per actor: streams, writers, policy keys, the loop."""

import gc

import dm_env
import jax
import numpy as np
import pytest
import reverb

from wpo_agent import acting
from wpo_agent import config as config_lib
from wpo_agent import device_replay
from wpo_agent import environments
from wpo_agent import loops
from wpo_agent import networks as networks_lib
from wpo_agent import nstep
from wpo_agent import nstep_writer
from wpo_agent import replay
from wpo_agent import runs
from wpo_agent import seeds as seeds_lib
from wpo_agent import types
from reference import acme_adder
from test_nstep_writer import SPEC, _feed, _items, _random_episode, _server

NUM_STREAMS = 4


def _stream_episodes(rng, rounds):
  """Per stream, the episodes that fill `rounds` rounds: lengths 1..30, ends
  terminal or truncated at different rounds; the last is left 'open'."""
  out = []
  for _ in range(NUM_STREAMS):
    episodes, steps = [], 0
    while steps < rounds:
      length = int(rng.integers(1, 31))
      end = 'terminal' if rng.random() < 0.5 else 'truncated'
      if steps + length >= rounds:  # cut at the last round, unfinished
        length, end = rounds - steps, 'open'
      episodes.append(_random_episode(rng, length, end))
      steps += length
    out.append(episodes)
  return out


def _drive(writer, per_stream, rounds):
  """Steps every stream once per round through `writer`'s stream API, the
  way loops.ActorLoop does; returns the transitions in arrival order."""
  queues = [[(first, list(steps)) for first, steps in eps]
            for eps in per_stream]
  current = [None] * NUM_STREAMS
  sent = []
  for _ in range(rounds):
    for e in range(NUM_STREAMS):
      if not current[e]:
        first, steps = queues[e].pop(0)
        writer.start(e, first.observation)
        current[e] = steps
    step = [current[e].pop(0) for e in range(NUM_STREAMS)]
    arrays = dict(
        actions=np.stack([a for a, _ in step]),
        rewards=np.array([t.reward for _, t in step], np.float32),
        discounts=np.array([t.discount for _, t in step], np.float32),
        next_observations=np.stack([t.observation for _, t in step]),
        last=np.array([t.last() for _, t in step]))
    sent.append(writer.add(**arrays))
  return sent


class _Recorder:
  """The writers' stream API over a bare NStepStreams: `add` returns the
  round's transitions (the reference sequence)."""

  def __init__(self, n_step, discount, num_streams=NUM_STREAMS):
    self.streams = nstep.NStepStreams(
        num_streams=num_streams, n_step=n_step, discount=discount,
        dtypes=types.Batch(*([np.float32] * 5)))

  def start(self, stream, observation):
    self.streams.start(stream, observation)

  def add(self, **arrays):
    return self.streams.add(**arrays)


@pytest.mark.parametrize('n_step', [1, 5])
def test_four_streams_write_each_streams_acme_items(n_step):
  """Four streams stepped together, episodes ending mid-round at different
  rounds: exactly the items acme's adder writes for each stream alone."""
  rng = np.random.default_rng(10 + n_step)
  per_stream = _stream_episodes(rng, rounds=70)
  server, client = _server('acme', 'vector')
  oracles = [_feed(lambda: acme_adder.make_adder(
      client, table='acme', n_step=n_step, discount=0.97), eps)
             for eps in per_stream]
  writer = nstep_writer.TransitionWriter(
      client, num_streams=NUM_STREAMS, n_step=n_step, discount=0.97,
      table='vector')
  _drive(writer, per_stream, rounds=70)
  writer.close()
  del oracles
  gc.collect()
  expected = _items(client, 'acme')
  assert len(expected) > 70 * NUM_STREAMS - 10
  assert _items(client, 'vector') == expected  # bitwise
  server.stop()


def test_chunk_writer_items_hold_the_transitions_in_order():
  rows = 8
  rng = np.random.default_rng(3)
  per_stream = _stream_episodes(rng, rounds=40)
  table = replay.make_transport_table(SPEC, name='q', max_size=1000,
                                      rows_per_item=rows)
  server = reverb.Server([table], port=None)
  client = reverb.Client(f'localhost:{server.port}')
  writer = nstep_writer.ChunkWriter(client, num_streams=NUM_STREAMS, n_step=3,
                                    discount=0.9, table='q',
                                    rows_per_item=rows)
  _drive(writer, per_stream, rounds=40)
  reference = _drive(_Recorder(3, 0.9), per_stream, rounds=40)
  expected = types.Batch(*(np.concatenate(xs) for xs in zip(
      *(t.batch for t in reference))))
  writer.flush()
  total = len(expected.reward)
  full = total // rows
  assert writer.pending_rows == total - full * rows
  assert replay.num_items(client, 'q') == full
  got = [s.data for s in client.sample('q', full, emit_timesteps=False,
                                       unpack_as_table_signature=True)]
  for field in types.Batch._fields:
    np.testing.assert_array_equal(
        np.concatenate([getattr(g, field) for g in got]),
        getattr(expected, field)[:full * rows])
  writer.close()
  server.stop()


def test_chunk_writer_refuses_a_table_of_single_transitions():
  server, client = _server('single')
  writer = nstep_writer.ChunkWriter(client, num_streams=1, n_step=2,
                                    discount=0.9, table='single',
                                    rows_per_item=8)
  with pytest.raises(ValueError, match='with 8 rows'):
    writer.start(0, np.zeros(3, np.float32))
  server.stop()


def test_transport_delivers_chunks_in_order():
  """ChunkWriter items of 8 rows through the transport iterator: chunks of
  12 transitions (not a multiple of 8) holding every transition once, each
  item's rows together and in order (the drain's two streams may swap
  whole items)."""
  table = replay.make_transport_table(SPEC, name='t', max_size=100,
                                      rows_per_item=8)
  server = reverb.Server([table], port=None)
  client = reverb.Client(f'localhost:{server.port}')
  writer = nstep_writer.ChunkWriter(client, num_streams=2, n_step=1,
                                    discount=1.0, table='t', rows_per_item=8)
  writer.start(0, np.zeros(3, np.float32))
  writer.start(1, np.zeros(3, np.float32))
  for i in range(48):  # 96 transitions: 12 items, 8 chunks of 12
    writer.add(actions=np.zeros((2, 2), np.float32),
               rewards=np.array([2 * i, 2 * i + 1], np.float32),
               discounts=np.ones(2, np.float32),
               next_observations=np.zeros((2, 3), np.float32),
               last=np.zeros(2, bool))
  writer.flush()
  chunks = replay.make_transport_iterator(client, table='t', chunk_size=12,
                                          rows_per_item=8)
  got = np.concatenate([next(chunks).reward for _ in range(8)])
  np.testing.assert_array_equal(np.sort(got), np.arange(96))
  for item in got.reshape(12, 8):
    assert item[0] % 8 == 0
    np.testing.assert_array_equal(item, item[0] + np.arange(8))
  writer.close()
  server.stop()


def test_rechunk():
  batches = [types.Batch(*(np.arange(m * 5 * 4).reshape(m, 5, 4) + 1000 * i
                           if f in ('observation', 'action',
                                    'next_observation')
                           else np.arange(m * 5).reshape(m, 5) + 1000 * i
                           for f in types.Batch._fields))
             for i, m in enumerate((1, 3, 2))]
  out = list(device_replay.rechunk(iter(batches), 7))
  assert len(out) == 4  # 30 rows: 4 chunks of 7, 2 held back
  rewards = np.concatenate([b.reward.reshape(-1) for b in batches])
  np.testing.assert_array_equal(np.concatenate([c.reward for c in out]),
                                rewards[:28])
  assert all(c.observation.shape == (7, 4) for c in out)
  np.testing.assert_array_equal(
      out[-1].observation,
      np.concatenate([b.observation.reshape(-1, 4) for b in batches])[21:28])


def _policy(obs_dim=5, act_dim=3, zero_kernels=False):
  spec = environments.environment_spec(
      environments.make_environment('cartpole', 'swingup', seed=0))
  if obs_dim is None:
    obs_dim, act_dim = spec.observations.shape[0], spec.actions.shape[0]
  nets = networks_lib.make_networks(
      obs_dim, [-1.0] * act_dim, [1.0] * act_dim,
      **config_lib.make_config('small').network_kwargs())
  params, _ = nets.init(jax.random.PRNGKey(1))
  if zero_kernels:  # every matmul is exactly 0: no rounding depends on E
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x * 0 if 'kernel' in jax.tree_util.keystr(path) else x,
        params)
  return nets.policy, acting.StaticVariableSource(policy=params)


def test_vector_actor_keys_and_actions_match_single_actors():
  policy, source = _policy()
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


def _queue(name='q'):
  table = reverb.Table.queue(name, 100_000,
                             signature=replay.transition_signature(
                                 environments.environment_spec(
                                     environments.make_environment(
                                         'cartpole', 'swingup', seed=0))))
  server = reverb.Server([table], port=None)
  return server, reverb.Client(f'localhost:{server.port}')


def _loop_items(seeds, steps, policy, source):
  """Items of an ActorLoop over cartpole-swingup with these (env, policy)
  seeds after `steps` rounds, as sorted raw bytes."""
  server, client = _queue()
  writer = nstep_writer.TransitionWriter(client, num_streams=len(seeds),
                                         n_step=5, discount=0.99, table='q')
  loop = loops.ActorLoop(
      [environments.make_environment('cartpole', 'swingup', seed=env)
       for env, _ in seeds],
      acting.VectorActor(policy, acting.VariableClient(source),
                         seeds=[p for _, p in seeds]), writer)
  for _ in range(steps):
    loop.step()
  writer.close()
  n = replay.num_items(client, 'q')
  items = sorted(tuple(np.asarray(x).tobytes() for x in s.data)
                 for s in client.sample('q', n, emit_timesteps=False,
                                        unpack_as_table_signature=True))
  server.stop()
  return items, loop


def test_four_environments_equal_four_single_environment_actors():
  """End to end through reverb: the E = 4 loop writes exactly the items of
  four one-environment loops with the same seeds (a policy without matmul
  rounding, so that no action differs by float rounding)."""
  policy, source = _policy(None, None, zero_kernels=True)
  run = runs.RunOptions(domain='cartpole', envs_per_actor=NUM_STREAMS)
  seeds = [seeds_lib.actor_seeds(run, actor_index=i, start_actor_steps=0)
           for i in range(NUM_STREAMS)]
  rounds = 1020  # one 1000-step episode each and the start of the next
  together, loop = _loop_items(seeds, rounds, policy, source)
  alone = sorted(sum((_loop_items([s], rounds, policy, source)[0]
                      for s in seeds), []))
  assert len(together) == NUM_STREAMS * (1000 + 4 + 20)
  assert together == alone
  assert loop.steps == NUM_STREAMS * rounds and loop.episodes == NUM_STREAMS


class _CountdownEnv(dm_env.Environment):
  """Episodes of given lengths; reward 1 + step index; observation [t]."""

  def __init__(self, lengths):
    self._lengths = list(lengths)
    self._t = self._length = 0

  def reset(self):
    self._length, self._t = self._lengths.pop(0), 0
    return dm_env.restart(np.zeros(1, np.float32))

  def step(self, action):
    self._t += 1
    obs, reward = np.full(1, self._t, np.float32), np.float32(self._t)
    if self._t == self._length:
      return dm_env.termination(reward, obs)
    return dm_env.transition(reward, obs)

  def observation_spec(self):
    return SPEC.observations.replace(shape=(1,))

  def action_spec(self):
    return SPEC.actions


class _ZeroActor:
  def select_actions(self, observations):
    return np.zeros((len(observations), 2), np.float32)

  def update(self, steps):
    pass


def test_episodes_ending_mid_round_keep_counts_returns_and_tails():
  lengths = [[3, 7, 50], [5, 50], [1, 1, 1, 50]]  # ends at different rounds
  envs = [_CountdownEnv(ls) for ls in lengths]
  recorder = _Recorder(n_step=4, discount=1.0, num_streams=3)
  sent = []
  recorder.add = lambda **arrays: sent.append(recorder.streams.add(**arrays))
  loop = loops.ActorLoop(envs, _ZeroActor(), recorder)
  for _ in range(10):
    loop.step()
  assert loop.steps == 30
  assert loop.episodes == 2 + 1 + 3
  # Returns 1 + 2 + ... + T per finished episode, in the order they ended.
  assert list(loop.returns) == [1.0, 1.0, 6.0, 1.0, 15.0, 28.0]
  rows = [(int(s), float(o[0]), float(n[0]), float(r), float(d))
          for t in sent for s, o, n, r, d in zip(
              t.stream, t.batch.observation, t.batch.next_observation,
              t.batch.reward, t.batch.discount)]
  # Stream 1's episode of 5 (terminal): 5 + min(5, 4) - 1 = 8 transitions;
  # its tails s_2->s_5, s_3->s_5, s_4->s_5 come in the round it ended.
  first_of_1 = [r for r in rows if r[0] == 1][:8]
  assert [(o, n) for _, o, n, _, _ in first_of_1] == [
      (0, 1), (0, 2), (0, 3), (0, 4), (1, 5), (2, 5), (3, 5), (4, 5)]
  assert [r for _, _, _, r, _ in first_of_1] == [
      1, 3, 6, 10, 2 + 3 + 4 + 5, 3 + 4 + 5, 4 + 5, 5]
  assert all(d == 0.0 for _, _, n, _, d in first_of_1 if n == 5)
  # Stream 2: three one-step episodes, each one transition s_0 -> s_1.
  assert [(o, n, r) for s, o, n, r, _ in rows if s == 2][:3] == [
      (0, 1, 1), (0, 1, 1), (0, 1, 1)]


@pytest.mark.parametrize('value', [0, -2, 1.5, '4', True, 257])
def test_envs_per_actor_bad_values(value):
  with pytest.raises(runs.RunOptionsError,
                     match=r'--envs_per_actor=.*integer from 1 to 256'):
    runs.RunOptions(domain='cartpole', envs_per_actor=value)


def test_builder_gives_environment_e_of_actor_a_the_seeds_of_actor_a_e():
  """Actor process 1 with E = 4 steps the environments (and draws from the
  keys) of one-environment actors 4..7."""
  from wpo_agent import builder as builder_lib  # pylint: disable=g-import-not-at-top
  run = runs.RunOptions(domain='cartpole', envs_per_actor=4, seed=7)
  config = config_lib.make_config('small')
  loop = builder_lib.Builder(config, run).actor_loop(
      acting.StaticVariableSource(), actor_index=1, start_actor_steps=500,
      writer=None)
  seeds = [seeds_lib.actor_seeds(run, actor_index=i, start_actor_steps=500)
           for i in range(4, 8)]
  first = [environments.make_environment('cartpole', 'swingup', seed=env)
           .reset().observation for env, _ in seeds]
  np.testing.assert_array_equal(
      [env.reset().observation
       for env in loop._environments],  # pylint: disable=protected-access
      np.stack(first))
  np.testing.assert_array_equal(
      np.asarray(loop._actor._keys),  # pylint: disable=protected-access
      np.stack([np.asarray(jax.random.PRNGKey(p)) for _, p in seeds]))
