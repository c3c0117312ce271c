"""Test helper: a small filesystem to fill, for the disk-full tests.

`mounted(path)` mounts a 1 MiB tmpfs at `path` and yields it (root only:
`mount`), or yields None where it cannot be mounted; `fill(path)` writes a
file there until the disk is full and returns its path.
"""

import contextlib
import os
import subprocess


@contextlib.contextmanager
def mounted(path, size='1m'):
  os.makedirs(path, exist_ok=True)
  made = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}',
                         'tmpfs', str(path)], capture_output=True, check=False)
  if made.returncode:
    yield None
    return
  try:
    yield path
  finally:
    subprocess.run(['umount', '-l', str(path)], check=False)


def fill(disk) -> str:
  path = os.path.join(disk, 'filler')
  with open(path, 'wb') as f:
    try:
      while True:
        f.write(b'\0' * 65536)
        f.flush()
    except OSError:
      pass
  return path
