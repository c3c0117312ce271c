"""Data-parallel learner step with `jax.jit` shardings (no pmap).

`learner.WPOLearner` always steps through this, over the mesh the builder
gives it (this host's devices; on one device it is the plain jitted step).

The TrainingState is replicated; the batch is split along its B axis over a 1-D
device mesh named 'data'. Every loss in `losses.py` averages over the batch, so
XLA inserts the cross-device reductions itself and the result equals the
single-device step up to float summation order. The same code covers several
hosts once `jax.distributed.initialize` has made `jax.devices()` global.
"""

import functools
from typing import Any, Optional, Sequence, Tuple

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from wpo_agent import config as config_lib
from wpo_agent import learning
from wpo_agent import networks as networks_lib


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  return Mesh(np.asarray(devices if devices is not None else jax.devices()),
              ('data',))


def make_sharded_learner_step(
    networks: networks_lib.WPONetworks,
    config: config_lib.WPOConfig,
    mesh: Mesh,
) -> Tuple[callable, NamedSharding, NamedSharding]:
  """Returns (jitted step, state sharding, batch sharding).

  The batch given to the step is [K, B, ...] with B divisible by the number of
  devices in `mesh`; place it with `jax.device_put(batch, batch_sharding)`.
  """
  num_devices = mesh.devices.size
  if config.batch_size % num_devices:
    raise ValueError(f'batch_size={config.batch_size} is not divisible by the '
                     f'{num_devices} devices of the mesh')
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P(None, 'data'))  # split B of [K, B, ...]
  step = jax.jit(learning.make_learner_step(networks, config),
                 in_shardings=(replicated, batch_sharding),
                 out_shardings=(replicated, replicated),
                 donate_argnums=0)
  return step, replicated, batch_sharding


def make_sampling_learner_step(
    networks: networks_lib.WPONetworks,
    config: config_lib.WPOConfig,
    mesh: Mesh,
    replay,
) -> Tuple[callable, NamedSharding, NamedSharding]:
  """Returns (jitted step(state, replay_state), state sharding, replay
  sharding).

  The device replay (`device_replay.DeviceReplay` over this host's devices)
  is sharded along its device axis and every device draws its B/D of each
  batch from its own shard, so the step gathers no replay data across
  devices; the gradients are averaged over devices as in
  `make_sharded_learner_step`. With several hosts, `mesh` holds every host's
  devices and the step takes the global view of the hosts' buffers
  (`global_view` with the returned replay sharding).
  """
  replicated = NamedSharding(mesh, P())
  replay_sharding = NamedSharding(mesh, P('data'))
  sample = functools.partial(replay.sample, sharding=replay_sharding)
  step = jax.jit(
      learning.make_sampling_learner_step(networks, config, sample),
      in_shardings=(replicated, replay_sharding),
      out_shardings=(replicated, replicated),
      donate_argnums=0)
  return step, replicated, replay_sharding


def global_view(local: Any, sharding: NamedSharding) -> Any:
  """Arrays whose leading axis is split over this process's devices, viewed
  (no copy) as the global arrays of `sharding` over every host's devices."""
  if jax.process_count() == 1:
    return local
  devices = sharding.mesh.devices.size

  def one(x):
    shards = [s.data for s in x.addressable_shards]
    return jax.make_array_from_single_device_arrays(
        (devices,) + x.shape[1:], sharding, shards)
  return jax.tree.map(one, local)
