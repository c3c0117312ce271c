"""Device-resident replay: the learner samples its batches inside the jitted step.

With `replay_backend='device'` the replay lives on the learner's devices:

  actors --n-step items--> reverb FIFO 'transport' table (bounded; replay.py)
     --drain thread, chunks of INSERT_CHUNK items--> DeviceFeed
     --add (jitted, donated)--> DeviceReplay: a ring buffer on the device(s)
  learner call: K x (uniform indices drawn in jit -> gather -> SGD step),
  so a call moves no replay data between host and device.

The ring buffer is flashbax's item buffer, one per device of the learner's mesh
(vmapped over a leading axis sharded over 'data'). Every chunk is split evenly
over the devices, so each device holds capacity/D items, the shards always hold
equal counts, and each device drawing B/D of a batch from its own shard is
uniform sampling over all items, with no replay data crossing devices.

Samples-per-insert is kept here (`ratio.RatioGate` over the drained items): the
learner drains a chunk only when the ratio owes it no call, so when it is
behind, the transport table fills and the actors' writes block, as under
reverb's SampleToInsertRatio limiter. No reverb or TensorFlow import here.
"""

import importlib.util
import json
import os
import queue
import subprocess
import sys
import threading
import time
from typing import Any, Dict, Iterator, Optional, Tuple

import flashbax as fbx
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import jax.numpy as jnp
import numpy as np
import psutil

from wpo_agent import ratio
from wpo_agent.types import Batch

# Values of WPOConfig.replay_backend. 'auto': 'device' when the learner's
# devices are accelerators, else 'reverb' (BUILD_NOTES.md, "Device replay").
REPLAY_BACKENDS = ('auto', 'reverb', 'device')
# Items per transfer from the transport into the device buffer (rounded up to
# a multiple of the device count): large enough that adds cost little per
# item, small enough to keep the learner within ~1% of its ratio.
INSERT_CHUNK = 128
# Share of a device's free memory the buffer may take; the rest is for the
# learner's parameters, optimiser state and activations.
_MEMORY_SHARE = 0.8


def resolve_backend(backend: str, platform: str) -> str:
  """'auto' -> 'device' when the learner's platform is an accelerator."""
  if backend != 'auto':
    return backend
  return 'reverb' if platform == 'cpu' else 'device'


# Packages through which JAX finds accelerators; with none installed (or with
# JAX_PLATFORMS=cpu) the platform is 'cpu' without probing.
_ACCELERATOR_PACKAGES = ('jax_plugins', 'jax_cuda12_plugin', 'libtpu')
_PROBE = ('import json, jax\n'
          'from wpo_agent import device_replay as d\n'
          'devs = jax.local_devices()\n'
          'print(json.dumps([devs[0].platform, len(devs), '
          'd.free_bytes_per_device(devs)]))')


def learner_devices(*, in_process: bool) -> Tuple[str, int, int]:
  """(platform, count, free bytes of the fullest) of the learner's devices.

  `in_process`: the learner runs in this process (single-process runner);
  otherwise they are probed in a short subprocess with this process's
  environment (what the learner node inherits), so that this process never
  claims accelerator memory.
  """
  if in_process:
    devices = jax.local_devices()
    return devices[0].platform, len(devices), free_bytes_per_device(devices)
  if (os.environ.get('JAX_PLATFORMS', '').strip() == 'cpu' or not any(
      importlib.util.find_spec(name) for name in _ACCELERATOR_PACKAGES)):
    return 'cpu', 1, int(psutil.virtual_memory().available)
  env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE='false')
  out = subprocess.run([sys.executable, '-c', _PROBE], env=env,
                       capture_output=True, text=True, timeout=300, check=True)
  platform, count, free = json.loads(out.stdout.strip().splitlines()[-1])
  return platform, int(count), int(free)


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


def transition_item(environment_spec) -> Batch:
  """One transition of zeros: the buffer's item shapes and dtypes."""
  def zeros(spec):
    return np.zeros(spec.shape, spec.dtype)
  return Batch(observation=zeros(environment_spec.observations),
               action=zeros(environment_spec.actions),
               reward=zeros(environment_spec.rewards),
               discount=zeros(environment_spec.discounts),
               next_observation=zeros(environment_spec.observations))


def transport_size(*, samples_per_insert: float, min_size: int) -> int:
  """Capacity of the transport queue: how far actors may run ahead.

  Four chunks, or the items reverb's ratio limiter would let actors run ahead
  by (its error buffer over spi), whichever is more.
  """
  ahead = ratio.default_error_buffer(samples_per_insert=samples_per_insert,
                                     min_size=min_size) / samples_per_insert
  return int(max(4 * INSERT_CHUNK, -(-ahead // 1)))


def item_bytes(item: Batch) -> int:
  return int(sum(np.dtype(x.dtype).itemsize * int(np.prod(x.shape))
                 for x in item))


def free_bytes_per_device(devices) -> int:
  """Free memory of the most loaded device (host memory / D on CPU)."""
  free = []
  for device in devices:
    stats = device.memory_stats() if device.platform != 'cpu' else None
    if stats and 'bytes_limit' in stats:
      free.append(stats['bytes_limit'] - stats.get('bytes_in_use', 0))
    else:  # CPU devices share the host's memory
      free.append(psutil.virtual_memory().available // len(devices))
  return int(min(free))


class BufferTooLargeError(ValueError):
  """The device buffer would not fit in the learner's device memory."""


class DeviceReplay:
  """Uniform ring buffer of transitions, sharded over `mesh`'s devices.

  `item` is one transition (a Batch of arrays without batch axes) giving the
  shapes and dtypes. Pure functions of a buffer state: `init`, `add` (jitted,
  donates the state), `sample` (traceable, for use inside the learner step).
  """

  def __init__(self, item: Batch, *, capacity: int, batch_size: int,
               mesh: Mesh):
    self.num_shards = d = mesh.devices.size
    for name, value in (('max_replay_size', capacity),
                        ('batch_size', batch_size)):
      if value % d:
        raise ValueError(f'{name}={value} must be divisible by the {d} '
                         'devices the device replay is split over')
    self.capacity = capacity
    self.batch_size = batch_size
    self.chunk_size = -(-INSERT_CHUNK // d) * d
    self.item = Batch(*(np.zeros(np.shape(x), np.asarray(x).dtype)
                        for x in item))
    devices = list(mesh.devices.flat)
    check_fits(self.item, capacity=capacity, num_devices=d,
               free_bytes=free_bytes_per_device(devices),
               platform=devices[0].platform)
    self._buffer = fbx.make_item_buffer(
        max_length=capacity // d, min_length=1,
        sample_batch_size=batch_size // d, add_batches=True)
    self.sharding = NamedSharding(mesh, P('data'))  # leading (device) axis
    self._batch_sharding = NamedSharding(mesh, P('data'))  # B of [B, ...]
    self.init = jax.jit(self._init, out_shardings=self.sharding)
    self._add = jax.jit(jax.vmap(self._buffer.add), donate_argnums=0,
                        out_shardings=self.sharding)

  def _init(self):
    one = self._buffer.init(jax.tree.map(jnp.asarray, self.item))
    return jax.tree.map(
        lambda x: jnp.broadcast_to(x, (self.num_shards,) + x.shape), one)

  def add(self, state, chunk: Batch):
    """Adds `chunk_size` items ([chunk_size, ...] host arrays) to `state`."""
    d = self.num_shards
    split = jax.tree.map(
        lambda x: np.reshape(x, (d, x.shape[0] // d) + x.shape[1:]),
        Batch(*chunk))
    return self._add(state, jax.device_put(split, self.sharding))

  def sample(self, state, key: jax.Array) -> Batch:
    """A uniform batch [B, ...], split over the devices along B (traceable)."""
    keys = jax.random.split(key, self.num_shards)
    drawn = jax.vmap(self._buffer.sample)(state, keys).experience  # [D, B/D,.]
    batch = jax.tree.map(
        lambda x: x.reshape((self.batch_size,) + x.shape[2:]), drawn)
    return jax.lax.with_sharding_constraint(batch, self._batch_sharding)

  # --- checkpoints: only the filled part of each shard is saved -------------

  def to_host(self, state) -> Dict[str, Any]:
    """Numpy copy of `state` for a checkpoint: the filled slots of each shard."""
    index = np.asarray(state.current_index)  # [D], equal over shards
    full = np.asarray(state.is_full)
    filled = self.capacity // self.num_shards if full[0] else int(index[0])
    return dict(experience=jax.device_get(jax.tree.map(
                    lambda x: x[:, :, :filled], state.experience)),
                current_index=index, is_full=full)

  def saved_like(self, filled_per_shard: int) -> Dict[str, Any]:
    """Shapes of `to_host`'s output, for restoring a checkpoint."""
    d = self.num_shards
    return dict(
        experience=Batch(*(np.zeros((d, 1, filled_per_shard) + x.shape,
                                    x.dtype) for x in self.item)),
        current_index=np.zeros((d,), np.int32),
        is_full=np.zeros((d,), bool))

  def from_host(self, saved: Dict[str, Any]):
    """A device state equal to the one `to_host` was given."""
    state = self.init()
    experience = jax.tree.map(
        lambda buf, part: jax.lax.dynamic_update_slice(
            buf, jnp.asarray(part, buf.dtype), (0,) * buf.ndim),
        state.experience, Batch(*saved['experience']))
    state = state.replace(
        experience=experience,
        current_index=jnp.asarray(saved['current_index'],
                                  state.current_index.dtype),
        is_full=jnp.asarray(saved['is_full'], bool))
    return jax.device_put(state, self.sharding)

  def size(self, state) -> int:
    """Items held (host read of the shard indices)."""
    full = bool(np.asarray(state.is_full)[0])
    per_shard = (self.capacity // self.num_shards if full
                 else int(np.asarray(state.current_index)[0]))
    return per_shard * self.num_shards


class DeviceFeed:
  """The learner's side of the device replay: drains, adds, keeps the ratio.

  A daemon thread reads chunks from `chunks` (the transport table's drain,
  replay.make_transport_iterator) into a short queue; the learner's thread adds
  them to the device buffer only when the samples-per-insert gate owes no
  call, so a learner that falls behind stops draining and the actors block.
  `lock` guards the buffer state against a checkpoint taken from another
  thread (adds donate the old buffers).
  """

  def __init__(self, replay: DeviceReplay, chunks: Iterator[Batch], *,
               samples_per_insert: float, sgd_steps_per_call: int,
               min_size: int, queue_chunks: int = 2):
    self.replay = replay
    self.lock = threading.Lock()
    self._gate_args = dict(samples_per_insert=samples_per_insert,
                           batch_size=replay.batch_size,
                           sgd_steps_per_call=sgd_steps_per_call)
    self._min_size = min_size
    self._queue: 'queue.Queue' = queue.Queue(maxsize=queue_chunks)
    self.wait_s = 0.0  # learner time spent waiting for the actors' items
    self._set_state(replay.init())
    threading.Thread(target=self._drain, args=(chunks,), daemon=True,
                     name='device-replay-drain').start()

  def _set_state(self, state) -> None:
    self.state = state
    self.items = self.replay.size(state)
    self.inserted = 0  # items added in this session
    self.gate = ratio.RatioGate(
        **self._gate_args, inserted_before_min=self._min_size - self.items)

  def _drain(self, chunks: Iterator[Batch]) -> None:
    try:
      for chunk in chunks:
        self._queue.put(chunk)
    except BaseException as e:  # pylint: disable=broad-except
      self._queue.put(e)  # re-raised in the learner's thread

  def pull(self, *, timeout: Optional[float]) -> bool:
    """Adds one chunk if one arrives within `timeout` (None: don't wait)."""
    try:
      chunk = (self._queue.get_nowait() if timeout is None
               else self._queue.get(timeout=timeout))
    except queue.Empty:
      return False
    if isinstance(chunk, BaseException):
      raise RuntimeError('the replay transport failed') from chunk
    with self.lock:
      self.state = self.replay.add(self.state, chunk)
    n = self.replay.chunk_size
    self.items = min(self.items + n, self.replay.capacity)
    self.inserted += n
    self.gate.insert(n)
    return True

  def wait_until_owed(self) -> None:
    """Blocks (draining) until the ratio allows one more learner call."""
    start = time.perf_counter()
    while not self.gate.owed():
      self.pull(timeout=0.1)
    self.wait_s += time.perf_counter() - start

  def called(self) -> None:
    self.gate.called()

  def realised_samples_per_insert(self) -> float:
    """Sampled / inserted transitions since the buffer reached min_size."""
    return self.gate.realised()

  def to_host(self) -> Dict[str, Any]:
    with self.lock:
      return self.replay.to_host(self.state)

  def restore(self, saved: Dict[str, Any]) -> None:
    with self.lock:
      self._set_state(self.replay.from_host(saved))
