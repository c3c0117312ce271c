r"""Learning curves and summary tables from run directories.

  python -m wpo_agent.analysis.plot RUN_DIR [RUN_DIR ...] --out curve.png \
      [--metric eval_return_mean] [--x actor_steps] [--title TITLE] \
      [--table 10000,50000,100000]

Each RUN_DIR holds the `eval.csv` written by training (columns actor_steps,
learner_steps, eval_return_mean, eval_return_std, wall_time). One line per run,
labelled `domain-task-seedN` from the run's config.json (else the directory
name), with a +-std band when the metric has a `_mean`/`_std` pair. `--table`
prints a markdown table of the metric at fixed actor-step counts: the
evaluation nearest each count within +-10% of it (`results.return_at`, as in
the report); '-' where a run has none. Bad inputs give a one-line `error:` on
stderr and exit code 2.
"""

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence

from wpo_agent import workdir as workdir_lib
from wpo_agent.analysis import results


class PlotError(results.ResultsError):
  """Unusable input: printed as one line by the CLI (exit code 2)."""


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


def summary_table(run_dirs: Sequence[str], at_steps: Sequence[int],
                  metric: str = 'eval_return_mean',
                  x: str = 'actor_steps') -> Dict[str, Dict[int, Optional[float]]]:
  """{run label: {step: metric at step}}, by `results.return_at`: the
  evaluation nearest to the step within +-10% of it, None where there is none.
  """
  table = {}
  for run_dir, label in zip(run_dirs, _unique_labels(run_dirs)):
    columns = _read(run_dir, metric, x)
    table[label] = {int(s): results.return_at(columns, s, metric, x)
                    for s in at_steps}
  return table


def _read(run_dir: str, metric: str, x: str) -> results.Columns:
  """RUN_DIR's eval.csv columns; ResultsError if `metric` or `x` is absent."""
  columns = results.read_eval_csv(run_dir)
  results.check_column(columns, metric, run_dir)
  results.check_column(columns, x, run_dir)
  return columns


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
  data = [_read(d, metric, x) for d in run_dirs]  # validate before plotting
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


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = results.arg_parser(
      'plot', 'Plot eval curves (eval.csv) of one or more WPO runs.',
      'RUN_DIR')
  parser.add_argument('--out', help='output image, e.g. curve.png')
  parser.add_argument('--metric', default='eval_return_mean')
  parser.add_argument('--x', default='actor_steps')
  parser.add_argument('--title', default=None)
  parser.add_argument('--table', default=None, metavar='STEPS',
                      help='print a markdown table of the metric at these '
                      'comma-separated actor step counts')
  args = parser.parse_args(argv)
  return results.run_cli(lambda: _plot_and_tabulate(args))


def _plot_and_tabulate(args: argparse.Namespace) -> None:
  if args.out is None and args.table is None:
    raise PlotError('nothing to do: give --out FILE.png and/or --table STEPS')
  if args.table is not None:
    table = summary_table(args.run_dirs,
                          results.parse_steps(args.table, '--table'),
                          args.metric, args.x)
    print(format_markdown_table(table, args.x))
  if args.out is not None:
    plot_runs(args.run_dirs, args.out, args.metric, args.x, args.title)
    print(f'wrote {args.out}')

if __name__ == '__main__':
  sys.exit(main())
