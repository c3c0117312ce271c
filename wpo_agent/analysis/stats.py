"""Thin, seeded wrappers of rliable's interval estimates (Agarwal et al. 2021).

The report's statistics, kept apart so that a test can hold each against a
hand-computed value. rliable does the work; these only shape the scores.
"""

import warnings
from typing import NamedTuple, Sequence, Tuple

import numpy as np


class Estimate(NamedTuple):
  value: float  # point estimate
  low: float    # 95% CI
  high: float
  n: int        # runs it rests on


def estimates(score_dict, func, *, reps: int, seed: int):
  """rliable's interval estimates, seeded."""
  from rliable import library as rly  # pylint: disable=g-import-not-at-top
  with warnings.catch_warnings():
    # rliable 1.2.0 hands arch its RandomState as `random_state`, which arch 7
    # still honours but flags as deprecated; the resamples are the same.
    warnings.filterwarnings('ignore', 'random_state is deprecated',
                            FutureWarning)
    return rly.get_interval_estimates(score_dict, func, reps=reps,
                                      random_state=_rng(seed))


def _rng(seed: int) -> np.random.RandomState:
  return np.random.RandomState(seed)


def mean_ci(scores: Sequence[float], *, reps: int, seed: int) -> Estimate:
  """Mean over runs with rliable's percentile-bootstrap 95% CI."""
  x = np.asarray(scores, np.float64)[:, None]  # [runs, 1 task]
  points, cis = estimates({'m': x}, lambda s: np.array([np.mean(s)]),
                           reps=reps, seed=seed)
  return Estimate(float(points['m'][0]), float(cis['m'][0, 0]),
                  float(cis['m'][1, 0]), len(scores))


def iqm_ci(matrix: np.ndarray, *, reps: int, seed: int) -> Estimate:
  """IQM of a [runs, tasks] score matrix with stratified-bootstrap 95% CIs."""
  from rliable import metrics  # pylint: disable=g-import-not-at-top
  points, cis = estimates(
      {'m': matrix}, lambda s: np.array([metrics.aggregate_iqm(s)]),
      reps=reps, seed=seed)
  return Estimate(float(points['m'][0]), float(cis['m'][0, 0]),
                  float(cis['m'][1, 0]), matrix.size)


def performance_profile(matrix: np.ndarray, taus: np.ndarray, *, reps: int,
                        seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """(fraction of runs with score > tau [T], its 95% CI [2, T])."""
  from rliable import library as rly  # pylint: disable=g-import-not-at-top
  # rliable's create_performance_profile takes no random_state; this is its
  # score-distribution profile through the seeded interval estimate.
  points, cis = estimates(
      {'m': matrix}, lambda s: rly.score_distributions(s, taus), reps=reps,
      seed=seed)
  return points['m'], cis['m']
