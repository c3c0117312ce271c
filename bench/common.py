"""What the benchmarks share: flags, setups, interleaved timing, printing.

Benchmarks here run on shared, noisy machines: compare variants only as ratios
measured side by side in one process. `interleave` orders the measurements
A B C A B C ... (round-robin), so that whatever else loads the machine hits
every variant alike; `time_windows` times callables that way in windows of
fixed length and reports per-window rates; `medians` and `ratios` summarise.

Importing this module imports no JAX, reverb or wpo_agent module (the pure-JAX
bench_device_replay.py also runs on hosts without the project's venv); the
setup helpers import what they build.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time
from typing import (Any, Callable, Dict, Hashable, Iterable, Iterator, List,
                    Mapping, Optional, Sequence, Tuple)

import numpy as np

# Make `wpo_agent` importable when run as `python bench/xxx.py` from anywhere.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
# The test oracles (tests/reference) and acme's Adder API over our writer
# (tests/nstep_adder.py) live with the tests.
TESTS = os.path.join(ROOT, 'tests')

from wpo_agent.types import Batch  # noqa: E402  (numpy only)


def tests_on_path() -> None:
  """Makes tests/ importable (`reference.acme_adder`, `nstep_adder`)."""
  if TESTS not in sys.path:
    sys.path.insert(0, TESTS)


# ---------------------------------------------------------------------------
# Flags.


def ints(text: str) -> Tuple[int, ...]:
  """'1,8' -> (1, 8): the type of list-of-integer flags."""
  return tuple(int(x) for x in text.split(',') if x.strip())


# The flags several benchmarks take: name -> (flag, argparse keywords). Each
# means the same in every script; the script gives the default (add_flags).
_FLAGS = {
    'seconds': ('--seconds', dict(type=float)),
    'windows': ('--windows', dict(
        type=int, help='timed windows per variant (median reported)')),
    'repeats': ('--repeats', dict(type=int)),
    'json': ('--json', dict(action='store_true',
                            help='print one JSON line too')),
    'json_file': ('--json', dict(help='write the results here')),
    'obs_dim': ('--obs-dim', dict(type=int)),
    'act_dim': ('--act-dim', dict(type=int)),
    'batch': ('--batch', dict(type=int)),
    'ks': ('--ks', dict(type=ints,
                        help='SGD steps fused per learner call (lax.scan)')),
    'spi': ('--spi', dict(type=float)),
    'learner_rate': ('--learner-rate', dict(
        type=float, help='updates/s whose data need sets the insert rate')),
    'capacity': ('--capacity', dict(type=int)),
    'domain': ('--domain', {}),
    'task': ('--task', {}),
    'domains': ('--domains', dict(help='comma-separated domain:task list')),
    'steps': ('--steps', dict(type=int)),
    'workdir': ('--workdir', {}),
}


def parser(doc: str) -> argparse.ArgumentParser:
  """A parser described by the first line of a script's docstring."""
  return argparse.ArgumentParser(description=doc.strip().split('\n')[0])


def add_flags(p: argparse.ArgumentParser,
              helps: Optional[Mapping[str, str]] = None,
              **defaults) -> argparse.ArgumentParser:
  """Adds the shared flags named in `defaults`, each with that default.

  `helps` replaces the help text of some (what the flag means in a script:
  e.g. --seconds per window or in total). Returns `p`.
  """
  for name, default in defaults.items():
    flag, kwargs = _FLAGS[name]
    kwargs = dict(kwargs, default=default)
    if helps and name in helps:
      kwargs['help'] = helps[name]
    p.add_argument(flag, **kwargs)
  return p


# ---------------------------------------------------------------------------
# Setups: items, random batches, networks, configs.

# The learner benchmarks' sizes: humanoid's observations and actions, and the
# paper's critic (the 'acme' preset with critic_layer_sizes=PAPER_CRITIC).
HUMANOID_OBS, HUMANOID_ACT = 67, 21
PAPER_CRITIC = (512, 512, 256)


def item(obs_dim: int, act_dim: int) -> Batch:
  """One transition of zeros: the item (shapes, float32) of a device replay."""
  return Batch(*(np.zeros(shape, np.float32) for shape in (
      (obs_dim,), (act_dim,), (), (), (obs_dim,))))


def random_batch(rng: np.random.Generator, lead: Sequence[int], obs_dim: int,
                 act_dim: int) -> Batch:
  """Learner input of shape lead + field shape: gaussian observations and
  rewards, actions uniform in [-1, 1], the 5-step discount 0.99^5."""
  lead, f32 = tuple(lead), np.float32
  return Batch(
      observation=rng.standard_normal(lead + (obs_dim,)).astype(f32),
      action=rng.uniform(-1, 1, lead + (act_dim,)).astype(f32),
      reward=rng.standard_normal(lead).astype(f32),
      discount=np.full(lead, 0.99**5, f32),
      next_observation=rng.standard_normal(lead + (obs_dim,)).astype(f32))


def random_chunks(rng: np.random.Generator, count: int, size: int,
                  like: Batch) -> List[Batch]:
  """`count` chunks of `size` gaussian transitions shaped like the item
  `like`: what the device-replay benchmarks add to their buffers."""
  return [Batch(*(rng.normal(size=(size,) + np.shape(x)).astype(np.float32)
                  for x in like))
          for _ in range(count)]


def learner_setup(obs_dim: int, act_dim: int, preset: str = 'acme',
                  **overrides):
  """(config, networks): the preset with `overrides`, and its networks for
  flat observations [obs_dim] and actions [act_dim] in [-1, 1]."""
  # pylint: disable=g-import-not-at-top
  from wpo_agent import config as config_lib
  from wpo_agent import networks as networks_lib
  config = config_lib.make_config(preset, **overrides)
  networks = networks_lib.make_networks(
      obs_dim, -np.ones(act_dim), np.ones(act_dim), **config.network_kwargs())
  return config, networks


def policy_source(spec, policy_layer_sizes=(256, 256, 256)):
  """(policy module, StaticVariableSource of its initial parameters) for an
  acme EnvironmentSpec: an actor's policy, 'acme' preset otherwise."""
  # pylint: disable=g-import-not-at-top
  import jax
  from wpo_agent import acting
  from wpo_agent import config as config_lib
  from wpo_agent import networks as networks_lib
  nets = networks_lib.make_networks_from_spec(
      spec, **config_lib.make_config(
          'acme', policy_layer_sizes=policy_layer_sizes).network_kwargs())
  params, _ = nets.init(jax.random.PRNGKey(0))
  return nets.policy, acting.StaticVariableSource(
      policy=jax.device_get(params))


# ---------------------------------------------------------------------------
# Interleaved timing.


def interleave(names: Iterable[Hashable], rounds: int,
               alternate: bool = False) -> Iterator[Tuple[int, Any]]:
  """(round, name) for every name, round after round: A B A B ...

  With `alternate`, odd rounds go in reverse (A B B A ...), so that no name
  always runs first or right after another one.
  """
  names = list(names)
  for r in range(rounds):
    for name in (names[::-1] if alternate and r % 2 else names):
      yield r, name


def run_window(fn: Callable[[], Any], seconds: float,
               sync: Optional[Callable[[Any], Any]] = None
               ) -> Tuple[int, float, float]:
  """Calls fn() until `seconds` have passed (at least once).

  `sync(last output)` runs before the clock stops (e.g.
  jax.block_until_ready for calls that return before their work is done).
  Returns (calls, wall seconds, process CPU seconds of all threads).
  """
  calls = 0
  t0, c0 = time.perf_counter(), time.process_time()
  while True:
    out = fn()
    calls += 1
    if time.perf_counter() - t0 >= seconds:
      break
  if sync is not None:
    sync(out)
  return calls, time.perf_counter() - t0, time.process_time() - c0


def time_windows(variants: Mapping[str, Tuple[Callable[[], Any], float]],
                 window_s: float, windows: int
                 ) -> Tuple[Dict[str, List[float]], Dict[str, List[float]]]:
  """variants: {name: (fn, units per call)}, fn making one blocking call.

  Windows of `window_s` of each variant in turn (interleave), `windows`
  rounds. Returns (rates, cpu_rates): rates[name], units per wall second,
  one per window; cpu_rates[name], units per second of process CPU time (all
  threads), steadier than wall time on a shared machine.
  """
  rates = {name: [] for name in variants}
  cpu_rates = {name: [] for name in variants}
  for _, name in interleave(variants, windows):
    fn, units = variants[name]
    calls, wall, cpu = run_window(fn, window_s)
    rates[name].append(calls * units / wall)
    cpu_rates[name].append(calls * units / cpu)
  return rates, cpu_rates


def median(xs: Sequence[float]) -> float:
  return float(statistics.median(xs)) if xs else float('nan')


def medians(runs: Mapping[Any, Sequence[float]]) -> Dict[Any, float]:
  """{variant: median of its runs}."""
  return {name: median(xs) for name, xs in runs.items()}


def ratios(med: Mapping[str, float],
           pairs: Iterable[Tuple[str, str]]) -> Dict[str, float]:
  """{'a/b': med[a] / med[b]} for the pairs whose both sides were measured."""
  return {f'{a}/{b}': med[a] / med[b] for a, b in pairs
          if a in med and b in med}


def spread(xs: Sequence[float]) -> str:
  """'min..max' of a list, for showing how noisy a median is."""
  if not xs:
    return '-'
  return f'{min(xs):.3g}..{max(xs):.3g}'


# ---------------------------------------------------------------------------
# Machine state and output.


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


def write_json(path: Optional[str], results: Dict[str, Any]) -> None:
  """Writes `results` to `path` (indented), if a path was given."""
  if path:
    with open(path, 'w') as f:
      json.dump(results, f, indent=2)


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
