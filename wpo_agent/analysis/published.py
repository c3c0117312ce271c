r"""Published Control Suite learning curves, beside ours in the report.

D4PG, DMPO and MPO (the Acme family) and DDPG, DreamerV3 and PPO with fixed
hyperparameters, as stored in the DreamerV3 repository (github.com/danijar/
dreamerv3, `scores/`); not our runs. Two committed files come from them, and
the report reads only those (never the shared folder):

- docs/published_curves.csv: per (method, task), mean and spread over seeds on
  a step grid; the report draws it (`--published`).
- docs/baselines.csv: rows "<METHOD> (..., DreamerV3 repo scores)" at 100k,
  500k, 1M env steps and at the runs' end; the report's table lists them.

Regenerate both (other rows of docs/baselines.csv are kept as they are):

  python -m wpo_agent.analysis.published ../shared/data/dmc_acme_baselines.csv

The input is the per-seed curves of ../shared/data (its README: commits, paths,
processing; each run thinned there to <= 20 exact source points). Rules:

- Table rows (WINDOW): a seed's value at step S is the mean of its points with
  env_steps within S * (1 +- 0.1); seeds without one are left out, and a step
  no seed has a point near is skipped. The row is the mean over seeds and the
  sample std (ddof=1) of those per-seed values. The runs' end is the largest
  last step over seeds; its row is written only where it is not within the
  window of 100k, 500k or 1M (runs ending near 500k have their end there).
- Curve grid (BIN_GAP, BIN_WIDTH, MIN_SEED_FRACTION): the union of all seeds'
  steps of a (method, task), sorted, cut into bins where the next step is
  more than 5% above the previous or more than 10% above the bin's first (the
  thinned points of different seeds sit within a few % of each other). A
  seed's value in a bin is the mean of its points there; the bin's step, the
  mean over seeds of the mean step of each seed's points; its return and
  spread, the mean and sample std (ddof=1) over seeds. Bins that fewer than
  half of the seeds have a point in (mostly a few seeds' first points) are
  dropped.

Step semantics (the shared README, "Step semantics"): the x values are
environment steps for DreamerV3 (agent steps x action repeat); for the other
methods the repository does not state the unit, and environment (control)
steps is an inference. Our x axis is actor steps (control steps, no action
repeat).
"""

import argparse
import collections
import csv
import math
import os
import sys
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from wpo_agent.analysis import results

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
CURVES_CSV = os.path.join(REPO, 'docs', 'published_curves.csv')
BASELINES_CSV = os.path.join(REPO, 'docs', 'baselines.csv')
CURVE_COLUMNS = ('method', 'task', 'env_steps', 'return', 'spread', 'seeds',
                 'source')
SOURCE_COLUMNS = ('method', 'task', 'seed', 'env_steps', 'return')

TARGETS = (100_000, 500_000, 1_000_000)  # table rows' steps, and the end
WINDOW = 0.1  # a seed's value at S: mean of its points within S * (1 +- this)
BIN_GAP = 0.05  # a bin ends where the next step is > 5% above the previous
BIN_WIDTH = 0.1  # ... or > 10% above the bin's first step
MIN_SEED_FRACTION = 0.5  # bins with fewer seeds than this fraction: dropped

REPOSITORY = 'github.com/danijar/dreamerv3'
OLD = '423291a9875bb9af43b6db7150aaa972ba889266'  # "Add scores", 2023-05-06
NEW = 'e3f02248693a79dc8b0ebd62c93683888ddaccfe'  # snapshot used, 2026-05-25


class Method(NamedTuple):
  name: str  # short, for legends
  algorithm: str  # docs/baselines.csv's algorithm: never one of our runs
  commit: str
  path: str  # in the repository


METHODS = {
    'mpo': Method('MPO', 'MPO (Acme, DreamerV3 repo scores)', OLD,
                  'scores/data/dmcproprio_mpo.json.gz'),
    'dmpo': Method('DMPO', 'DMPO (Acme, DreamerV3 repo scores)', OLD,
                   'scores/data/dmcproprio_dmpo.json.gz'),
    'd4pg': Method('D4PG', 'D4PG (Acme, DreamerV3 repo scores)', OLD,
                   'scores/data/dmcproprio_d4pg.json.gz'),
    'ddpg': Method('DDPG', 'DDPG (DreamerV3 repo scores)', NEW,
                   'scores/dmc_proprio-ddpg.json.gz'),
    'dreamerv3': Method('DreamerV3', 'DreamerV3 (DreamerV3 repo scores)', NEW,
                        'scores/dmc_proprio-dreamerv3.json.gz'),
    'ppo_fixhp': Method('PPO (fixed hp)',
                        'PPO fixed hyperparameters (DreamerV3 repo scores)',
                        NEW, 'scores/dmc_proprio-ppo_fixhp.json.gz'),
}
DEFAULT = ('mpo', 'dmpo', 'd4pg', 'ddpg')  # the Acme family and DDPG
ALGORITHMS = frozenset(m.algorithm for m in METHODS.values())

Points = List[Tuple[int, float]]  # (env_steps, return), in step order
Runs = Dict[Tuple[str, str], Dict[int, Points]]  # {(method, task): {seed: ..}}


class Curve(NamedTuple):
  """One method's published curve on one task (a docs/published_curves.csv
  block): mean and spread (std over seeds) at each grid step."""
  method: str
  task: str  # domain-task
  steps: np.ndarray
  mean: np.ndarray
  spread: np.ndarray  # NaN where one seed
  seeds: np.ndarray
  source: str

  @property
  def label(self) -> str:
    return f'{METHODS[self.method].name} published' if (
        self.method in METHODS) else f'{self.method} published'


# --- the report's side: read the committed curves --------------------------

def parse_methods(text: str, flag: str = '--published') -> List[str]:
  """'mpo,d4pg' -> ['mpo', 'd4pg']; 'all', 'none' (-> []) or 'default'.

  ResultsError naming `flag` for an unknown name.
  """
  names = [n.strip().lower() for n in text.split(',') if n.strip()]
  if names == ['none']:
    return []
  if names == ['all']:
    return list(METHODS)
  if names == ['default']:
    return list(DEFAULT)
  unknown = [n for n in names if n not in METHODS]
  if unknown or not names:
    raise results.ResultsError(
        f'{flag} {text!r}: unknown method {", ".join(unknown) or "(none)"}; '
        f'choose from {", ".join(sorted(METHODS))}, or all, default, none')
  return list(dict.fromkeys(names))


def read_curves(path: str, methods: Optional[Iterable[str]] = None,
                tasks: Optional[Iterable[str]] = None,
                flag: str = '--published_curves'
                ) -> Dict[str, List[Curve]]:
  """{task: [Curve, in `methods` order]} from a published_curves CSV.

  Only `methods` (default: all in the file) and `tasks` (default: all).
  ResultsError naming `flag` for a missing file, missing columns or a cell
  that is not a number.
  """
  try:
    with open(path, newline='') as f:
      rows = list(csv.DictReader(f))
  except OSError as e:
    raise results.ResultsError(f'{flag} {path}: {e.strerror}') from None
  if rows and not set(CURVE_COLUMNS) <= set(rows[0]):
    raise results.ResultsError(f'{flag} {path}: needs the columns '
                               f'{", ".join(CURVE_COLUMNS)}')
  methods = list(methods) if methods is not None else None
  tasks = set(tasks) if tasks is not None else None
  blocks = collections.OrderedDict()
  for line, row in enumerate(rows, start=2):
    if methods is not None and row['method'] not in methods:
      continue
    if tasks is not None and row['task'] not in tasks:
      continue
    try:
      point = (int(float(row['env_steps'])), float(row['return']),
               float(row['spread']) if row['spread'] else math.nan,
               int(row['seeds']))
    except (TypeError, ValueError):
      raise results.ResultsError(f'{flag} {path}, line {line}: env_steps, '
                                 'return, spread and seeds must be numbers'
                                 ) from None
    blocks.setdefault((row['method'], row['task']),
                      ([], row['source']))[0].append(point)
  out: Dict[str, List[Curve]] = {}
  for (method, task), (points, source) in blocks.items():
    points.sort()
    s, m, sd, n = (np.array(c) for c in zip(*points))
    out.setdefault(task, []).append(Curve(method, task, s, m, sd, n, source))
  order = methods or []
  for curves in out.values():
    curves.sort(key=lambda c: (order.index(c.method) if c.method in order
                               else len(order), c.method))
  return out


def clip(curve: Curve, limit: Optional[float]) -> Curve:
  """The curve's points at steps <= limit * (1 + 10%); all without a limit."""
  if limit is None:
    return curve
  keep = curve.steps <= limit * (1 + results.STEP_TOLERANCE)
  return curve._replace(steps=curve.steps[keep], mean=curve.mean[keep],
                        spread=curve.spread[keep], seeds=curve.seeds[keep])


# --- the derivation: shared per-seed curves -> the two committed files ------

def read_source(path: str) -> Runs:
  """The shared per-seed CSV as {(method, task): {seed: [(step, return)]}}."""
  with open(path, newline='') as f:
    reader = csv.DictReader(f)
    if not set(SOURCE_COLUMNS) <= set(reader.fieldnames or ()):
      raise results.ResultsError(f'{path}: needs the columns '
                                 f'{", ".join(SOURCE_COLUMNS)}')
    runs: Runs = {}
    for row in reader:
      if row['method'] not in METHODS:
        raise results.ResultsError(f'{path}: unknown method {row["method"]!r}'
                                   f' (METHODS in published.py names those '
                                   'with a source)')
      runs.setdefault((row['method'], row['task']), {}).setdefault(
          int(row['seed']), []).append((int(float(row['env_steps'])),
                                        float(row['return'])))
  for seeds in runs.values():
    for points in seeds.values():
      points.sort()
  return runs


def window_values(seeds: Dict[int, Points], step: int) -> Dict[int, float]:
  """{seed: mean return of its points within step * (1 +- WINDOW)}, for the
  seeds that have one."""
  out = {}
  for seed, points in sorted(seeds.items()):
    near = [r for s, r in points if abs(s - step) <= WINDOW * step]
    if near:
      out[seed] = float(np.mean(near))
  return out


def mean_spread(values: Sequence[float]) -> Tuple[float, float]:
  """Mean and sample std (ddof=1; NaN for one value)."""
  v = np.asarray(values, dtype=float)
  return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else math.nan)


def end_step(seeds: Dict[int, Points]) -> int:
  """The runs' end: the largest last step over seeds."""
  return max(points[-1][0] for points in seeds.values())


def table_steps(seeds: Dict[int, Points]) -> List[int]:
  """TARGETS, and the end where it is outside every target's window."""
  end = end_step(seeds)
  return list(TARGETS) + ([end] if all(abs(end - t) > WINDOW * t
                                       for t in TARGETS) else [])


def bins(steps: Iterable[int]) -> List[Tuple[int, int]]:
  """[(first, last)] of the sorted distinct steps, cut where the next step is
  more than BIN_GAP above the previous or BIN_WIDTH above the bin's first."""
  out: List[List[int]] = []
  for s in sorted(set(steps)):
    if out and s <= out[-1][-1] * (1 + BIN_GAP) and (
        s <= out[-1][0] * (1 + BIN_WIDTH)):
      out[-1].append(s)
    else:
      out.append([s])
  return [(b[0], b[-1]) for b in out]


def curve_points(seeds: Dict[int, Points]
                 ) -> List[Tuple[int, float, float, int]]:
  """[(step, mean, spread, seeds)] on the bins of the union of the steps."""
  out = []
  for first, last in bins(s for points in seeds.values() for s, _ in points):
    per_seed = [[(s, r) for s, r in points if first <= s <= last]
                for points in seeds.values()]
    per_seed = [p for p in per_seed if p]
    if len(per_seed) < MIN_SEED_FRACTION * len(seeds):
      continue
    step = np.mean([np.mean([s for s, _ in p]) for p in per_seed])
    mean, spread = mean_spread([np.mean([r for _, r in p]) for p in per_seed])
    out.append((int(round(step)), mean, spread, len(per_seed)))
  return out


def _number(x: float) -> str:
  return '' if math.isnan(x) else f'{x:.1f}'


def _steps_text(x: float) -> str:
  return f'{x:,.0f}'


def semantics(method: str) -> str:
  """The step-semantics caveat of `method`'s rows (the shared README)."""
  if method == 'dreamerv3':
    return ('Steps: env steps = agent steps x action repeat (its logger '
            f'multiplies by the repeat: dreamerv3/main.py l. 155, 179 at '
            f'{NEW[:7]}).')
  return ('Steps: unit and action repeat not stated in the repo; env '
          '(control) steps is inferred (every x a multiple of 1,000; plotted '
          'on one axis with DreamerV3).')


def baseline_rows(runs: Runs) -> List[Dict[str, str]]:
  """docs/baselines.csv rows: per (method, task), at table_steps."""
  out = []
  for (method, task), seeds in sorted(runs.items(),
                                      key=lambda kv: (list(METHODS).index(
                                          kv[0][0]), kv[0][1])):
    m = METHODS[method]
    domain, task_name = task.split('-', 1)
    ends = [points[-1][0] for points in seeds.values()]
    end_text = (_steps_text(min(ends)) if min(ends) == max(ends) else
                f'{_steps_text(min(ends))}-{_steps_text(max(ends))}')
    for step in table_steps(seeds):
      values = window_values(seeds, step)
      if not values:
        continue
      mean, spread = mean_spread(list(values.values()))
      at_end = ' (the runs\' end)' if step not in TARGETS else ''
      window = (f'[{_steps_text(step * (1 - WINDOW))}, '
                f'{_steps_text(step * (1 + WINDOW))}]')
      out.append({
          'algorithm': m.algorithm, 'domain': domain, 'task': task_name,
          'actor_steps': str(step), 'return': _number(mean),
          'spread': _number(spread),
          'spread_kind': ('sample std (ddof=1) across seeds of the per-seed '
                          'window means, computed by us'),
          'seeds': str(len(values)),
          'source': (f'{REPOSITORY} (Hafner et al., DreamerV3 paper): its '
                     'stored baseline scores, via ../shared/data/'
                     'dmc_acme_baselines.csv'),
          'location': (f'{m.path} at commit {m.commit}, runs of {task} '
                       f'(seeds {min(seeds)}-{max(seeds)}), points with env '
                       f'steps in {window}'),
          'obtained': 'results_file',
          'note': (f'Not our runs. Per seed: mean of its points within '
                   f'+-10% of the step{at_end} (1-3 points: curves thinned to '
                   '<= 20 per run); mean over seeds. Runs end at '
                   f'{end_text}. Evaluation or training episodes: not stated. '
                   + semantics(method)),
      })
  return out


def curve_rows(runs: Runs) -> List[Dict[str, str]]:
  """docs/published_curves.csv rows."""
  out = []
  for (method, task), seeds in sorted(runs.items(),
                                      key=lambda kv: (list(METHODS).index(
                                          kv[0][0]), kv[0][1])):
    source = f'danijar/dreamerv3@{METHODS[method].commit[:7]}'
    for step, mean, spread, n in curve_points(seeds):
      out.append({'method': method, 'task': task, 'env_steps': str(step),
                  'return': _number(mean), 'spread': _number(spread),
                  'seeds': str(n), 'source': source})
  return out


def write(source: str, curves_path: str = CURVES_CSV,
          baselines_path: str = BASELINES_CSV) -> Tuple[int, int]:
  """Writes the curves CSV and replaces the DreamerV3-repo rows of the
  baselines CSV (its other rows and columns stay). Returns both row counts."""
  runs = read_source(source)
  curves = curve_rows(runs)
  with open(curves_path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=CURVE_COLUMNS, lineterminator='\n')
    writer.writeheader()
    writer.writerows(curves)
  with open(baselines_path, newline='') as f:
    reader = csv.DictReader(f)
    columns = reader.fieldnames
    kept = [r for r in reader if r['algorithm'] not in ALGORITHMS]
  new = baseline_rows(runs)
  missing = set(new[0]) - set(columns) if new else set()
  if missing:
    raise results.ResultsError(f'{baselines_path}: no column(s) '
                               f'{", ".join(sorted(missing))}')
  with open(baselines_path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=columns)  # csv's \r\n, as it was
    writer.writeheader()
    writer.writerows(kept + new)
  return len(curves), len(new)


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m wpo_agent.analysis.published',
      description='Writes docs/published_curves.csv and the DreamerV3-repo '
      'rows of docs/baselines.csv from the shared per-seed curves.')
  parser.add_argument('source', help='e.g. '
                      '../shared/data/dmc_acme_baselines.csv')
  parser.add_argument('--curves', default=CURVES_CSV)
  parser.add_argument('--baselines', default=BASELINES_CSV)
  args = parser.parse_args(argv)

  def body():
    n_curves, n_rows = write(args.source, args.curves, args.baselines)
    print(f'wrote {n_curves} rows to {args.curves}, {n_rows} rows to '
          f'{args.baselines}')
  return results.run_cli(body)


if __name__ == '__main__':
  sys.exit(main())
