"""Device-resident replay: a ring buffer the learner samples inside its step.

With `replay_backend='device'` the replay lives on the learner's devices: a
`DeviceReplay` ring buffer, filled chunk by chunk by a `device_feed.DeviceFeed`
(which also keeps the samples-per-insert ratio), and sampled inside the
jitted learner step: K x (uniform indices drawn in jit -> gather -> SGD step),
so a call moves no replay data between host and device.

The ring buffer has one shard per device of the learner's mesh (a leading
axis sharded over 'data'). Every chunk is split evenly over the devices, so
each device holds capacity/D items, the shards always hold equal counts, and
each device drawing B/D of a batch from its own shard is uniform sampling over
all items, with no replay data crossing devices.

A buffer too large for the devices' free memory is refused, by `DeviceReplay`
itself and, before a run starts, by `check_replay_fits`. No reverb or
TensorFlow import here.
"""

from typing import Any, Dict, Iterator, NamedTuple, Optional

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import jax.numpy as jnp
import numpy as np

from wpo_agent import accelerators
from wpo_agent import config as config_lib
from wpo_agent.types import Batch

# Items per transfer from the transport into the device buffer (rounded up to
# a multiple of the device count): large enough that adds cost little per
# item, small enough to keep the learner within ~1% of its ratio.
INSERT_CHUNK = 128
# Share of a device's free memory the buffer may take; the rest is for the
# learner's parameters, optimiser state and activations.
_MEMORY_SHARE = 0.8


class BufferTooLargeError(ValueError):
  """The device buffer would not fit in the learner's device memory."""


def check_replay_fits(config: config_lib.WPOConfig, environment_spec, *,
                      in_process: bool, num_hosts: int = 1) -> None:
  """Refuses, before training, a device replay that would not fit in the
  learner's device memory (BufferTooLargeError).

  `environment_spec`: the run's task's (the items' shapes). `in_process`: the
  learner runs in this process (accelerators.learner_devices). Each of
  `num_hosts` hosts holds its share of the replay.
  """
  if config.replay_backend != 'device':
    return
  platform, count, free = accelerators.learner_devices(in_process=in_process)
  check_fits(transition_item(environment_spec),
             capacity=config.max_replay_size // num_hosts, num_devices=count,
             free_bytes=free, platform=platform)


def check_fits(item: Batch, *, capacity: int, num_devices: int,
               free_bytes: int, platform: str) -> None:
  """Raises BufferTooLargeError unless `capacity` items fit on the devices."""
  per_item = item_bytes(item)
  need = capacity // num_devices * per_item
  free = free_bytes * _MEMORY_SHARE
  if need > free:
    fits = int(free // per_item) * num_devices
    raise BufferTooLargeError(
        f'replay_backend=device: max_replay_size={capacity} items of '
        f'{per_item} bytes need {need / 2**30:.2f} GiB on each of the '
        f'{num_devices} {platform} device(s), more than {_MEMORY_SHARE:.0%} '
        f'of the {free_bytes / 2**30:.2f} GiB free; lower max_replay_size to '
        f'at most {fits}, use more devices, or use replay_backend=reverb')


def item_bytes(item: Batch) -> int:
  """Bytes of one item (arrays or specs: anything with shape and dtype)."""
  return int(sum(np.dtype(x.dtype).itemsize * int(np.prod(x.shape))
                 for x in item))


def transition_item(environment_spec) -> Batch:
  """One transition of zeros: the buffer's item shapes and dtypes."""
  def zeros(spec):
    return np.zeros(spec.shape, spec.dtype)
  return Batch(observation=zeros(environment_spec.observations),
               action=zeros(environment_spec.actions),
               reward=zeros(environment_spec.rewards),
               discount=zeros(environment_spec.discounts),
               next_observation=zeros(environment_spec.observations))


def rechunk(batches: Iterator[Batch], size: int) -> Iterator[Batch]:
  """Batches [size, ...] of the transitions in `batches` (each [m, L, ...]
  or [m, ...]), in order; a last partial batch is held back.

  The transport's drain cuts the actors' items into the buffer's add chunks
  with this (replay.make_transport_iterator)."""
  held, count = [], 0
  for batch in batches:
    flat = Batch(*(x.reshape((-1,) + x.shape[batch.reward.ndim:])
                   for x in batch))
    held.append(flat)
    count += len(flat.reward)
    while count >= size:
      joined = (Batch(*(np.concatenate(xs) for xs in zip(*held)))
                if len(held) > 1 else held[0])
      yield Batch(*(x[:size] for x in joined))
      rest = Batch(*(x[size:] for x in joined))
      count -= size
      held = [rest] if count else []


class RingState(NamedTuple):
  """A DeviceReplay's buffers; every leaf has a leading device axis [D]."""
  data: Batch       # [D, S + c, ...]: S slots, then c slots of write padding
  next: jax.Array   # [D] int32: the next slot written
  size: jax.Array   # [D] int32: items held (<= S)


class DeviceReplay:
  """Uniform ring buffer of transitions, sharded over `mesh`'s devices.

  `item` is one transition (a Batch of arrays without batch axes) giving the
  shapes and dtypes. Each device holds S = capacity/D slots. Pure functions of
  a RingState: `init`, `add` (jitted, donates the state; each device gets c =
  chunk_size/D items of every chunk), `sample` (traceable, for use inside the
  learner step: each device draws B/D uniform indices below its size).

  A chunk is written with two dynamic_update_slices, which XLA does in place:
  the whole chunk at `next` (running into the c padding slots when it crosses
  the end) and the part that crossed into slots [0, c). A scatter (flashbax's
  add) copies the whole buffer on CPU (BUILD_NOTES.md, "Device replay").
  """

  def __init__(self, item: Batch, *, capacity: int, batch_size: int,
               mesh: Mesh):
    self.num_shards = d = mesh.devices.size
    self.chunk_size = -(-INSERT_CHUNK // d) * d
    for name, value in (('max_replay_size', capacity),
                        ('batch_size', batch_size)):
      if value % d:
        raise ValueError(f'{name}={value} must be divisible by the {d} '
                         'devices the device replay is split over')
    if capacity < 2 * self.chunk_size:
      raise ValueError(f'max_replay_size={capacity}: the device replay needs '
                       f'at least {2 * self.chunk_size} (two insert chunks)')
    self.capacity = capacity
    self.batch_size = batch_size
    self.slots = capacity // d  # S
    self._shard_chunk = self.chunk_size // d  # c
    self.item = Batch(*(np.zeros(np.shape(x), np.asarray(x).dtype)
                        for x in item))
    devices = list(mesh.devices.flat)
    check_fits(self.item, capacity=capacity, num_devices=d,
               free_bytes=accelerators.free_bytes_per_device(devices),
               platform=devices[0].platform)
    self.sharding = NamedSharding(mesh, P('data'))  # leading (device) axis
    self.init = jax.jit(self._init, out_shardings=self.sharding)
    self._add = jax.jit(jax.vmap(self._add_shard), donate_argnums=0,
                        out_shardings=self.sharding)

  def _init(self) -> RingState:
    d, rows = self.num_shards, self.slots + self._shard_chunk
    return RingState(
        data=Batch(*(jnp.zeros((d, rows) + x.shape, x.dtype)
                     for x in self.item)),
        next=jnp.zeros((d,), jnp.int32), size=jnp.zeros((d,), jnp.int32))

  def _add_shard(self, state: RingState, chunk: Batch) -> RingState:
    c, slots = self._shard_chunk, self.slots
    fits = slots - state.next  # items of the chunk before the end

    def put(buf, x):  # buf [S + c, ...], x [c, ...]
      # Slots [0, c) get the items that crossed the end (rolled to the front)
      # and keep their old contents elsewhere.
      crossed = (jnp.arange(c) < c - fits).reshape((c,) + (1,) * (x.ndim - 1))
      head = jnp.where(crossed, jnp.roll(x, -fits, axis=0),
                       jax.lax.dynamic_slice_in_dim(buf, 0, c))
      buf = jax.lax.dynamic_update_slice_in_dim(buf, head, 0, axis=0)
      return jax.lax.dynamic_update_slice_in_dim(buf, x, state.next, axis=0)

    return RingState(data=Batch(*map(put, state.data, chunk)),
                     next=(state.next + c) % slots,
                     size=jnp.minimum(state.size + c, slots))

  def add(self, state: RingState, chunk: Batch) -> RingState:
    """Adds `chunk_size` items ([chunk_size, ...] host arrays) to `state`."""
    d = self.num_shards
    if len(chunk.reward) != self.chunk_size:
      raise ValueError(f'a chunk holds {self.chunk_size} items, got '
                       f'{len(chunk.reward)}')
    split = Batch(*(np.reshape(x, (d, x.shape[0] // d) + x.shape[1:])
                    for x in chunk))
    return self._add(state, jax.device_put(split, self.sharding))

  def compile_add(self, state: RingState) -> None:
    """Compiles `add` for `state` ahead of its first call."""
    chunk = Batch(*(jax.ShapeDtypeStruct(
        (self.num_shards, self._shard_chunk) + x.shape, x.dtype,
        sharding=self.sharding) for x in self.item))
    self._add.lower(state, chunk).compile()

  def sample(self, state: RingState, key: jax.Array,
             sharding: Optional[NamedSharding] = None) -> Batch:
    """A uniform batch [B, ...], split over the devices along B (traceable).

    `state` may be this buffer's or, with several hosts, the global view of
    every host's buffers (`sharding` over every host's devices;
    sharding.global_view):
    each device draws B/D items of its own shard either way.
    """
    per_device = self.batch_size // self.num_shards
    d = state.size.shape[0]

    def draw(data, size, key):
      index = jax.random.randint(key, (per_device,), 0, jnp.maximum(size, 1))
      return Batch(*(jnp.take(x, index, axis=0) for x in data))

    keys = jax.random.split(key, d)
    drawn = jax.vmap(draw)(state.data, state.size, keys)  # [D, B/D, ...]
    batch = Batch(*(x.reshape((d * per_device,) + x.shape[2:])
                    for x in drawn))
    return jax.lax.with_sharding_constraint(batch, sharding or self.sharding)

  # --- checkpoints: only the filled slots of each shard are saved -----------

  def to_host(self, state: RingState) -> Dict[str, Any]:
    """Numpy copy of `state` for a checkpoint: the filled slots of each shard."""
    size = np.asarray(state.size)  # [D], equal over shards
    filled = int(size[0])
    return dict(data=jax.device_get(Batch(*(x[:, :filled]
                                            for x in state.data))),
                next=np.asarray(state.next), size=size)

  def saved_like(self, filled_per_shard: int) -> Dict[str, Any]:
    """Shapes of `to_host`'s output, for restoring a checkpoint."""
    d = self.num_shards
    return dict(data=Batch(*(np.zeros((d, filled_per_shard) + x.shape,
                                      x.dtype) for x in self.item)),
                next=np.zeros((d,), np.int32), size=np.zeros((d,), np.int32))

  def from_host(self, saved: Dict[str, Any]) -> RingState:
    """A device state holding what `to_host` saved."""
    state = self.init()
    data = Batch(*(jax.lax.dynamic_update_slice_in_dim(
        buf, jnp.asarray(part, buf.dtype), 0, axis=1)
                   for buf, part in zip(state.data, Batch(*saved['data']))))
    return jax.device_put(
        RingState(data=data, next=jnp.asarray(saved['next'], jnp.int32),
                  size=jnp.asarray(saved['size'], jnp.int32)), self.sharding)

  def size(self, state: RingState) -> int:
    """Items held (a host read)."""
    return int(np.asarray(state.size)[0]) * self.num_shards
