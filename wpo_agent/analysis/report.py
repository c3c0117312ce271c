r"""Seed-aggregated results of suites, as Agarwal et al. (2021) report them.

  python -m wpo_agent.analysis.report SUITE_DIR [SUITE_DIR ...] [--out DIR] \
      [--steps 10000,50000,100000] [--baselines docs/baselines.csv] \
      [--published default|all|none|mpo,d4pg,...] [--published_range ours|all] \
      [--reps 2000] [--seed 0]

A suite folder is what `launch/run_suite.py` writes: SUITE_DIR/<domain>-<task>/
seed<N>/eval.csv. Each SUITE_DIR is one method (labelled by its folder name), so
two suites run with different `--set`s compare side by side. Written to --out
(default: SUITE_DIR/report for one suite, ./report for several):

- report.md (also printed): per task and method, the mean return over seeds
  with a 95% bootstrap CI at fixed actor steps; across tasks, the interquartile
  mean (IQM) of return / 1000 with stratified-bootstrap 95% CIs; published
  baselines beside ours at their own step counts.
- curves.png: per task, the mean over seeds with its 95% bootstrap band, and
  the baselines (a marker inside the plotted range, a dashed line beyond it);
  with --published (default: mpo,dmpo,d4pg,ddpg), the published curves of the
  task (docs/published_curves.csv, `published`): mean and +-std band over
  seeds, dashed, up to 10% past our last evaluation of the task
  (--published_range=all: in full). The baselines.csv rows those curves came
  from are in the table, not marked in the figure.
- profile.png: performance profiles (fraction of runs with return / 1000 > tau)
  with 95% CIs at the last step every method reached.

The statistics are rliable's (the paper's own library); this module only
arranges scores for it. A run's return at step S is `results.return_at`'s (as
in plot's table): its evaluation nearest to S within +-10% of S (a distributed
evaluator lands near, not on, its schedule); runs without one are left out
there. The `final` column is each run's last evaluation, which is where a
budget-stopped run reports its end.
"""

import argparse
import csv
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from wpo_agent.analysis import published as published_lib
from wpo_agent.analysis import results
from wpo_agent.analysis import stats
from wpo_agent.analysis.results import FINAL, Baseline, Step, SuiteData
from wpo_agent.analysis.stats import Estimate

MAX_RETURN = 1000.0  # every Control Suite task's return lies in [0, 1000]
BASELINE_COLUMNS = ('algorithm', 'domain', 'task', 'actor_steps', 'return',
                    'source')
MIXTURE_COLUMN = 'mix_weight_0'  # in train.csv: a mixture policy's run


class ReportError(results.ResultsError):
  """Unusable input: printed as one line by the CLI (exit code 2)."""


def scores_at(runs: Dict[int, results.Columns], step: Step
              ) -> Dict[int, float]:
  """{seed: eval return at `step`} for the runs that have one there."""
  out = {}
  for seed, columns in sorted(runs.items()):
    value = results.return_at(columns, step)
    if value is not None:
      out[seed] = value
  return out


def score_matrix(data: SuiteData, tasks: Sequence[str], step: Step
                 ) -> Optional[np.ndarray]:
  """[runs, tasks] of return / 1000 at `step`, over seeds every task has there.

  Stratified bootstrap needs the same number of runs per task; seeds missing
  from any task are dropped. None if some task has no run at `step`.
  """
  per_task = [scores_at(data.get(task, {}), step) for task in tasks]
  seeds = sorted(set.intersection(*(set(s) for s in per_task)))
  if not seeds:
    return None
  return np.array([[s[seed] for s in per_task] for seed in seeds]) / MAX_RETURN


def read_baselines(path: str) -> List[Baseline]:
  """Rows of a baselines CSV (docs/baselines.csv's columns)."""
  try:
    with open(path, newline='') as f:
      rows = list(csv.DictReader(f))
  except OSError as e:
    raise ReportError(f'--baselines {path}: {e.strerror}') from None
  if rows and not set(BASELINE_COLUMNS) <= set(rows[0]):
    raise ReportError(f'--baselines {path}: needs the columns '
                      f'{", ".join(BASELINE_COLUMNS)}')
  out = []
  for line, row in enumerate(rows, start=2):
    try:
      out.append(Baseline(row['algorithm'], f'{row["domain"]}-{row["task"]}',
                          int(float(row['actor_steps'])), float(row['return']),
                          row['source']))
    except (TypeError, ValueError):
      raise ReportError(f'--baselines {path}, line {line}: actor_steps and '
                        'return must be numbers') from None
  return out


def _cell(e: Optional[Estimate]) -> str:
  if e is None:
    return '-'
  if e.n == 1:
    return f'{e.value:.1f} (1 seed)'
  return f'{e.value:.1f} [{e.low:.1f}, {e.high:.1f}]'


def task_table(methods: Dict[str, SuiteData], tasks: Sequence[str],
               steps: Sequence[Step], *, reps: int, seed: int) -> str:
  """Markdown: mean return over seeds [95% CI] per (task, method) and step."""
  lines = ['| task | method | seeds | ' +
           ' | '.join(results.step_name(s) for s in steps) + ' |',
           '|---|---|---:|' + '---:|' * len(steps)]
  for task in tasks:
    for name, data in methods.items():
      runs = data.get(task, {})
      cells = []
      for step in steps:
        scores = list(scores_at(runs, step).values())
        cells.append(_cell(stats.mean_ci(scores, reps=reps, seed=seed)
                           if scores else None))
      lines.append(f'| {task} | {name} | {len(runs)} | ' + ' | '.join(cells)
                   + ' |')
  return '\n'.join(lines)


def iqm_table(methods: Dict[str, SuiteData], tasks: Sequence[str],
              steps: Sequence[Step], *, reps: int, seed: int) -> str:
  """Markdown: IQM of return / 1000 over all (run, task) [95% CI]."""
  lines = ['| method | ' +
           ' | '.join(results.step_name(s) for s in steps) + ' |',
           '|---|' + '---:|' * len(steps)]
  for name, data in methods.items():
    cells = []
    for step in steps:
      m = score_matrix(data, tasks, step)
      cells.append('-' if m is None else
                   f'{_iqm_cell(stats.iqm_ci(m, reps=reps, seed=seed), m)}')
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _iqm_cell(e: Estimate, m: np.ndarray) -> str:
  return (f'{e.value:.3f} [{e.low:.3f}, {e.high:.3f}] '
          f'({m.shape[0]}x{m.shape[1]})')


def baseline_table(methods: Dict[str, SuiteData],
                   baselines: Sequence[Baseline], *, reps: int,
                   seed: int) -> str:
  """Markdown: each baseline beside every method at the baseline's steps."""
  lines = ['| task | baseline | at steps | its return | method | ours | '
           'ours - baseline |', '|---|---|---:|---:|---|---:|---:|']
  for b in sorted(baselines, key=lambda b: (b.task, b.actor_steps)):
    for name, data in methods.items():
      runs = data.get(b.task)
      if not runs:
        continue
      scores = list(scores_at(runs, b.actor_steps).values())
      if scores:
        ours = stats.mean_ci(scores, reps=reps, seed=seed)
        cells = [_cell(ours), f'{ours.value - b.value:+.1f}']
      else:
        reached = max(max(c['actor_steps']) for c in runs.values())
        cells = [f'not reached (max {reached:,.0f} steps)', '-']
      lines.append(f'| {b.task} | {b.algorithm} | {b.actor_steps:,} | '
                   f'{b.value:.1f} | {name} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def method_names(suite_dirs: Sequence[str]) -> List[str]:
  """Folder names; the full paths where two suites share a folder name."""
  names = [os.path.basename(os.path.normpath(d)) for d in suite_dirs]
  return [os.path.normpath(d) if names.count(n) > 1 else n
          for n, d in zip(names, suite_dirs)]


def default_steps(methods: Dict[str, SuiteData]) -> List[int]:
  """Up to 5 distinct evaluation steps spread over the longest run."""
  evals = results.distinct_steps(s for data in methods.values()
                                 for runs in data.values()
                                 for c in runs.values()
                                 for s in c['actor_steps'])
  if not evals:
    raise ReportError('no evaluation after step 0 in any run yet')
  picks = np.linspace(0, len(evals) - 1, min(5, len(evals))).round()
  return sorted({evals[int(i)] for i in picks})


def last_step(methods: Dict[str, SuiteData], task: str) -> Optional[float]:
  """The largest evaluation step of any run of `task`; None without one."""
  found = [s for data in methods.values() for c in data.get(task, {}).values()
           for s in c['actor_steps'] if np.isfinite(s)]
  return max(found) if found else None


def published_curves(methods: Dict[str, SuiteData], tasks: Sequence[str],
                     names: Sequence[str], path: Optional[str] = None,
                     x_range: str = 'ours'
                     ) -> Tuple[Dict[str, List[published_lib.Curve]], str]:
  """The published curves of `names` on `tasks` as drawn ({task: [Curve]},
  clipped to our runs' range unless x_range 'all'), and report.md's section
  listing them ('' without `names`)."""
  if x_range not in ('ours', 'all'):
    raise ReportError(f'--published_range {x_range!r}: expected ours or all')
  if not names:
    return {}, ''
  found = published_lib.read_curves(path or published_lib.CURVES_CSV, names,
                                    tasks)
  drawn: Dict[str, List[published_lib.Curve]] = {}
  lines = ['| task | published | seeds | its steps | drawn here |',
           '|---|---|---:|---|---|']
  for task in tasks:
    limit = last_step(methods, task) if x_range == 'ours' else None
    for full in found.get(task, []):
      c = published_lib.clip(full, limit)
      if len(c.steps):
        drawn.setdefault(task, []).append(c)
        shown = (f'{c.steps[0]:,.0f}-{c.steps[-1]:,.0f} '
                 f'({len(c.steps)} points)')
      else:
        shown = f'none (first at {full.steps[0]:,.0f})'
      lines.append(f'| {task} | {c.label} | {int(full.seeds.max())} | '
                   f'{full.steps[0]:,.0f}-{full.steps[-1]:,.0f} | {shown} |')
  missing = [t for t in tasks if t not in found]
  text = '\n\n'.join(
      ['## Published curves (curves.png: dashed, mean +- std over seeds)',
       'Learning curves stored in the DreamerV3 repository (github.com/'
       f'danijar/dreamerv3) for {", ".join(names)}: not our runs. From '
       'docs/published_curves.csv (sources, binning and caveats: '
       'wpo_agent/analysis/published.py; their returns at fixed steps are in '
       'the baselines table). Their x is the source\'s env steps: '
       'environment steps for DreamerV3; for the others the unit is inferred, '
       'not stated. Drawn ' + ('up to 10% past our last evaluation of each '
                               'task.' if x_range == 'ours' else 'in full.')]
      + ([f'No published curve of these methods for: {", ".join(missing)}.']
         if missing else [])
      + (['\n'.join(lines)] if len(lines) > 2 else []))
  return drawn, text


def write_report(suite_dirs: Sequence[str], out_dir: str, *,
                 steps: Optional[Sequence[int]] = None,
                 baselines_path: Optional[str] = None,
                 published: Sequence[str] = published_lib.DEFAULT,
                 published_path: Optional[str] = None,
                 published_range: str = 'ours', reps: int = 2000,
                 seed: int = 0) -> Tuple[str, List[str]]:
  """Writes report.md, curves.png and profile.png.

  `published`: the methods (published.METHODS) whose curves curves.png draws,
  read from `published_path` (default docs/published_curves.csv); none if
  empty. Returns report.md's text and the paths written. No profile.png
  without a step that every task of every method reached.
  """
  methods = {name: results.load_suite(d)
             for name, d in zip(method_names(suite_dirs), suite_dirs)}
  tasks = sorted({t for data in methods.values() for t in data})
  steps = sorted(steps or default_steps(methods)) + [FINAL]
  baselines = [b for b in (read_baselines(baselines_path)
                           if baselines_path else []) if b.task in tasks]
  curves, curves_text = published_curves(methods, tasks, published,
                                         published_path, published_range)
  kw = dict(reps=reps, seed=seed)
  parts = [
      f'# Report: {", ".join(methods)}',
      f'{len(tasks)} tasks. Return: mean over seeds of each run\'s evaluation '
      'return (deterministic policy), with a 95% percentile-bootstrap CI over '
      f'seeds ({reps} resamples, rliable).',
      '## Return at fixed actor steps', task_table(methods, tasks, steps, **kw),
      '## Across tasks: IQM of return / 1000',
      'Stratified bootstrap over runs within tasks (rliable), 95% CI; '
      '(runs x tasks) it rests on. Only seeds every task has at that step; '
      'with one seed per task there is nothing to resample and the CI is the '
      'point.',
      iqm_table(methods, tasks, steps, **kw)]
  if baselines:
    parts += ['## Published baselines (docs/baselines.csv: sources there)',
              baseline_table(methods, baselines, **kw)]
  if curves_text:
    parts.append(curves_text)
  os.makedirs(out_dir, exist_ok=True)
  # Rows the published curves came from: drawn as curves (if asked), not marks.
  marked = [b for b in baselines if b.algorithm not in published_lib.ALGORITHMS]
  figures, notes = _write_figures(methods, suite_dirs, tasks, steps, marked,
                                  curves, out_dir, **kw)
  text = '\n\n'.join(parts + notes) + '\n'
  path = os.path.join(out_dir, 'report.md')
  with open(path, 'w') as f:
    f.write(text)
  return text, [path] + figures


def _write_figures(methods, suite_dirs, tasks, steps, baselines, curves,
                   out_dir, *, reps: int,
                   seed: int) -> Tuple[List[str], List[str]]:
  """Writes curves.png, and components.png and profile.png where they apply;
  returns their paths and report.md's paragraphs about them."""
  # pylint: disable-next=g-import-not-at-top
  from wpo_agent.analysis import report_plots  # matplotlib: figures only
  kw = dict(reps=reps, seed=seed)
  written = [os.path.join(out_dir, 'curves.png')]
  notes = []
  report_plots.plot_curves(methods, tasks, baselines, written[0],
                           published=curves, **kw)
  profile_step = _last_common_step(methods, tasks, steps)
  profile_path = os.path.join(out_dir, 'profile.png')
  components_path = os.path.join(out_dir, 'components.png')
  for stale in (profile_path, components_path):  # never an older run's figure
    if os.path.exists(stale):
      os.remove(stale)
  mixtures = _mixture_runs(methods, suite_dirs)
  if mixtures:
    report_plots.plot_components(mixtures, components_path)
    written.append(components_path)
    notes.append('Mixture policies: their components over training in '
                 'components.png.')
  if profile_step is not None:
    report_plots.plot_profiles(
        {name: score_matrix(data, tasks, profile_step)
         for name, data in methods.items()}, profile_step, profile_path, **kw)
    written.append(profile_path)
    notes.append(f'Performance profile at {results.where(profile_step)}: '
                 'profile.png. Curves: curves.png.')
  return written, notes


def _mixture_runs(methods, suite_dirs):
  """{'<method> <task>': [train.csv columns per seed]} of mixture runs (those
  whose train.csv has the mixture's columns)."""
  out = {}
  for (name, data), suite_dir in zip(methods.items(), suite_dirs):
    for task, runs in sorted(data.items()):
      found = [results.read_train_csv(results.run_dir(suite_dir, task, seed))
               for seed in sorted(runs)]
      found = [t for t in found if t is not None and MIXTURE_COLUMN in t]
      if found:
        out[f'{name} {task}'] = found
  return out


def _last_common_step(methods, tasks, steps) -> Optional[Step]:
  """The last table step with a score matrix for every method, else final."""
  numeric = [s for s in steps if s != FINAL]
  for step in list(reversed(numeric)) + [FINAL]:
    if all(score_matrix(data, tasks, step) is not None
           for data in methods.values()):
      return step
  return None


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = results.arg_parser(
      'report', 'Seed-aggregated tables and plots of one or more suites.',
      'SUITE_DIR')
  parser.add_argument('--out', help='output folder (default: SUITE_DIR/report '
                      'for one suite, ./report for several)')
  parser.add_argument('--steps', help='comma-separated actor steps for the '
                      'tables (default: 5 evaluation steps up to the last)')
  parser.add_argument('--baselines', help='CSV of published returns, e.g. '
                      'docs/baselines.csv')
  parser.add_argument(
      '--published', default='default',
      help='published curves drawn beside ours in curves.png: default '
      f'({",".join(published_lib.DEFAULT)}), all, none, or comma-separated of '
      f'{",".join(sorted(published_lib.METHODS))}')
  parser.add_argument('--published_curves', help='their CSV (default: the '
                      "repository's docs/published_curves.csv)")
  parser.add_argument('--published_range', default='ours',
                      help='ours: draw them up to 10%% past our last '
                      'evaluation of the task (default); all: in full')
  parser.add_argument('--reps', type=int, default=2000,
                      help='bootstrap resamples')
  parser.add_argument('--seed', type=int, default=0, help='bootstrap seed')
  args = parser.parse_args(argv)
  return results.run_cli(lambda: _report(args))


def _report(args: argparse.Namespace) -> None:
  if args.reps < 100:
    raise ReportError(f'--reps={args.reps}: use at least 100 resamples')
  steps = results.parse_steps(args.steps, '--steps') if args.steps else None
  published = published_lib.parse_methods(args.published)
  out = args.out or (os.path.join(args.suite_dirs[0], 'report')
                     if len(args.suite_dirs) == 1 else 'report')
  text, written = write_report(args.suite_dirs, out, steps=steps,
                               baselines_path=args.baselines,
                               published=published,
                               published_path=args.published_curves,
                               published_range=args.published_range,
                               reps=args.reps, seed=args.seed)
  print(text)
  print('wrote ' + ', '.join(written))

if __name__ == '__main__':
  sys.exit(main())
