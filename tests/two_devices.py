"""Runs a test script on 2 host CPU devices, in a subprocess: the number of
devices is fixed when jax starts (XLA_FLAGS=--xla_force_host_platform_device_count)."""

import os
import subprocess
import sys


def run(script: str) -> str:
  """Runs `script`; it must exit 0 and print OK. Returns its stdout."""
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2',
             JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', script], env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'OK' in out.stdout
  return out.stdout
