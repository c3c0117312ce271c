"""Two hosts' learners as one (jax.distributed over 127.0.0.1), or one process
fed both hosts' data on two devices: run by test_multihost.py.

  python multihost_learner.py host HOST_ID PORT OUT.npz   # one of 2 hosts
  python multihost_learner.py single OUT.npz              # XLA_FLAGS: 2 devices

Every host fills its own device replay with its own items (host h's item i
encodes (h, i)) and then runs STEPS SGD steps; the single process's buffer
holds the same items on its two devices (device h: host h's), in the same
slots, so it must end with the same parameters.
"""

import sys

import numpy as np

MODE = sys.argv[1]
if MODE == 'host':
  from wpo_agent.distributed import hosts  # pylint: disable=g-import-not-at-top
  hosts.join(coordinator_address=f'127.0.0.1:{sys.argv[3]}', num_hosts=2,
             host_id=int(sys.argv[2]), timeout_s=120)

import jax  # pylint: disable=g-import-not-at-top,g-bad-import-order

from wpo_agent import config as config_lib  # pylint: disable=g-import-not-at-top
from wpo_agent import device_feed
from wpo_agent import device_replay
from wpo_agent import learner as learner_lib
from wpo_agent import networks as networks_lib
from wpo_agent import sharding
from wpo_agent.types import Batch

OBS, ACT, CHUNKS, CALLS, K = 3, 2, 5, 75, 4  # 300 SGD steps
CONFIG = config_lib.make_config(
    'small', policy_layer_sizes=(16, 16), critic_layer_sizes=(16, 16),
    batch_size=32, num_action_samples=4, target_update_period=5,
    sgd_steps_per_learner_step=K, max_replay_size=1024, min_replay_size=128)
ITEM = Batch(np.zeros(OBS, np.float32), np.zeros(ACT, np.float32),
             np.zeros((), np.float32), np.zeros((), np.float32),
             np.zeros(OBS, np.float32))


def host_items(host: int) -> Batch:
  """Host `host`'s items [CHUNKS * 128, ...], different on every host."""
  rng = np.random.default_rng(100 + host)
  n = CHUNKS * device_replay.INSERT_CHUNK
  return Batch(*(rng.normal(size=(n,) + x.shape).astype(np.float32)
                 for x in ITEM))


def chunks(items: Batch, size: int):
  n = len(items.reward)
  return [Batch(*(x[i:i + size] for x in items)) for i in range(0, n, size)]


def learner_over(source_chunks, *, capacity, batch_size, key):
  """A WPOLearner fed `source_chunks`, all added before it steps."""
  replay = device_replay.DeviceReplay(
      ITEM, capacity=capacity, batch_size=batch_size,
      mesh=sharding.make_mesh(jax.local_devices()))
  feed = device_feed.DeviceFeed(
      replay, iter(source_chunks), samples_per_insert=1.0, keep_ratio=False,
      sgd_steps_per_call=K, min_size=128)
  networks = networks_lib.make_networks(OBS, -np.ones(ACT), np.ones(ACT),
                                        **CONFIG.network_kwargs())
  learner = learner_lib.WPOLearner(
      networks, CONFIG, feed, jax.random.PRNGKey(key),
      mesh=sharding.make_mesh(jax.devices()), logger=None)
  for _ in source_chunks:
    assert feed.pull(timeout=240)  # a liveness bound: CI's cores are shared
  return learner


def main():
  if MODE == 'host':
    host, out = int(sys.argv[2]), sys.argv[4]
    assert jax.process_count() == 2 and len(jax.devices()) == 2
    # What a resume restores on every host: host 0's value.
    mine = {'x': np.full((3,), host + 1.0, np.float32)}
    np.testing.assert_array_equal(hosts.from_host0(mine)['x'], [1.0] * 3)
    learner = learner_over(
        chunks(host_items(host), device_replay.INSERT_CHUNK),
        capacity=CONFIG.max_replay_size // 2,
        batch_size=CONFIG.batch_size // 2, key=0)
    learner.compile(ITEM)
  else:
    out = sys.argv[2]
    assert len(jax.devices()) == 2, jax.devices()
    # A 128-item chunk puts 64 on each device: interleave the hosts' halves
    # so that device h receives host h's items in host h's order.
    a, b = host_items(0), host_items(1)
    half = device_replay.INSERT_CHUNK // 2
    both = [Batch(*(np.concatenate([x[i:i + half], y[i:i + half]])
                    for x, y in zip(a, b)))
            for i in range(0, len(a.reward), half)]
    learner = learner_over(both, capacity=CONFIG.max_replay_size,
                           batch_size=CONFIG.batch_size, key=0)
  for _ in range(CALLS):
    learner.step()
  state = learner.save()
  leaves = jax.tree.leaves((state.policy_params, state.critic_params,
                            state.target_policy_params))
  np.savez(out, *[np.asarray(x) for x in leaves],
           steps=np.asarray(state.steps))
  print('OK', learner.sgd_steps, flush=True)


if __name__ == '__main__':
  main()
  if MODE == 'host':
    import os  # pylint: disable=g-import-not-at-top
    os._exit(0)  # skip jax.distributed's exit barrier
