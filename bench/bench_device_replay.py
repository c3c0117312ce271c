"""The device replay alone: learner updates/s and feed capacity, pure JAX.

Imports only wpo_agent's JAX modules (config, networks, learning, sharding,
device_replay) with flax, optax and chex: no reverb, TensorFlow,
acme or dm_control. So it also runs on an accelerator host that has JAX but
cannot build the project's venv (bench/device_check.sh falls back to it).

Both modes keep adding chunks of transitions between learner calls at the
rate a `--learner-rate` updates/s learner needs at `--spi`
(2,000 x 256 / 32 = 16,000 items/s by default), as the DeviceFeed would:
  updates  the real WPO learner call (learning.make_sampling_learner_step over
           this host's devices) at humanoid sizes, for each K: SGD updates/s.
  feed     the same call with the SGD step replaced by a no-op (a sum over the
           sampled batch, so the gather must happen): batches/s delivered.
Modes and Ks are timed in alternating windows in one process.

  .venv/bin/python bench/bench_device_replay.py [--json PATH]
"""

import time

import common
from common import median

import jax
import jax.numpy as jnp
import numpy as np

from wpo_agent import device_replay
from wpo_agent import learning
from wpo_agent import sharding


class _Inserts:
  """Adds pre-made chunks to the buffer at `rate` items/s of elapsed time."""

  def __init__(self, replay, chunks, rate):
    self.replay, self.chunks, self.rate = replay, chunks, rate
    self.added = 0
    self.start = time.perf_counter()

  def catch_up(self, state):
    due = int(self.rate * (time.perf_counter() - self.start)
              / self.replay.chunk_size)
    while self.added < due:
      state = self.replay.add(state, self.chunks[self.added % len(self.chunks)])
      self.added += 1
    return state


def _noop_call(replay, k):
  def call(buffer, key):
    def one(total, key):
      return total + sum(jnp.sum(x) for x in replay.sample(buffer, key)), None
    return jax.lax.scan(one, 0.0, jax.random.split(key, k))[0]
  return jax.jit(call)


class _Calls:
  """The timed calls, (mode, K) each, on one buffer the inserts keep growing."""

  def __init__(self, args, replay, mesh, buffer, inserts):
    self.buffer, self.inserts = buffer, inserts
    self.fns, self.states = {}, {}
    modes = args.modes.split(',')
    for k in args.ks:
      if 'updates' in modes:
        cfg, nets = common.learner_setup(
            args.obs_dim, args.act_dim, critic_layer_sizes=common.PAPER_CRITIC,
            batch_size=args.batch, sgd_steps_per_learner_step=k,
            max_replay_size=args.capacity)
        step, replicated, _ = sharding.make_sampling_learner_step(
            nets, cfg, mesh, replay)
        self.states[('updates', k)] = jax.device_put(
            learning.init_training_state(nets, cfg, jax.random.PRNGKey(0)),
            replicated)
        self.fns[('updates', k)] = step
      if 'feed' in modes:
        self.fns[('feed', k)] = _noop_call(replay, k)
        self.states[('feed', k)] = jax.random.PRNGKey(0)

  def caller(self, key):
    """One call of `key` after the inserts due by now."""
    def call():
      self.buffer = self.inserts.catch_up(self.buffer)
      fn, state = self.fns[key], self.states[key]
      if key[0] == 'updates':
        state, out = fn(state, self.buffer)
      else:
        state, sub = jax.random.split(state)
        out = fn(self.buffer, sub)
      self.states[key] = state
      return out
    return call


def parse_args(argv=None):
  p = common.parser(__doc__)
  p.add_argument('--modes', default='updates,feed')
  p.add_argument('--prefill', type=int, default=100_000)
  common.add_flags(p, ks='1,8,32', obs_dim=common.HUMANOID_OBS,
                   act_dim=common.HUMANOID_ACT, batch=256, capacity=1_000_000,
                   spi=32.0, learner_rate=2000.0, seconds=5.0, windows=3,
                   json_file=None, helps=dict(seconds='per window'))
  return p.parse_args(argv)


def _setup(args, devices):
  """The replay, prefilled, and its inserts at the target rate."""
  mesh = sharding.make_mesh(devices)
  item = common.item(args.obs_dim, args.act_dim)
  replay = device_replay.DeviceReplay(item, capacity=args.capacity,
                                      batch_size=args.batch, mesh=mesh)
  rng = np.random.default_rng(0)
  buffer = replay.init()
  chunks = common.random_chunks(rng, 64, replay.chunk_size, item)
  for i in range(max(1, args.prefill // replay.chunk_size)):
    buffer = replay.add(buffer, chunks[i % len(chunks)])
  inserts = _Inserts(replay, chunks, args.learner_rate * args.batch / args.spi)
  print(f'devices: {devices}; buffer {replay.size(buffer)} items of '
        f'{device_replay.item_bytes(item)} B, capacity {args.capacity}; '
        f'inserting {inserts.rate:.0f} items/s', flush=True)
  return _Calls(args, replay, mesh, buffer, inserts)


def main():
  args = parse_args()
  devices = jax.local_devices()
  calls = _setup(args, devices)
  for key in calls.fns:  # compile and warm up
    t = time.perf_counter()
    for _ in range(2):
      common.run_window(calls.caller(key), 0, sync=jax.block_until_ready)
    print(f'{key[0]} K={key[1]}: compiled and warmed up in '
          f'{time.perf_counter() - t:.1f} s', flush=True)
  rates = {key: [] for key in calls.fns}
  for _, key in common.interleave(calls.fns, args.windows):
    n, dt, _ = common.run_window(calls.caller(key), args.seconds,
                                 sync=jax.block_until_ready)
    rates[key].append(n * key[1] / dt)
  inserts = calls.inserts
  chunk_size = inserts.replay.chunk_size
  results = dict(devices=str(devices), batch=args.batch,
                 obs_dim=args.obs_dim, act_dim=args.act_dim,
                 insert_items_per_s=inserts.rate,
                 inserted_items=inserts.added * chunk_size)
  for (mode, k), r in rates.items():
    unit = 'updates/s' if mode == 'updates' else 'batches/s'
    results[f'{mode}_k{k}'] = dict(rate=median(r), rates=r, unit=unit)
    print(f'{mode:7s} K={k:3d}: {median(r):10.1f} {unit} (windows '
          f'{", ".join(f"{x:.0f}" for x in r)})', flush=True)
  elapsed = time.perf_counter() - inserts.start
  print(f'inserted {inserts.added * chunk_size / elapsed:.0f} items/s '
        f'on average (target {inserts.rate:.0f})')
  common.write_json(args.json, results)


if __name__ == '__main__':
  main()
