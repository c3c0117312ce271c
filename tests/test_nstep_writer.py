"""Tests for wpo_agent.nstep_writer: same items as acme's adder (the oracle).

TransitionWriter is fed here through acme's Adder API (tests/nstep_adder.py),
so that it and acme's adder get exactly the same calls; and through its own
stream API, several streams stepped together as loops.ActorLoop steps them.
Then ChunkWriter's items of several rows, and a write held back by a full
table that gives way only to its stop predicate.
"""

import gc
import threading

import dm_env
import numpy as np
import pytest
import reverb

from wpo_agent import nstep_writer
from wpo_agent import replay
from wpo_agent import types
import nstep_adder
from reference import acme_adder
import streams

TABLE = 't'


@pytest.mark.parametrize('n_step', [1, 5])
def test_same_items_as_acme_adder(n_step):
  """Random episodes (terminated, truncated, abandoned, shorter than n)."""
  rng = np.random.default_rng(n_step)
  episodes = [streams.random_episode(rng, 23, 'terminal'),
              streams.random_episode(rng, 17, 'truncated'),
              streams.random_episode(rng, 3, 'terminal'),  # shorter than n = 5
              streams.random_episode(rng, 9, 'open'),
              streams.random_episode(rng, 1, 'truncated'),
              streams.random_episode(rng, 12, 'terminal')]
  server, client = streams.server('acme', 'fast')
  oracle = streams.feed(lambda: acme_adder.make_adder(
      client, table='acme', n_step=n_step, discount=0.97), episodes)
  fast = streams.feed(lambda: nstep_adder.make_adder(
      client, table='fast', n_step=n_step, discount=0.97), episodes)
  assert isinstance(oracle, acme_adder.BootstrapNStepTransitionAdder)
  assert isinstance(fast, nstep_adder.NStepTransitionWriter)
  fast.close()
  del oracle
  gc.collect()
  expected = streams.items(client, 'acme')
  # Items per finished episode of length T: T + min(T, n) - 1; an abandoned
  # one keeps the T written before the reset.
  assert len(expected) == sum(
      len(s) + (min(len(s), n_step) - 1 if s[-1][1].last() else 0)
      for _, s in episodes)
  assert streams.items(client, 'fast') == expected  # bitwise-equal R and D
  server.stop()


def test_values_and_order_by_hand():
  """n=3, g=0.5, rewards 1, 2, 4, 8, 16; terminated after 5 steps."""
  server, client = streams.queue_server()
  writer = nstep_adder.NStepTransitionWriter(client, 3, 0.5, 'q',
                                             chunk_length=2,
                                             max_in_flight_items=2)
  obs = lambda t: np.full((streams.OBS_DIM,), t, np.float32)  # noqa: E731
  writer.add_first(dm_env.restart(obs(0)))
  rewards, discounts = [1, 2, 4, 8, 16], [1, 1, 0.5, 1, 0]
  for t in range(5):
    step_type = dm_env.StepType.LAST if t == 4 else dm_env.StepType.MID
    writer.add(np.full((streams.ACT_DIM,), 10 * t, np.float32),
               dm_env.TimeStep(step_type, np.float32(rewards[t]),
                               np.float32(discounts[t]), obs(t + 1)))
  # Flushed at the episode end: all items are there without close().
  assert replay.num_items(client, 'q') == 7
  got = [(int(d.observation[0]), int(d.next_observation[0]),
          float(d.action[0]), float(d.reward), float(d.discount))
         for d in (s.data for s in client.sample(
             'q', 7, emit_timesteps=False, unpack_as_table_signature=True))]
  assert got == [
      (0, 1, 0.0, 1.0, 0.5),
      (0, 2, 0.0, 1.0 + 0.5 * 2, 0.25),
      (0, 3, 0.0, 1.0 + 0.5 * 2 + 0.25 * 4, 0.125 * 0.5),  # d_2 = 0.5
      (1, 4, 10.0, 2.0 + 0.5 * 4 + 0.25 * 0.5 * 8, 0.125 * 0.5),
      (2, 5, 20.0, 4.0 + 0.5 * 0.5 * 8 + 0.25 * 0.5 * 16, 0.0),  # terminal
      (3, 5, 30.0, 8.0 + 0.5 * 16, 0.0),
      (4, 5, 40.0, 16.0, 0.0),
  ]
  writer.close()
  server.stop()


def test_api_errors():
  server, client = streams.server(TABLE)
  writer = nstep_adder.NStepTransitionWriter(client, 2, 0.9, TABLE)
  ts = dm_env.transition(np.float32(1),
                         np.zeros(streams.OBS_DIM, np.float32))
  with pytest.raises(ValueError, match='add_first'):
    writer.add(np.zeros(streams.ACT_DIM, np.float32), ts)
  with pytest.raises(ValueError, match='first'):
    writer.add_first(ts)
  writer.add_first(dm_env.restart(np.zeros(streams.OBS_DIM, np.float32)))
  with pytest.raises(NotImplementedError):
    writer.add(np.zeros(streams.ACT_DIM, np.float32), ts, extras={'x': 1})
  with pytest.raises(ValueError):
    nstep_adder.NStepTransitionWriter(client, 0, 0.9, TABLE)
  writer.close()
  server.stop()


def _blocked_writes(writer, results):
  """Writes single transitions into a full queue until one blocks for good."""
  try:
    writer.start(0, np.zeros((streams.OBS_DIM,), np.float32))
    for t in range(20):
      writer.add(actions=np.zeros((1, streams.ACT_DIM), np.float32),
                 rewards=np.ones((1,), np.float32),
                 discounts=np.ones((1,), np.float32),
                 next_observations=np.full((1, streams.OBS_DIM), t,
                                           np.float32),
                 last=np.zeros((1,), bool))
    results.append('all written')
  except Exception as e:  # pylint: disable=broad-except
    results.append(e)


@pytest.mark.parametrize('with_stop', [True, False])
def test_a_blocked_write_gives_way_only_to_its_stop_predicate(with_stop):
  """A queue of 4 takes 4 items, then holds the writer (as a rate limiter
  does once the learner stops sampling) until an item is taken out."""
  table = reverb.Table.queue(
      'q', 4, signature=replay.transition_signature(streams.SPEC))
  server = reverb.Server([table], port=None)
  client = reverb.Client(f'localhost:{server.port}')
  stop = threading.Event()
  writer = nstep_writer.TransitionWriter(
      client, num_streams=1, n_step=1, discount=0.9, table='q',
      chunk_length=1, max_in_flight_items=1, flush_period=1,
      should_stop=stop.is_set if with_stop else None)
  results = []
  thread = threading.Thread(target=_blocked_writes, args=(writer, results),
                            daemon=True)
  thread.start()
  thread.join(timeout=1.0)
  assert thread.is_alive() and replay.num_items(client, 'q') == 4
  stop.set()
  thread.join(timeout=2.0)  # 8 of the writer's 250 ms checks
  if with_stop:
    assert not thread.is_alive()
    assert isinstance(results[0], nstep_writer.WriterStopped), results
    assert replay.num_items(client, 'q') == 4
    writer.close()  # a stopped writer closes without waiting for the server
  else:  # blocked until the queue has room again, then writes on
    assert thread.is_alive()
    while thread.is_alive():
      list(client.sample('q', 1, emit_timesteps=False,
                         unpack_as_table_signature=True))  # room for one
      thread.join(timeout=0.01)
    assert results == ['all written']
    list(client.sample('q', 4, emit_timesteps=False,  # room for the last one
                       unpack_as_table_signature=True))
    writer.close()
  server.stop()


@pytest.mark.parametrize('n_step', [1, 5])
def test_four_streams_write_each_streams_acme_items(n_step):
  """Four streams stepped together, episodes ending mid-round at different
  rounds: exactly the items acme's adder writes for each stream alone."""
  rng = np.random.default_rng(10 + n_step)
  per_stream = streams.stream_episodes(rng, rounds=70)
  server, client = streams.server('acme', 'vector')
  oracles = [streams.feed(lambda: acme_adder.make_adder(
      client, table='acme', n_step=n_step, discount=0.97), eps)
             for eps in per_stream]
  writer = nstep_writer.TransitionWriter(
      client, num_streams=streams.NUM_STREAMS, n_step=n_step, discount=0.97,
      table='vector')
  streams.drive(writer, per_stream, rounds=70)
  writer.close()
  del oracles
  gc.collect()
  expected = streams.items(client, 'acme')
  assert len(expected) > 70 * streams.NUM_STREAMS - 10
  assert streams.items(client, 'vector') == expected  # bitwise
  server.stop()


def test_chunk_writer_items_hold_the_transitions_in_order():
  rows = 8
  rng = np.random.default_rng(3)
  per_stream = streams.stream_episodes(rng, rounds=40)
  table = replay.make_transport_table(streams.SPEC, name='q', max_size=1000,
                                      rows_per_item=rows)
  server = reverb.Server([table], port=None)
  client = reverb.Client(f'localhost:{server.port}')
  writer = nstep_writer.ChunkWriter(client, num_streams=streams.NUM_STREAMS,
                                    n_step=3, discount=0.9, table='q',
                                    rows_per_item=rows)
  streams.drive(writer, per_stream, rounds=40)
  reference = streams.drive(streams.Recorder(3, 0.9), per_stream, rounds=40)
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
  server, client = streams.server('single')
  writer = nstep_writer.ChunkWriter(client, num_streams=1, n_step=2,
                                    discount=0.9, table='single',
                                    rows_per_item=8)
  with pytest.raises(ValueError, match='with 8 rows'):
    writer.start(0, np.zeros(3, np.float32))
  server.stop()
