"""Cost of one chunk add to a large device ring buffer: scatter vs update-slice.

Why device_replay.DeviceReplay writes chunks with dynamic_update_slice: a
scatter at `(arange(c) + next) % S` (how flashbax's buffers add) is done out of
place by XLA on CPU, copying the whole buffer each add, even when donated.
Times both on one [1, S, 67] float32 buffer (humanoid observations), and the
real DeviceReplay.add (host chunk, device_put, two update-slices per field).

  .venv/bin/python bench/bench_ring_add.py [--slots 1000000]
"""

import time

import common

import jax
import jax.numpy as jnp
import numpy as np

from wpo_agent import device_replay
from wpo_agent import sharding
from wpo_agent.types import Batch


def _time(fn, state, args, repeats=20):
  for _ in range(3):
    state = fn(state, *args(0))
  jax.block_until_ready(state)
  start = time.perf_counter()
  for i in range(repeats):
    state = fn(state, *args(i))
  jax.block_until_ready(state)
  return (time.perf_counter() - start) / repeats * 1e3, state


def main():
  p = common.parser(__doc__)
  p.add_argument('--slots', type=int, default=1_000_000)
  p.add_argument('--chunk', type=int, default=128)
  args = p.parse_args()
  s, c = args.slots, args.chunk
  x = jnp.ones((1, c, 67))
  buf = jnp.zeros((1, s + c, 67))
  scatter = jax.jit(lambda b, i: b.at[:, (jnp.arange(c) + i) % s].set(x),
                    donate_argnums=0)
  update = jax.jit(lambda b, i: jax.lax.dynamic_update_slice_in_dim(
      b, x, i, axis=1), donate_argnums=0)
  ms_scatter, buf = _time(scatter, buf, lambda i: (i * c,))
  ms_update, buf = _time(update, buf, lambda i: (i * c % s,))
  del buf
  item = common.item(common.HUMANOID_OBS, common.HUMANOID_ACT)
  replay = device_replay.DeviceReplay(item, capacity=s, batch_size=256,
                                      mesh=sharding.make_mesh())
  chunk = Batch(*(np.ones((replay.chunk_size,) + v.shape, np.float32)
                  for v in item))
  ms_replay, _ = _time(replay.add, replay.init(), lambda i: (chunk,))
  print(f'devices {jax.devices()}; {s} slots, chunks of {c}:')
  print(f'  scatter (flashbax-style add), observations only: {ms_scatter:9.3f} ms')
  print(f'  dynamic_update_slice, observations only:          {ms_update:9.3f} ms')
  print(f'  DeviceReplay.add, all five fields from the host:   {ms_replay:9.3f} ms')


if __name__ == '__main__':
  main()
