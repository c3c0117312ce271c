r"""Learning curves and summary tables from run directories.

  python -m wpo_agent.plot RUN_DIR [RUN_DIR ...] --out curve.png \
      [--metric eval_return_mean] [--x actor_steps] [--title TITLE] \
      [--table 10000,50000,100000]

Each RUN_DIR holds the `eval.csv` written by training (columns actor_steps,
learner_steps, eval_return_mean, eval_return_std, wall_time). One line per run,
labelled `domain-task-seedN` from the run's config.json (else the directory
name), with a +-std band when the metric has a `_mean`/`_std` pair. `--table`
prints a markdown table of the metric at fixed actor-step counts (the latest
eval row at or before each count; '-' where a run has not reached it). Bad
inputs give a one-line `error:` on stderr and exit code 2.
"""

import argparse
import csv
import math
import os
import sys
from typing import Dict, List, Optional, Sequence

from wpo_agent import workdir as workdir_lib


class PlotError(Exception):
  """Unusable input: printed as one line by the CLI (exit code 2)."""


def read_eval_csv(run_dir: str) -> Dict[str, List[float]]:
  """Columns of `<run_dir>/eval.csv` as float lists (rows sorted by actor_steps).

  Rows with a non-numeric value in a column give NaN in that column. Raises
  PlotError for a missing directory, a missing file, or a file without rows.
  """
  if not os.path.isdir(run_dir):
    raise PlotError(f'{run_dir}: no such run directory')
  path = workdir_lib.Workdir(run_dir).eval_csv
  if not os.path.isfile(path):
    raise PlotError(f'{run_dir}: no {os.path.basename(path)} (has this run '
                    'evaluated yet?)')
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f))
  if not rows:
    raise PlotError(f'{path}: no evaluation rows')
  columns: Dict[str, List[float]] = {name: [] for name in rows[0]}
  for row in rows:
    for name in columns:
      columns[name].append(_float(row.get(name)))
  if 'actor_steps' in columns:
    order = sorted(range(len(rows)), key=lambda i: columns['actor_steps'][i])
    columns = {k: [v[i] for i in order] for k, v in columns.items()}
  return columns


def _float(text: Optional[str]) -> float:
  try:
    return float(text)
  except (TypeError, ValueError):
    return math.nan


def run_label(run_dir: str) -> str:
  """'domain-task-seedN' from config.json when present, else the dir name."""
  try:
    run = workdir_lib.Workdir(run_dir).read_config()['run']
    return f'{run["domain"]}-{run["task"]}-seed{run["seed"]}'
  except (OSError, ValueError, KeyError, TypeError):
    return os.path.basename(os.path.normpath(run_dir))


def _unique_labels(run_dirs: Sequence[str]) -> List[str]:
  """Run labels; duplicates (same domain/task/seed) fall back to dir names."""
  labels = [run_label(d) for d in run_dirs]
  return [f'{label} ({os.path.basename(os.path.normpath(d))})'
          if labels.count(label) > 1 else label
          for label, d in zip(labels, run_dirs)]


def check_column(columns: Dict[str, List[float]], name: str, run_dir: str):
  if name not in columns:
    raise PlotError(f'{workdir_lib.Workdir(run_dir).eval_csv}: no column '
                    f'{name!r}; columns: '
                    f'{", ".join(columns)}')
  return columns[name]


def value_at(columns: Dict[str, List[float]], step: float,
             metric: str = 'eval_return_mean',
             x: str = 'actor_steps') -> Optional[float]:
  """`metric` of the latest row with `x` <= step.

  None if there is no such row, or if the run has not reached `step` (its last
  row has `x` < step): a run that ended early has no value there.
  """
  if not columns[x] or max(columns[x]) < step:
    return None
  best = None
  for xv, yv in zip(columns[x], columns[metric]):
    if xv <= step and (best is None or xv >= best[0]):
      best = (xv, yv)
  return None if best is None else best[1]


def summary_table(run_dirs: Sequence[str], at_steps: Sequence[int],
                  metric: str = 'eval_return_mean',
                  x: str = 'actor_steps') -> Dict[str, Dict[int, Optional[float]]]:
  """{run label: {step: metric at the latest eval row at or before step}}.

  A step before a run's first evaluation or after its last one maps to None.
  """
  table = {}
  for run_dir, label in zip(run_dirs, _unique_labels(run_dirs)):
    columns = read_eval_csv(run_dir)
    check_column(columns, metric, run_dir)
    check_column(columns, x, run_dir)
    table[label] = {int(s): value_at(columns, s, metric, x) for s in at_steps}
  return table


def format_markdown_table(table: Dict[str, Dict[int, Optional[float]]],
                          x: str = 'actor_steps') -> str:
  steps = sorted({s for row in table.values() for s in row})
  lines = ['| run | ' + ' | '.join(f'{x}={s}' for s in steps) + ' |',
           '|---|' + '---:|' * len(steps)]
  for label, row in table.items():
    cells = ['-' if row.get(s) is None else f'{row[s]:.1f}' for s in steps]
    lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def plot_runs(run_dirs: Sequence[str], out: str,
              metric: str = 'eval_return_mean', x: str = 'actor_steps',
              title: Optional[str] = None) -> str:
  """Writes the curves of `run_dirs` to the image `out`; returns `out`."""
  data = [read_eval_csv(d) for d in run_dirs]  # validate before plotting
  for d, columns in zip(run_dirs, data):
    check_column(columns, metric, d)
    check_column(columns, x, d)
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  many = len(run_dirs) > 6
  fig, ax = plt.subplots(figsize=(11 if many else 8, 5), dpi=100)
  if len(run_dirs) > 10:  # the default cycle repeats after 10 colours
    ax.set_prop_cycle(color=plt.get_cmap('tab20').colors)
  std_name = metric[:-len('_mean')] + '_std' if metric.endswith('_mean') else None
  for columns, label in zip(data, _unique_labels(run_dirs)):
    xs = np.asarray(columns[x])
    ys = np.asarray(columns[metric])
    line, = ax.plot(xs, ys, marker='o' if len(xs) < 30 else None,
                    markersize=3, label=label)
    if std_name in columns:
      std = np.nan_to_num(np.asarray(columns[std_name]))
      ax.fill_between(xs, ys - std, ys + std, color=line.get_color(),
                      alpha=0.2, linewidth=0)
  ax.set_xlabel(x.replace('_', ' '))
  ax.set_ylabel(metric.replace('_', ' '))
  ax.set_title(title or (f'{metric} vs {x}'))
  ax.grid(True, alpha=0.3)
  if many:  # outside the axes, so that it hides no curve
    ax.legend(loc='upper left', bbox_to_anchor=(1.01, 1), fontsize='small')
  else:
    ax.legend(loc='best', fontsize='small')
  ax.ticklabel_format(axis='x', style='sci', scilimits=(0, 4))
  fig.tight_layout()
  out_dir = os.path.dirname(os.path.abspath(out))
  os.makedirs(out_dir, exist_ok=True)
  fig.savefig(out)
  plt.close(fig)
  return out


def parse_steps(text: str, flag: str = '--table') -> List[int]:
  """'10000,5e4' -> [10000, 50000]; PlotError naming `flag` otherwise."""
  try:
    steps = [int(float(s)) for s in text.split(',') if s.strip()]
  except ValueError:
    steps = []
  if not steps or min(steps) < 1:
    raise PlotError(f'{flag} {text!r}: expected comma-separated actor step '
                    'counts >= 1, e.g. 10000,50000,100000')
  return steps


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m wpo_agent.plot',
      description='Plot eval curves (eval.csv) of one or more WPO runs.')
  parser.add_argument('run_dirs', nargs='+', metavar='RUN_DIR')
  parser.add_argument('--out', help='output image, e.g. curve.png')
  parser.add_argument('--metric', default='eval_return_mean')
  parser.add_argument('--x', default='actor_steps')
  parser.add_argument('--title', default=None)
  parser.add_argument('--table', default=None, metavar='STEPS',
                      help='print a markdown table of the metric at these '
                      'comma-separated actor step counts')
  args = parser.parse_args(argv)
  try:
    if args.out is None and args.table is None:
      raise PlotError('nothing to do: give --out FILE.png and/or --table STEPS')
    if args.table is not None:
      table = summary_table(args.run_dirs, parse_steps(args.table),
                            args.metric, args.x)
      print(format_markdown_table(table, args.x))
    if args.out is not None:
      plot_runs(args.run_dirs, args.out, args.metric, args.x, args.title)
      print(f'wrote {args.out}')
  except (PlotError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
