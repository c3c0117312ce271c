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

import argparse
import json
import time

import common  # noqa: F401  (sys.path for wpo_agent)
from common import median

import jax
import jax.numpy as jnp
import numpy as np

from wpo_agent import config as config_lib
from wpo_agent import device_replay
from wpo_agent import learning
from wpo_agent import networks as networks_lib
from wpo_agent import sharding
from wpo_agent.types import Batch


def _chunks(rng, n, size, obs, act):
  return [Batch(*(rng.normal(size=(size,) + shape).astype(np.float32)
                  for shape in ((obs,), (act,), (), (), (obs,))))
          for _ in range(n)]


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


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--modes', default='updates,feed')
  p.add_argument('--ks', default='1,8,32')
  p.add_argument('--obs-dim', type=int, default=67)  # humanoid
  p.add_argument('--act-dim', type=int, default=21)
  p.add_argument('--batch', type=int, default=256)
  p.add_argument('--capacity', type=int, default=1_000_000)
  p.add_argument('--prefill', type=int, default=100_000)
  p.add_argument('--spi', type=float, default=32.0)
  p.add_argument('--learner-rate', type=float, default=2000.0)
  p.add_argument('--seconds', type=float, default=5.0, help='per window')
  p.add_argument('--windows', type=int, default=3)
  p.add_argument('--json', help='write the results here')
  args = p.parse_args()
  ks = [int(k) for k in args.ks.split(',')]
  modes = args.modes.split(',')
  devices = jax.local_devices()
  mesh = sharding.make_mesh(devices)
  item = Batch(*(np.zeros(s, np.float32) for s in (
      (args.obs_dim,), (args.act_dim,), (), (), (args.obs_dim,))))
  replay = device_replay.DeviceReplay(item, capacity=args.capacity,
                                      batch_size=args.batch, mesh=mesh)
  rng = np.random.default_rng(0)
  buffer = replay.init()
  chunks = _chunks(rng, 64, replay.chunk_size, args.obs_dim, args.act_dim)
  for i in range(max(1, args.prefill // replay.chunk_size)):
    buffer = replay.add(buffer, chunks[i % len(chunks)])
  inserts = _Inserts(replay, chunks, args.learner_rate * args.batch / args.spi)
  print(f'devices: {devices}; buffer {replay.size(buffer)} items of '
        f'{device_replay.item_bytes(item)} B, capacity {args.capacity}; '
        f'inserting {inserts.rate:.0f} items/s', flush=True)

  calls, states = {}, {}
  for k in ks:
    cfg = config_lib.make_config(
        'acme', critic_layer_sizes=(512, 512, 256), batch_size=args.batch,
        sgd_steps_per_learner_step=k, max_replay_size=args.capacity)
    if 'updates' in modes:
      nets = networks_lib.make_networks(
          args.obs_dim, -np.ones(args.act_dim), np.ones(args.act_dim),
          **cfg.network_kwargs())
      step, replicated, _ = sharding.make_sampling_learner_step(
          nets, cfg, mesh, replay)
      states[('updates', k)] = jax.device_put(
          learning.init_training_state(nets, cfg, jax.random.PRNGKey(0)),
          replicated)
      calls[('updates', k)] = step
    if 'feed' in modes:
      calls[('feed', k)] = _noop_call(replay, k)
      states[('feed', k)] = jax.random.PRNGKey(0)

  def run(key, buffer, until):
    fn, state, n = calls[key], states[key], 0
    while True:
      buffer = inserts.catch_up(buffer)
      if key[0] == 'updates':
        state, out = fn(state, buffer)
      else:
        state, sub = jax.random.split(state)
        out = fn(buffer, sub)
      n += 1
      if time.perf_counter() >= until:
        break
    jax.block_until_ready(out)
    states[key] = state
    return buffer, n

  for key in calls:  # compile and warm up
    t = time.perf_counter()
    buffer, _ = run(key, buffer, 0)
    buffer, _ = run(key, buffer, 0)
    print(f'{key[0]} K={key[1]}: compiled and warmed up in '
          f'{time.perf_counter() - t:.1f} s', flush=True)
  rates = {key: [] for key in calls}
  for _ in range(args.windows):
    for key in calls:
      t0 = time.perf_counter()
      buffer, n = run(key, buffer, t0 + args.seconds)
      dt = time.perf_counter() - t0
      rates[key].append(n * key[1] / dt)
  results = dict(devices=str(devices), batch=args.batch,
                 obs_dim=args.obs_dim, act_dim=args.act_dim,
                 insert_items_per_s=inserts.rate,
                 inserted_items=inserts.added * replay.chunk_size)
  for (mode, k), r in rates.items():
    unit = 'updates/s' if mode == 'updates' else 'batches/s'
    results[f'{mode}_k{k}'] = dict(rate=median(r), rates=r, unit=unit)
    print(f'{mode:7s} K={k:3d}: {median(r):10.1f} {unit} (windows '
          f'{", ".join(f"{x:.0f}" for x in r)})', flush=True)
  elapsed = time.perf_counter() - inserts.start
  print(f'inserted {inserts.added * replay.chunk_size / elapsed:.0f} items/s '
        f'on average (target {inserts.rate:.0f})')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(results, f, indent=2)


if __name__ == '__main__':
  main()
