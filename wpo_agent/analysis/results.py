"""The one reader of runs' and suites' results, and "the return at step S".

A run's results are the eval.csv and train.csv of its workdir (workdir.py
names them; logs.py writes them). A suite's are those of its runs,
SUITE_DIR/<domain>-<task>/seed<N>, the layout launch/run_suite.py writes.
plot, report and report_plots read them here and take a run's value at a step
from `return_at`, so that plot's table and the report agree about every run.

The step rule is the report's (BUILD_NOTES.md, "The report"): a run's return
at step S is its evaluation nearest to S within +-10% of S. A distributed
evaluator lands near, not on, its schedule (10,000, 10,112 or 10,240 for one
point), so exact steps would miss most runs, and the latest row at or before S
would take the previous evaluation of a run that landed just past S.
"""

import argparse
import csv
import math
import os
import re
import sys
from typing import (Callable, Dict, Iterable, List, NamedTuple, Optional,
                    Union)

import numpy as np

from wpo_agent import workdir as workdir_lib

STEP_TOLERANCE = 0.1  # an evaluation counts for step S within S * (1 +- this)
FINAL = 'final'  # the step name of each run's last evaluation
Step = Union[int, str]  # actor steps, or FINAL

Columns = Dict[str, List[float]]  # eval.csv's columns, in actor-step order
SuiteData = Dict[str, Dict[int, Columns]]  # {task: {seed: eval.csv columns}}

_SEED_DIR = re.compile(r'^seed(\d+)$')


class ResultsError(Exception):
  """Unusable input: one `error:` line and exit code 2 in every analysis CLI."""


class Baseline(NamedTuple):
  """One published return (a row of docs/baselines.csv)."""
  algorithm: str
  task: str  # domain-task
  actor_steps: int
  value: float
  source: str


def _float(text: Optional[str]) -> float:
  try:
    return float(text)
  except (TypeError, ValueError):
    return math.nan


def _read_columns(path: str) -> Columns:
  """A CSV file's columns as floats (NaN where a cell is not a number); {}
  for a file without rows. Raises OSError."""
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f))
  if not rows:
    return {}
  return {name: [_float(row.get(name)) for row in rows] for name in rows[0]}


def read_eval_csv(run_dir: str) -> Columns:
  """Columns of RUN_DIR's eval.csv as float lists, rows sorted by actor_steps.

  A non-numeric value gives NaN in its column. Raises ResultsError for a
  missing directory, a missing file, or a file without rows.
  """
  if not os.path.isdir(run_dir):
    raise ResultsError(f'{run_dir}: no such run directory')
  path = workdir_lib.Workdir(run_dir).eval_csv
  if not os.path.isfile(path):
    raise ResultsError(f'{run_dir}: no {os.path.basename(path)} (has this run '
                       'evaluated yet?)')
  columns = _read_columns(path)
  if not columns:
    raise ResultsError(f'{path}: no evaluation rows')
  if 'actor_steps' in columns:
    steps = columns['actor_steps']
    order = sorted(range(len(steps)), key=lambda i: steps[i])
    columns = {k: [v[i] for i in order] for k, v in columns.items()}
  return columns


def read_train_csv(run_dir: str) -> Optional[Dict[str, np.ndarray]]:
  """RUN_DIR's train.csv as float arrays (NaN where not a number), in the
  order it was logged; None without the file or without rows."""
  try:
    columns = _read_columns(workdir_lib.Workdir(run_dir).train_csv)
  except OSError:
    return None
  return {k: np.array(v) for k, v in columns.items()} or None


def check_column(columns: Columns, name: str, run_dir: str) -> List[float]:
  """columns[name]; ResultsError listing the columns there are if absent."""
  if name not in columns:
    raise ResultsError(f'{workdir_lib.Workdir(run_dir).eval_csv}: no column '
                       f'{name!r}; columns: {", ".join(columns)}')
  return columns[name]


def run_dir(suite_dir: str, task: str, seed: int) -> str:
  """The workdir of `task` (domain-task) and `seed` in a suite folder."""
  return os.path.join(suite_dir, task, f'seed{seed}')


def load_suite(suite_dir: str) -> SuiteData:
  """Every <domain>-<task>/seed<N>/eval.csv under `suite_dir`."""
  if not os.path.isdir(suite_dir):
    raise ResultsError(f'{suite_dir}: no such suite folder')
  data: SuiteData = {}
  for task in sorted(os.listdir(suite_dir)):
    if not os.path.isdir(os.path.join(suite_dir, task)):
      continue
    for name in os.listdir(os.path.join(suite_dir, task)):
      match = _SEED_DIR.match(name)
      if not match:
        continue
      seed = int(match.group(1))
      path = run_dir(suite_dir, task, seed)
      if os.path.isfile(workdir_lib.Workdir(path).eval_csv):
        columns = read_eval_csv(path)
        for column in ('actor_steps', 'eval_return_mean'):
          check_column(columns, column, path)
        data.setdefault(task, {})[seed] = columns
  if not data:
    raise ResultsError(f'{suite_dir}: no <domain>-<task>/seed<N>/eval.csv in '
                       'it (is it a suite folder written by '
                       'launch/run_suite.py?)')
  return data


def return_at(columns: Columns, step: Step, metric: str = 'eval_return_mean',
              x: str = 'actor_steps') -> Optional[float]:
  """A run's `metric` (its eval return) at `step` of `x` (actor steps).

  The value of the row whose `x` is nearest to `step` among the rows within
  STEP_TOLERANCE * step (+-10%) of it; rows where `x` or `metric` is not a
  number are skipped. A tie (rows equally far below and above) goes to the
  later row, the larger `x`. None when no row is within 10%: before a run's
  first evaluation, well past its last one, or in a gap of its schedule; a
  step of 0 takes only a row at exactly 0. `step` FINAL: the last usable row
  (the columns are in actor-step order, as read_eval_csv sorts them), None if
  there is none.
  """
  rows = [(xv, yv) for xv, yv in zip(columns[x], columns[metric])
          if math.isfinite(xv) and math.isfinite(yv)]
  if step == FINAL:
    return rows[-1][1] if rows else None
  near = [(abs(xv - step), -xv, yv) for xv, yv in rows
          if abs(xv - step) <= STEP_TOLERANCE * step]
  return min(near)[2] if near else None


def distinct_steps(steps: Iterable[float]) -> List[int]:
  """Sorted steps > 0, dropping those within the tolerance of the one kept
  before.

  Runs evaluated on one schedule by different processes land at 10,000, 10,112
  and 10,240; a table or curve wants one column or point for them.
  """
  out: List[int] = []
  for s in sorted(int(s) for s in steps if math.isfinite(s) and s > 0):
    if not out or s > out[-1] * (1 + STEP_TOLERANCE):
      out.append(s)
  return out


def step_name(step: Step) -> str:
  """A table's column name for `step`: '10,000' or 'final'."""
  return step if step == FINAL else f'{step:,}'


def where(step: Step) -> str:
  """`step` in prose: '10,000 actor steps' or each run's last evaluation."""
  return ('each run\'s last evaluation' if step == FINAL
          else f'{step:,} actor steps')


def parse_steps(text: str, flag: str) -> List[int]:
  """'10000,5e4' -> [10000, 50000]; ResultsError naming `flag` otherwise."""
  try:
    steps = [int(float(s)) for s in text.split(',') if s.strip()]
  except ValueError:
    steps = []
  if not steps or min(steps) < 1:
    raise ResultsError(f'{flag} {text!r}: expected comma-separated actor step '
                       'counts >= 1, e.g. 10000,50000,100000')
  return steps


def arg_parser(module: str, description: str,
               folder: str) -> argparse.ArgumentParser:
  """The parser of `python -m wpo_agent.analysis.<module>`, whose arguments
  are one or more folders (`folder`: RUN_DIR -> args.run_dirs)."""
  parser = argparse.ArgumentParser(
      prog=f'python -m wpo_agent.analysis.{module}', description=description)
  parser.add_argument(f'{folder.lower()}s', nargs='+', metavar=folder)
  return parser


def run_cli(body: Callable[[], None]) -> int:
  """An analysis CLI's exit code for running `body`: 0, or 2 after one
  `error:` line on stderr for unusable input (ResultsError) or a file that
  cannot be read or written (OSError)."""
  try:
    body()
  except (ResultsError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0
