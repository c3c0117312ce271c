"""Small helpers shared by the benchmarks (timing, memory, table printing).

Benchmarks here run on shared, noisy machines: compare variants only as ratios
measured side by side in one process (interleaved, repeated, median).
"""

import json
import os
import resource
import statistics
import sys
import time
from typing import Any, Dict, List, Sequence

# Make `wpo_agent` importable when run as `python bench/xxx.py` from anywhere.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)


def peak_rss_mb() -> float:
  """Process peak resident set size so far (ru_maxrss is KiB on Linux)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
  try:
    with open('/proc/self/statm') as f:
      pages = int(f.read().split()[1])
    return pages * os.sysconf('SC_PAGE_SIZE') / 2**20
  except (OSError, ValueError, IndexError):
    return float('nan')


def median(xs: Sequence[float]) -> float:
  return float(statistics.median(xs)) if xs else float('nan')


def spread(xs: Sequence[float]) -> str:
  """'min..max' of a list, for showing how noisy a median is."""
  if not xs:
    return '-'
  return f'{min(xs):.3g}..{max(xs):.3g}'


def load_average() -> str:
  try:
    return ' '.join(f'{x:.2f}' for x in os.getloadavg())
  except OSError:
    return '?'


def print_table(headers: List[str], rows: List[List[Any]]) -> None:
  cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
  for n, r in enumerate(cells):
    print('  '.join(c.rjust(w) for c, w in zip(r, widths)))
    if n == 0:
      print('  '.join('-' * w for w in widths))


def _fmt(c: Any) -> str:
  if isinstance(c, float):
    if c != c:  # nan
      return '-'
    if abs(c) >= 100:
      return f'{c:,.0f}'
    if abs(c) >= 10:
      return f'{c:.1f}'
    return f'{c:.3g}'
  return str(c)


def emit_json(record: Dict[str, Any]) -> None:
  print(json.dumps(record, sort_keys=True, default=str))


class Stopwatch:
  """Accumulates seconds per named piece: `with sw('env'): ...`."""

  def __init__(self):
    self.totals: Dict[str, float] = {}
    self._name = None
    self._t0 = 0.0

  def __call__(self, name: str) -> 'Stopwatch':
    self._name = name
    return self

  def __enter__(self):
    self._t0 = time.perf_counter()

  def __exit__(self, *exc):
    dt = time.perf_counter() - self._t0
    self.totals[self._name] = self.totals.get(self._name, 0.0) + dt


# Keep our table lines in order with the C++ (reverb/XLA) logs on stderr.
try:
  sys.stdout.reconfigure(line_buffering=True)
except AttributeError:
  pass
