"""Tests for wpo_agent.replay: rate limiting, the dataset, the transport.

The first two check the n-step values that reach a replay table through
tests/nstep_adder.py (nstep_writer.TransitionWriter's, by hand and against a
direct formula).
"""

import dm_env
import numpy as np
import pytest
import reverb
import tree

from wpo_agent import nstep_writer
from wpo_agent import ratio
from wpo_agent import replay
from wpo_agent import types
import nstep_adder
import streams

OBS_DIM, ACT_DIM = 2, 1
SPEC = streams.spec(OBS_DIM, ACT_DIM)


def _obs(t):
  return np.full((OBS_DIM,), t, np.float32)


def _server(*tables):
  server = reverb.Server(list(tables), port=None)
  return server, reverb.Client(f'localhost:{server.port}')


def _queue_table(name='q'):
  """A FIFO queue with the transition signature: reads items back in order."""
  return reverb.Table.queue(name, 1000,
                            signature=replay.transition_signature(SPEC))


def _run_fake_episode(adder, rewards, discounts, last_step_type):
  """s_0 .. s_T: obs s_t = [t, t], a_t = [10 t] (out of bounds), r_t, d_t."""
  adder.add_first(dm_env.restart(_obs(0)))
  T = len(rewards)
  for t in range(T):
    step_type = last_step_type if t == T - 1 else dm_env.StepType.MID
    adder.add(np.array([10.0 * t], np.float32),
              dm_env.TimeStep(step_type, np.float32(rewards[t]),
                              np.float32(discounts[t]), _obs(t + 1)))


def _read_all(client, table='q'):
  n = replay.num_items(client, table)
  items = [s.data for s in client.sample(
      table, n, emit_timesteps=False, unpack_as_table_signature=True)]
  # (start index, arrival index, action, R, D)
  return [(int(d.observation[0]), int(d.next_observation[0]),
           float(d.action[0]), float(d.reward), float(d.discount))
          for d in items]


@pytest.mark.parametrize('terminal', [True, False])
def test_adder_n_step_values_by_hand(terminal):
  """n=3, gamma=0.5, rewards 1, 2, 4, 8, 16; episode ends after 5 steps.

  Terminal: d_4 = 0 so every transition reaching s_5 has bootstrap discount 0.
  Truncated (time limit, d_4 = 1): they bootstrap with gamma^k for k steps.
  Stored discount is gamma^k * prod d (acme itself would store gamma^(k-1)).
  """
  server, client = _server(_queue_table())
  adder = nstep_adder.make_adder(client, n_step=3, discount=0.5, table='q')
  last_d = 0.0 if terminal else 1.0
  _run_fake_episode(adder, [1, 2, 4, 8, 16], [1, 1, 1, 1, last_d],
                    dm_env.StepType.LAST)
  end = (0.0, 0.0, 0.0) if terminal else (0.125, 0.25, 0.5)
  expected = [
      # s_0 is written with horizons 1, 2, 3 (acme's episode-start behaviour).
      (0, 1, 0.0, 1.0, 0.5),
      (0, 2, 0.0, 1.0 + 0.5 * 2, 0.25),
      (0, 3, 0.0, 1.0 + 0.5 * 2 + 0.25 * 4, 0.125),             # 3
      (1, 4, 10.0, 2.0 + 0.5 * 4 + 0.25 * 8, 0.125),            # 6
      (2, 5, 20.0, 4.0 + 0.5 * 8 + 0.25 * 16, end[0]),          # 12
      (3, 5, 30.0, 8.0 + 0.5 * 16, end[1]),                     # 16
      (4, 5, 40.0, 16.0, end[2]),
  ]
  assert _read_all(client) == expected
  del adder, server


def test_adder_matches_reference_with_env_discounts():
  """Random rewards and mid-episode env discounts vs a direct formula."""
  rng = np.random.default_rng(0)
  n, gamma, T = 4, 0.9, 11
  rewards = rng.uniform(-1, 1, T).astype(np.float32)
  discounts = rng.choice([1.0, 0.5], T).astype(np.float32)
  server, client = _server(_queue_table())
  adder = nstep_adder.make_adder(client, n_step=n, discount=gamma, table='q')
  _run_fake_episode(adder, rewards, discounts, dm_env.StepType.LAST)

  def reference(t, k):  # t -> t + k
    ret, disc = 0.0, 1.0
    for j in range(k):
      ret += disc * rewards[t + j]
      disc *= gamma * discounts[t + j]
    return ret, disc

  starts = [(0, k) for k in range(1, n)] + [(t, n) for t in range(T - n + 1)]
  starts += [(t, T - t) for t in range(T - n + 1, T)]
  got = _read_all(client)
  assert [(s, e) for s, e, *_ in got] == [(t, t + k) for t, k in starts]
  for (t, k), (_, _, _, ret, disc) in zip(starts, got):
    np.testing.assert_allclose((ret, disc), reference(t, k), rtol=1e-5)
  del adder, server


def _insert_transitions(client, table, num):
  """Writes `num` transitions directly (exact insert counts, fully flushed).

  Item i: obs [i, i], action [i], reward i, discount 0.5, next obs [i+1, i+1].
  """
  with client.trajectory_writer(num_keep_alive_refs=1) as writer:
    for i in range(num):
      writer.append(types.Batch(
          observation=_obs(i), action=np.full((ACT_DIM,), i, np.float32),
          reward=np.float32(i), discount=np.float32(0.5),
          next_observation=_obs(i + 1)))
      step = tree.map_structure(lambda x: x[-1], writer.history)
      writer.create_item(table, 1.0, trajectory=step)
    writer.flush()


def _num_samples_allowed(client, table, timeout_ms=300):
  """Samples until the rate limiter blocks for timeout_ms; returns the count."""
  dataset = reverb.TrajectoryDataset.from_table_signature(
      client.server_address, table, max_in_flight_samples_per_worker=1,
      num_workers_per_iterator=1, rate_limiter_timeout_ms=timeout_ms)
  return sum(1 for _ in dataset)


def _transition_table(**kwargs):
  options = dict(samples_per_insert=1.0, rate_limiter='sample_to_insert')
  options.update(kwargs)
  return replay.make_replay_table(SPEC, name='t', max_size=100, **options)


def test_rate_limiter_blocks_below_min_size_then_holds_ratio():
  spi, min_size = 2.0, 10
  buffer = ratio.default_error_buffer(samples_per_insert=spi,
                                      min_size=min_size)  # max(2, 4) = 4
  assert buffer == 4.0
  server, client = _server(_transition_table(
      min_size=min_size, samples_per_insert=spi))
  _insert_transitions(client, 't', min_size - 1)
  assert _num_samples_allowed(client, 't') == 0
  # Stage 2: error = spi * min_size; sampling allowed down to that - buffer.
  _insert_transitions(client, 't', 1)
  assert _num_samples_allowed(client, 't') == buffer
  for _ in range(2):  # each further insert releases exactly spi samples
    _insert_transitions(client, 't', 1)
    assert _num_samples_allowed(client, 't') == spi
  info = client.server_info()['t'].rate_limiter_info
  assert info.insert_stats.completed == min_size + 2
  assert info.sample_stats.completed == buffer + 2 * spi
  del server


def test_min_size_rate_limiter_has_no_ratio():
  server, client = _server(_transition_table(min_size=3,
                                             rate_limiter='min_size'))
  _insert_transitions(client, 't', 2)
  assert _num_samples_allowed(client, 't') == 0
  _insert_transitions(client, 't', 1)
  dataset = reverb.TrajectoryDataset.from_table_signature(
      client.server_address, 't', max_in_flight_samples_per_worker=1,
      max_samples=50)
  assert sum(1 for _ in dataset) == 50  # far more than any ratio would allow
  del server


def test_bad_rate_limiter_arguments():
  with pytest.raises(ValueError, match='sample_to_insert'):
    _transition_table(min_size=1, rate_limiter='nope')
  with pytest.raises(ValueError, match='samples_per_insert'):
    _transition_table(min_size=1, samples_per_insert=None)
  with pytest.raises(ValueError, match='min_size'):
    _transition_table(min_size=200)
  # spi < 1 still gets a legal (>= 1 wide each side) buffer.
  assert ratio.default_error_buffer(samples_per_insert=0.5, min_size=2) == 2.0
  _transition_table(min_size=2, samples_per_insert=0.5)


@pytest.mark.parametrize('num_sgd_steps', [1, 4])
def test_dataset_yields_batches(num_sgd_steps):
  batch_size = 8
  server, client = _server(_transition_table(min_size=1,
                                             rate_limiter='min_size'))
  _insert_transitions(client, 't', 40)
  iterator = replay.make_dataset_iterator(
      client.server_address, table='t', batch_size=batch_size,
      num_sgd_steps=num_sgd_steps, prefetch=1)
  lead = (num_sgd_steps, batch_size)  # [K, B], also for K = 1
  for _ in range(2):
    batch = next(iterator)
    assert isinstance(batch, types.Batch)
    expected_shapes = types.Batch(lead + (OBS_DIM,), lead + (ACT_DIM,), lead,
                                  lead, lead + (OBS_DIM,))
    for field, value, shape in zip(batch._fields, batch, expected_shapes):
      assert isinstance(value, np.ndarray), field
      assert value.shape == shape, (field, value.shape)
      assert value.dtype == np.float32, field
    # Fields are not mixed up: item i has obs i, action i, reward i, obs' i+1.
    np.testing.assert_array_equal(batch.observation[..., 0], batch.reward)
    np.testing.assert_array_equal(batch.action[..., 0], batch.reward)
    np.testing.assert_array_equal(batch.next_observation[..., 0],
                                  batch.reward + 1)
    np.testing.assert_array_equal(batch.discount, 0.5)
  del iterator, server


def test_transport_delivers_chunks_in_order():
  """ChunkWriter items of 8 rows through the transport iterator: chunks of
  12 transitions (not a multiple of 8) holding every transition once, each
  item's rows together and in order (the drain's two streams may swap
  whole items)."""
  table = replay.make_transport_table(streams.SPEC, name='t', max_size=100,
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
