"""What the program tests share: finding a run's processes independently of
the run's own bookkeeping (its workdir lock, `lifetime.holders`).

Launchpad gives every process of a program LAUNCHPAD_LOGGING_DIR =
WORKDIR/logs (WORKDIR/host_N/logs on host N), and the processes they start
inherit it; that is what identifies them here.
"""

import os
from typing import List

import psutil


def logs_dir(workdir: str, host: int = 0) -> str:
  """Where host `host`'s program logs (the run's workdir for host 0)."""
  return os.path.join(os.path.abspath(workdir),
                      *([f'host_{host}'] if host else []), 'logs')


def processes_logging_to(*logs: str) -> List[psutil.Process]:
  """Live processes whose environment points at one of these log folders."""
  found = []
  for proc in psutil.process_iter():
    try:
      if proc.environ().get('LAUNCHPAD_LOGGING_DIR') in logs:
        found.append(proc)
    except (psutil.Error, OSError):
      continue
  return found
