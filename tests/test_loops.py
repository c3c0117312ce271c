"""Tests for wpo_agent.loops.ActorLoop: several environments stepped together.

Through reverb, the loop over E environments writes exactly the items of E
one-environment loops with the same seeds; episodes that end mid-round keep
the counts, the returns and the n-step tails right.
"""

import dm_env
import numpy as np
import pytest
import reverb

from wpo_agent import acting
from wpo_agent import environments
from wpo_agent import loops
from wpo_agent import nstep_writer
from wpo_agent import replay
from wpo_agent import runs
from wpo_agent import seeds as seeds_lib
import streams


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
  policy, source = streams.policy(None, None, zero_kernels=True)
  run = runs.RunOptions(domain='cartpole', envs_per_actor=streams.NUM_STREAMS)
  seeds = [seeds_lib.actor_seeds(run, actor_index=i, start_actor_steps=0)
           for i in range(streams.NUM_STREAMS)]
  rounds = 1020  # one 1000-step episode each and the start of the next
  together, loop = _loop_items(seeds, rounds, policy, source)
  alone = sorted(sum((_loop_items([s], rounds, policy, source)[0]
                      for s in seeds), []))
  assert len(together) == streams.NUM_STREAMS * (1000 + 4 + 20)
  assert together == alone
  assert (loop.steps == streams.NUM_STREAMS * rounds and
          loop.episodes == streams.NUM_STREAMS)


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
    return streams.SPEC.observations.replace(shape=(1,))

  def action_spec(self):
    return streams.SPEC.actions


class _ZeroActor:
  def select_actions(self, observations):
    return np.zeros((len(observations), 2), np.float32)

  def update(self, steps):
    pass


def test_episodes_ending_mid_round_keep_counts_returns_and_tails():
  lengths = [[3, 7, 50], [5, 50], [1, 1, 1, 50]]  # ends at different rounds
  envs = [_CountdownEnv(ls) for ls in lengths]
  recorder = streams.Recorder(n_step=4, discount=1.0, num_streams=3)
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


def test_a_cut_first_episode_ends_as_a_time_limit_and_is_not_counted():
  """first_cuts=[0, 3]: environment 1's first episode (of 10) ends after 3
  steps, bootstrapped (discount 1, not the 0 of a termination), and is
  reset; its next episode runs to its end; environment 0 is not cut."""
  envs = [_CountdownEnv([10, 50]), _CountdownEnv([10, 4, 50])]
  recorder = streams.Recorder(n_step=2, discount=1.0, num_streams=2)
  sent = []
  recorder.add = lambda **arrays: sent.append(recorder.streams.add(**arrays))
  loop = loops.ActorLoop(envs, _ZeroActor(), recorder, first_cuts=[0, 3])
  for _ in range(10):
    loop.step()
  rows = [(int(s), float(o[0]), float(n[0]), float(d))
          for t in sent for s, o, n, d in zip(
              t.stream, t.batch.observation, t.batch.next_observation,
              t.batch.discount)]
  of_1 = [r[1:] for r in rows if r[0] == 1]
  # Cut after 3: s_0->s_1, s_0->s_2, s_1->s_3 and the tail s_2->s_3, all
  # bootstrapped; then the episode of 4 from a fresh reset, terminal at 4.
  assert of_1[:4] == [(0, 1, 1), (0, 2, 1), (1, 3, 1), (2, 3, 1)]
  assert of_1[4:9] == [(0, 1, 1), (0, 2, 1), (1, 3, 1), (2, 4, 0), (3, 4, 0)]
  # Environment 0's episode of 10 ended (terminal) in round 10, uncut; only
  # the two uncut episodes count.
  assert [r[1:] for r in rows if r[0] == 0][-1] == (9, 10, 0)
  assert loop.episodes == 2
  assert list(loop.returns) == [10.0, 55.0]


def test_first_cuts_must_be_one_count_per_environment():
  with pytest.raises(ValueError, match='one step count >= 0 per environment'):
    loops.ActorLoop([_CountdownEnv([5])], _ZeroActor(), first_cuts=[1, 2])
