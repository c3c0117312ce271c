"""Keeps a single-host program's ports off the network: its own network namespace.

Reverb and Launchpad's courier servers listen on every interface with no
authentication, and neither lets us choose the bind address without patching
it. A program started with `unshare --net --map-root-user` runs in a network
namespace of its own that holds only a loopback interface: its nodes reach
each other on 127.0.0.1 and nothing outside the machine (or outside the
namespace) can reach them. Unprivileged user namespaces make this work without
root on most Linux distributions; where they are disabled (some container
runtimes, `kernel.unprivileged_userns_clone=0`) the program runs as before and
the supervisor says so in one line (README, "Security").
"""

import shutil
import subprocess
from typing import List, Optional, Tuple

_UNSHARE = ['unshare', '--net', '--map-root-user']
# The namespace's loopback starts down.
_LO_UP = 'ip link set lo up && exec "$@"'


def isolated(command: List[str]) -> Tuple[List[str], Optional[str]]:
  """(`command` run in a namespace of its own, None), or (`command`, why not)."""
  missing = [tool for tool in ('unshare', 'ip') if shutil.which(tool) is None]
  if missing:
    return command, f'{" and ".join(missing)} not found'
  try:
    probe = subprocess.run(_UNSHARE + ['ip', 'link', 'set', 'lo', 'up'],
                           capture_output=True, text=True, timeout=30)
  except (OSError, subprocess.SubprocessError) as e:
    return command, str(e)
  if probe.returncode != 0:
    why = (probe.stderr.strip().splitlines() or ['unknown error'])[-1]
    return command, f'unshare failed: {why}'
  return _UNSHARE + ['sh', '-c', _LO_UP, 'sh'] + command, None
