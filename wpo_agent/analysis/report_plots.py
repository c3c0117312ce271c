"""The report's figures: per-task curves with bootstrap bands (and the
published curves beside them), and profiles.

Split from `report` so that its tables can be read without matplotlib; the
statistics are still rliable's. Runs are read, and their return at a step
taken, by `results`; this module does not import `report`.
"""

import math
from typing import Dict, List, Optional, Sequence

import numpy as np

from wpo_agent.analysis import published as published_lib
from wpo_agent.analysis import results
from wpo_agent.analysis import stats

TAUS = np.linspace(0.0, 1.0, 101)  # thresholds on return / 1000
# Published curves (dashed): one colour per method in every panel, from
# Dark2 without its orange (tab10's second, one of ours).
PUBLISHED_COLORS = {'mpo': '#1b9e77', 'dmpo': '#7570b3', 'd4pg': '#e7298a',
                    'ddpg': '#a6761d', 'dreamerv3': '#66a61e',
                    'ppo_fixhp': '#666666'}


def curve(runs: Dict[int, results.Columns], *, reps: int, seed: int
          ) -> Optional[Dict[str, np.ndarray]]:
  """Mean over seeds and its 95% band at the steps every seed reached.

  Returns {'steps' [T], 'mean' [T], 'low' [T], 'high' [T]}, or None when the
  seeds share no evaluation step.
  """
  steps = results.distinct_steps(s for c in runs.values()
                                 for s in c['actor_steps'])
  values = [[results.return_at(c, s) for s in steps] for c in runs.values()]
  keep = [t for t in range(len(steps))
          if all(v[t] is not None for v in values)]
  if not keep:
    return None
  x = np.array([[v[t] for t in keep] for v in values])[:, None, :]  # [S, 1, T]
  points, cis = stats.estimates({'m': x}, lambda s: np.mean(s, axis=0)[0],
                                 reps=reps, seed=seed)
  return {'steps': np.array(steps)[keep], 'mean': points['m'],
          'low': cis['m'][0], 'high': cis['m'][1]}


def plot_curves(methods: Dict[str, results.SuiteData], tasks: Sequence[str],
                baselines: Sequence[results.Baseline], path: str, *, reps: int,
                seed: int,
                published: Optional[Dict[str, List[published_lib.Curve]]] = None
                ) -> Dict[str, List[str]]:
  """Per task: our methods' curves, the `published` curves of the task (as
  given: report.published_curves clips them), the baselines. Returns each
  task's legend labels."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  cols = min(3, len(tasks))
  rows = math.ceil(len(tasks) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows),
                           dpi=100, squeeze=False)
  colors = plt.get_cmap('tab10').colors
  labels: Dict[str, List[str]] = {}
  for ax, task in zip(axes.flat, tasks):
    for i, (name, data) in enumerate(methods.items()):
      runs = data.get(task)
      c = curve(runs, reps=reps, seed=seed) if runs else None
      if c is None:
        continue
      ax.plot(c['steps'], c['mean'], color=colors[i % 10],
              marker='o' if len(c['steps']) < 30 else None, markersize=3,
              label=f'{name} ({len(runs)} seed{"s" * (len(runs) > 1)})')
      ax.fill_between(c['steps'], c['low'], c['high'], color=colors[i % 10],
                      alpha=0.2, linewidth=0)
    for c in (published or {}).get(task, []):
      _draw_published(ax, c)
    _mark_baselines(ax, [b for b in baselines if b.task == task])
    ax.set_ylim(0, max(ax.get_ylim()[1], 10))  # returns are in [0, 1000]
    ax.set_title(task)
    ax.set_xlabel('actor steps')
    ax.set_ylabel('eval return')
    ax.grid(True, alpha=0.3)
    ax.ticklabel_format(axis='x', style='sci', scilimits=(0, 4))
    ax.legend(loc='best', fontsize='x-small')
    labels[task] = ax.get_legend_handles_labels()[1]
  for ax in list(axes.flat)[len(tasks):]:
    ax.axis('off')
  fig.suptitle('Mean over seeds, 95% bootstrap CI (rliable)' +
               ('; published (dashed): mean +- std over seeds'
                if any((published or {}).get(t) for t in tasks) else ''))
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return labels


def _draw_published(ax, c: published_lib.Curve) -> None:
  """A published curve: dashed mean, its +-std band (where > 1 seed)."""
  color = PUBLISHED_COLORS.get(c.method, 'black')
  ax.plot(c.steps, c.mean, color=color, linestyle='--', linewidth=1.2,
          marker='.' if len(c.steps) < 30 else None, markersize=4,
          label=f'{c.label} ({int(c.seeds.max())} seeds, +-std)')
  ax.fill_between(c.steps, c.mean - c.spread, c.mean + c.spread, color=color,
                  alpha=0.12, linewidth=0)


def _mark_baselines(ax, baselines: Sequence[results.Baseline]) -> None:
  """A marker where a baseline's step is in view; else a labelled dashed line.

  Published numbers are mostly at 1M+ steps, far right of short runs; drawing
  them as points there would squash our curves into the left edge.
  """
  right = ax.get_xlim()[1] if ax.lines else 0.0
  for b in baselines:
    label = f'{b.algorithm} @ {b.actor_steps:,.0f}: {b.value:.0f}'
    if b.actor_steps <= right * 1.05:
      ax.plot([b.actor_steps], [b.value], marker='*', markersize=9,
              linestyle='none', color='black', label=label)
    else:
      ax.axhline(b.value, color='grey', linestyle='--', linewidth=0.8)
      ax.annotate(label, (0.01, b.value), xycoords=('axes fraction', 'data'),
                  fontsize='xx-small', color='dimgrey', va='bottom')


def _smooth(y: np.ndarray, window: int = 25) -> np.ndarray:
  """Trailing moving average (train.csv logs every learner call: noisy)."""
  if len(y) < window:
    return y
  c = np.cumsum(np.insert(np.nan_to_num(y), 0, 0.0))
  head = c[1:window] / np.arange(1, window)
  return np.concatenate([head, (c[window:] - c[:-window]) / window])


def plot_components(runs: Dict[str, List[Dict[str, np.ndarray]]], path: str
                    ) -> None:
  """Per task (row): component weights, component spreads, effective K and
  the spread of the component means over training; one line per component and
  seed (components keep their index through training)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(len(runs), 3, figsize=(15, 3.4 * len(runs)),
                           dpi=100, squeeze=False)
  colors = plt.get_cmap('tab10').colors
  for row, (label, seeds) in zip(axes, runs.items()):
    for s, t in enumerate(seeds):
      x = t['actor_steps']
      style = dict(linewidth=1, linestyle=('-', '--', ':', '-.')[s % 4])
      k = 0
      while f'mix_weight_{k}' in t:
        for ax, name in zip(row[:2], ('mix_weight', 'mix_scale')):
          ax.plot(x, _smooth(t[f'{name}_{k}']), color=colors[k % 10],
                  label=f'component {k}' if s == 0 else None, **style)
        k += 1
      row[2].plot(x, _smooth(t['mix_effective_k']), color='black',
                  label='effective K' if s == 0 else None, **style)
      row[2].plot(x, _smooth(t['mix_loc_spread']), color='tab:red',
                  label='std of component means' if s == 0 else None, **style)
    titles = ('mean weight (over states)', 'mean scale (over states, dims)',
              'effective K = exp(entropy of weights); mean spread')
    for ax, title in zip(row, titles):
      ax.set_title(f'{label}: {title}', fontsize='small')
      ax.set_xlabel('actor steps')
      ax.grid(True, alpha=0.3)
      ax.ticklabel_format(axis='x', style='sci', scilimits=(0, 4))
    row[0].legend(fontsize='x-small')
    row[2].legend(fontsize='x-small')
  fig.suptitle('Mixture policy components (train.csv, moving average of 25 '
               'logs; line style = seed)')
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def plot_profiles(matrices: Dict[str, np.ndarray], step: results.Step,
                  path: str, *, reps: int, seed: int) -> None:
  """Score-distribution performance profiles at `step`, rliable's plot."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from rliable import plot_utils  # pylint: disable=g-import-not-at-top

  profiles, cis = {}, {}
  for name, matrix in matrices.items():
    profiles[name], cis[name] = stats.performance_profile(
        matrix, TAUS, reps=reps, seed=seed)
  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
  plot_utils.plot_performance_profiles(
      profiles, TAUS, performance_profile_cis=cis, ax=ax,
      xlabel=r'return / 1000 ($\tau$)', legend=True, labelsize='medium',
      ticklabelsize='medium', legendsize='medium')
  ax.set_title(f'Performance profile at {results.where(step)}\n'
               '(95% stratified-bootstrap CI)', fontsize='medium')
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
