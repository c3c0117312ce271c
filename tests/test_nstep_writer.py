"""Tests for wpo_agent.nstep_writer: same items as acme's adder (the oracle).

TransitionWriter is fed here through acme's Adder API (tests/nstep_adder.py),
so that it and acme's adder get exactly the same calls.
"""

import gc
import threading

from acme import specs
import dm_env
import numpy as np
import pytest
import reverb

from wpo_agent import nstep_writer
from wpo_agent import replay
import nstep_adder
from reference import acme_adder

OBS_DIM, ACT_DIM = 3, 2
SPEC = specs.EnvironmentSpec(
    observations=specs.Array((OBS_DIM,), np.float32),
    actions=specs.BoundedArray((ACT_DIM,), np.float32, -1.0, 1.0),
    rewards=specs.Array((), np.float32),
    discounts=specs.BoundedArray((), np.float32, 0.0, 1.0))
TABLE = 't'


def _server(*names):
  tables = [replay.make_replay_table(SPEC, name=name, max_size=10_000,
                                     min_size=1, samples_per_insert=1.0,
                                     rate_limiter='min_size')
            for name in names]
  server = reverb.Server(tables, port=None)
  return server, reverb.Client(f'localhost:{server.port}')


def _queue_server():
  table = reverb.Table.queue('q', 1000,
                             signature=replay.transition_signature(SPEC))
  server = reverb.Server([table], port=None)
  return server, reverb.Client(f'localhost:{server.port}')


def _random_episode(rng, length, end):
  """(s_0, [(a_t, TimeStep_{t+1})]); end: 'terminal', 'truncated' or 'open'.

  Mid-episode env discounts are mostly 1 with a few 0.5 (exercises d_t != 1
  inside windows); 'terminal' ends with discount 0, 'truncated' with 1 (the
  suite's time limit), 'open' has no LAST step (abandoned episode).
  """
  obs = rng.standard_normal((length + 1, OBS_DIM)).astype(np.float32)
  steps = []
  for t in range(length):
    action = rng.uniform(-2, 2, ACT_DIM).astype(np.float32)
    reward = np.float32(rng.uniform(-1, 1))
    discount = np.float32(rng.choice([1.0, 1.0, 1.0, 0.5]))
    step_type = dm_env.StepType.MID
    if t == length - 1 and end != 'open':
      step_type = dm_env.StepType.LAST
      discount = np.float32(0.0 if end == 'terminal' else 1.0)
    steps.append((action, dm_env.TimeStep(step_type, reward, discount,
                                          obs[t + 1])))
  return dm_env.restart(obs[0]), steps


def _feed(make, episodes):
  """Feeds episodes through make(); returns the adder."""
  adder = make()
  for first, steps in episodes:
    adder.add_first(first)
    for action, timestep in steps:
      adder.add(action, timestep)
    if not steps[-1][1].last():
      # Abandoned episode: both drop the open windows. acme's adder cannot
      # add_first after a mid-episode reset() (its python TrajectoryWriter
      # keeps the partial step open), so it gets a new one; ours is reused.
      adder.reset()
      if isinstance(adder, acme_adder.BootstrapNStepTransitionAdder):
        del adder
        gc.collect()
        adder = make()
  return adder


def _items(client, table):
  """All items as sorted tuples of raw bytes (exact comparison)."""
  n = replay.num_items(client, table)
  if n == 0:
    return []
  seen = {}
  # Uniform sampling with replacement: sample until every key was seen.
  while len(seen) < n:
    for s in client.sample(table, 4 * n, emit_timesteps=False,
                           unpack_as_table_signature=True):
      d = s.data
      seen[int(s.info.key)] = (
          d.observation.tobytes(), d.action.tobytes(),
          np.float32(d.reward).tobytes(), np.float32(d.discount).tobytes(),
          d.next_observation.tobytes())
  return sorted(seen.values())


@pytest.mark.parametrize('n_step', [1, 5])
def test_same_items_as_acme_adder(n_step):
  """Random episodes (terminated, truncated, abandoned, shorter than n)."""
  rng = np.random.default_rng(n_step)
  episodes = [_random_episode(rng, 23, 'terminal'),
              _random_episode(rng, 17, 'truncated'),
              _random_episode(rng, 3, 'terminal'),     # shorter than n = 5
              _random_episode(rng, 9, 'open'),
              _random_episode(rng, 1, 'truncated'),
              _random_episode(rng, 12, 'terminal')]
  server, client = _server('acme', 'fast')
  oracle = _feed(lambda: acme_adder.make_adder(
      client, table='acme', n_step=n_step, discount=0.97), episodes)
  fast = _feed(lambda: nstep_adder.make_adder(
      client, table='fast', n_step=n_step, discount=0.97), episodes)
  assert isinstance(oracle, acme_adder.BootstrapNStepTransitionAdder)
  assert isinstance(fast, nstep_adder.NStepTransitionWriter)
  fast.close()
  del oracle
  gc.collect()
  expected = _items(client, 'acme')
  # Items per finished episode of length T: T + min(T, n) - 1; an abandoned
  # one keeps the T written before the reset.
  assert len(expected) == sum(
      len(s) + (min(len(s), n_step) - 1 if s[-1][1].last() else 0)
      for _, s in episodes)
  assert _items(client, 'fast') == expected  # bitwise-equal R and D
  server.stop()


def test_values_and_order_by_hand():
  """n=3, g=0.5, rewards 1, 2, 4, 8, 16; terminated after 5 steps."""
  server, client = _queue_server()
  writer = nstep_adder.NStepTransitionWriter(client, 3, 0.5, 'q',
                                             chunk_length=2,
                                             max_in_flight_items=2)
  obs = lambda t: np.full((OBS_DIM,), t, np.float32)  # noqa: E731
  writer.add_first(dm_env.restart(obs(0)))
  rewards, discounts = [1, 2, 4, 8, 16], [1, 1, 0.5, 1, 0]
  for t in range(5):
    step_type = dm_env.StepType.LAST if t == 4 else dm_env.StepType.MID
    writer.add(np.full((ACT_DIM,), 10 * t, np.float32),
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
  server, client = _server(TABLE)
  writer = nstep_adder.NStepTransitionWriter(client, 2, 0.9, TABLE)
  ts = dm_env.transition(np.float32(1), np.zeros(OBS_DIM, np.float32))
  with pytest.raises(ValueError, match='add_first'):
    writer.add(np.zeros(ACT_DIM, np.float32), ts)
  with pytest.raises(ValueError, match='first'):
    writer.add_first(ts)
  writer.add_first(dm_env.restart(np.zeros(OBS_DIM, np.float32)))
  with pytest.raises(NotImplementedError):
    writer.add(np.zeros(ACT_DIM, np.float32), ts, extras={'x': 1})
  with pytest.raises(ValueError):
    nstep_adder.NStepTransitionWriter(client, 0, 0.9, TABLE)
  writer.close()
  server.stop()


def _blocked_writes(writer, results):
  """Writes single transitions into a full queue until one blocks for good."""
  try:
    writer.start(0, np.zeros((OBS_DIM,), np.float32))
    for t in range(20):
      writer.add(actions=np.zeros((1, ACT_DIM), np.float32),
                 rewards=np.ones((1,), np.float32),
                 discounts=np.ones((1,), np.float32),
                 next_observations=np.full((1, OBS_DIM), t, np.float32),
                 last=np.zeros((1,), bool))
    results.append('all written')
  except Exception as e:  # pylint: disable=broad-except
    results.append(e)


@pytest.mark.parametrize('with_stop', [True, False])
def test_a_blocked_write_gives_way_only_to_its_stop_predicate(with_stop):
  """A queue of 4 takes 4 items, then holds the writer (as a rate limiter
  does once the learner stops sampling) until an item is taken out."""
  table = reverb.Table.queue('q', 4,
                             signature=replay.transition_signature(SPEC))
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
  thread.join(timeout=2.0)
  assert thread.is_alive() and replay.num_items(client, 'q') == 4
  stop.set()
  thread.join(timeout=5.0)
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
      thread.join(timeout=0.5)
    assert results == ['all written']
    writer.close()
  server.stop()
