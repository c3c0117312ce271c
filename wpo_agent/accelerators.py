"""The learner's devices as a launcher sees them: platform, count, free memory.

The device replay is sized against these before a run starts
(`device_replay.check_replay_fits`). A launcher whose learner runs in another
process asks a short subprocess, so that the launcher itself never claims
accelerator memory. Nothing here knows about replay.
"""

import importlib.util
import json
import os
import subprocess
import sys
from typing import Sequence, Tuple

import jax
import psutil

# Packages through which JAX finds accelerators; with none installed (or with
# JAX_PLATFORMS=cpu) the platform is 'cpu' without probing.
_ACCELERATOR_PACKAGES = ('jax_plugins', 'jax_cuda12_plugin', 'libtpu')
_PROBE = ('import json, jax\n'
          'from wpo_agent import accelerators as a\n'
          'devs = jax.local_devices()\n'
          'print(json.dumps([devs[0].platform, len(devs), '
          'a.free_bytes_per_device(devs)]))')


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
  # Same environment as the learner node, so the allocator limit it reports
  # (XLA_PYTHON_CLIENT_MEM_FRACTION etc.) is the learner's; the memory is
  # released when the probe exits.
  out = subprocess.run([sys.executable, '-c', _PROBE], capture_output=True,
                       text=True, timeout=300, check=True)
  platform, count, free = json.loads(out.stdout.strip().splitlines()[-1])
  return platform, int(count), int(free)


def free_bytes_per_device(devices: Sequence[jax.Device]) -> int:
  """Free memory of the most loaded device (host memory / D on CPU)."""
  free = []
  for device in devices:
    stats = device.memory_stats() if device.platform != 'cpu' else None
    if stats and 'bytes_limit' in stats:
      free.append(stats['bytes_limit'] - stats.get('bytes_in_use', 0))
    else:  # CPU devices share the host's memory
      free.append(psutil.virtual_memory().available // len(devices))
  return int(min(free))
