"""What the writer, replay, acting and loop tests share: transition streams.

A small environment spec (observations of 3, actions of 2) and reverb servers
for it; random episodes, fed one at a time through acme's Adder API (`feed`)
or as several streams stepped together through the writers' stream API, the
way loops.ActorLoop steps them (`stream_episodes`, `drive`, `Recorder`); the
items of a table as raw bytes, for exact comparisons; and a policy to act with
on cartpole.

A helper module, not a test module (no `test_` prefix: pytest collects nothing
here): test files import it as `import streams`, as they import nstep_adder.
"""

import gc

from acme import specs
import dm_env
import jax
import numpy as np
import reverb

from wpo_agent import acting
from wpo_agent import config as config_lib
from wpo_agent import environments
from wpo_agent import networks as networks_lib
from wpo_agent import nstep
from wpo_agent import replay
from wpo_agent import types
from reference import acme_adder

def spec(obs_dim: int, act_dim: int) -> specs.EnvironmentSpec:
  """Flat float32 observations [obs_dim], actions in [-1, 1]^act_dim."""
  return specs.EnvironmentSpec(
      observations=specs.Array((obs_dim,), np.float32),
      actions=specs.BoundedArray((act_dim,), np.float32, -1.0, 1.0),
      rewards=specs.Array((), np.float32),
      discounts=specs.BoundedArray((), np.float32, 0.0, 1.0))


OBS_DIM, ACT_DIM = 3, 2
SPEC = spec(OBS_DIM, ACT_DIM)
NUM_STREAMS = 4


def server(*names):
  """A server with one replay table of SPEC's transitions per name."""
  tables = [replay.make_replay_table(SPEC, name=name, max_size=10_000,
                                     min_size=1, samples_per_insert=1.0,
                                     rate_limiter='min_size')
            for name in names]
  reverb_server = reverb.Server(tables, port=None)
  return reverb_server, reverb.Client(f'localhost:{reverb_server.port}')


def queue_server():
  """A server with a queue 'q' of SPEC's transitions (read back in order)."""
  table = reverb.Table.queue('q', 1000,
                             signature=replay.transition_signature(SPEC))
  reverb_server = reverb.Server([table], port=None)
  return reverb_server, reverb.Client(f'localhost:{reverb_server.port}')


def random_episode(rng, length, end):
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


def feed(make, episodes):
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


def items(client, table):
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


def stream_episodes(rng, rounds):
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
      episodes.append(random_episode(rng, length, end))
      steps += length
    out.append(episodes)
  return out


def drive(writer, per_stream, rounds):
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


class Recorder:
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


def policy(obs_dim=5, act_dim=3, zero_kernels=False):
  """The 'small' preset's policy network and a source of its initial params;
  obs_dim None: cartpole's sizes. zero_kernels: every matmul is exactly 0."""
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
