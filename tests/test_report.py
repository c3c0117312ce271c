"""wpo_agent.analysis.report, .results and .stats: rliable against
hand-computed values; one return at a step for plot and report; the CLI."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from wpo_agent.analysis import plot
from wpo_agent.analysis import report
from wpo_agent.analysis import report_plots
from wpo_agent.analysis import results
from wpo_agent.analysis import stats

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = ['actor_steps', 'learner_steps', 'eval_return_mean',
           'eval_return_std', 'wall_time']
REPS = 500


def write_run(suite, task, seed, rows):
  run_dir = os.path.join(str(suite), task, f'seed{seed}')
  os.makedirs(run_dir)
  with open(os.path.join(run_dir, 'eval.csv'), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(COLUMNS)
    for steps, ret in rows:
      writer.writerow([steps, steps // 4, ret, 1.0, steps / 50])


def columns(steps, returns):
  return {'actor_steps': list(map(float, steps)),
          'eval_return_mean': list(map(float, returns))}


def test_return_at_takes_the_nearest_evaluation_within_ten_percent():
  c = columns([0, 9800, 10240, 20000], [1, 2, 3, 4])
  assert results.return_at(c, 10000) == 2       # 200 away beats 240
  assert results.return_at(c, 15000) is None    # nothing within 1,500
  assert results.return_at(c, 22000) == 4       # 2,000 <= 2,200
  assert results.return_at(c, 23000) is None
  assert results.return_at(c, 0) == 1           # step 0: only a row at 0
  assert results.return_at(c, results.FINAL) == 4
  # A tie (100 below, 100 above): the later evaluation.
  assert results.return_at(columns([9900, 10100], [5, 6]), 10000) == 6
  assert results.return_at(columns([5, 10], [7, float('nan')]),
                           results.FINAL) == 7


def test_plot_table_and_report_agree_where_the_old_rules_disagreed(tmp_path):
  # Rows at 40,000 and 50,400, asked at 50,000. plot's old rule (the latest
  # row at or before the step) gave 40,000's 100; the report's (the nearest
  # row within 10%: 5,000) gave 50,400's 200. Both now take results.return_at.
  write_run(tmp_path / 'ours', 'cartpole-swingup', 0,
            [(40000, 100), (50400, 200)])
  table = plot.summary_table(
      [results.run_dir(str(tmp_path / 'ours'), 'cartpole-swingup', 0)],
      [50000])
  assert table == {'seed0': {50000: 200.0}}
  assert plot.format_markdown_table(table).splitlines()[2] == (
      '| seed0 | 200.0 |')
  data = results.load_suite(str(tmp_path / 'ours'))
  assert report.scores_at(data['cartpole-swingup'], 50000) == {0: 200.0}
  assert report.task_table({'ours': data}, ['cartpole-swingup'], [50000],
                           reps=REPS, seed=0).splitlines()[2] == (
                               '| cartpole-swingup | ours | 1 | '
                               '200.0 (1 seed) |')


def test_distinct_steps_merges_one_schedule_seen_by_several_evaluators():
  assert results.distinct_steps(
      [20000, 10112, 0, 10000, 10240, float('nan'), 30500]) == [
          10000, 20000, 30500]


def test_mean_ci_is_the_percentile_bootstrap_of_the_mean():
  # Resampling (0, 1000) gives means 0, 500, 1000 with probabilities 1/4, 1/2,
  # 1/4, so the 2.5% and 97.5% percentiles are 0 and 1000.
  e = stats.mean_ci([0.0, 1000.0], reps=REPS, seed=0)
  assert (e.value, e.low, e.high, e.n) == (500.0, 0.0, 1000.0, 2)
  assert stats.mean_ci([321.0], reps=REPS, seed=0) == (321.0, 321.0, 321.0,
                                                         1)


def test_iqm_point_estimate_and_stratified_ci_by_hand():
  # 8 scores .1 .2 .3 .4 .5 .6 .7 .9: the IQM drops 2 at each end -> mean of
  # .3 .4 .5 .6 = 0.45.
  m = np.array([[.1, .5], [.2, .6], [.3, .7], [.4, .9]])
  e = stats.iqm_ci(m, reps=REPS, seed=0)
  assert e.value == pytest.approx(0.45) and e.n == 8
  assert .1 <= e.low < 0.45 < e.high <= .9
  # Runs agree within each task: resampling runs within tasks (stratified)
  # cannot change anything, so the CI collapses onto the IQM (0.5). Resampling
  # all 8 scores together would not.
  flat = np.array([[.2, .8]] * 4)
  e = stats.iqm_ci(flat, reps=REPS, seed=0)
  assert (e.value, e.low, e.high) == pytest.approx((0.5, 0.5, 0.5))


def test_performance_profile_counts_scores_above_tau():
  m = np.array([[.2, .6], [.9, .4]])
  profile, ci = stats.performance_profile(m, np.array([0., .5, 1.]),
                                           reps=REPS, seed=0)
  np.testing.assert_allclose(profile, [1.0, 0.5, 0.0])
  assert ci.shape == (2, 3)
  np.testing.assert_allclose(ci[:, 0], [1, 1])  # every resample: all > 0
  np.testing.assert_allclose(ci[:, 2], [0, 0])


def test_score_matrix_keeps_the_seeds_every_task_has(tmp_path):
  write_run(tmp_path, 'a-x', 0, [(100, 100)])
  write_run(tmp_path, 'a-x', 1, [(100, 300)])
  write_run(tmp_path, 'b-y', 1, [(100, 500)])
  write_run(tmp_path, 'b-y', 2, [(100, 700)])
  data = results.load_suite(str(tmp_path))
  assert sorted(data) == ['a-x', 'b-y']
  np.testing.assert_allclose(
      report.score_matrix(data, ['a-x', 'b-y'], 100), [[0.3, 0.5]])
  assert report.score_matrix(data, ['a-x', 'b-y'], 200) is None


def test_baselines_beside_ours_at_the_baselines_steps(tmp_path):
  suite = tmp_path / 'ours'
  write_run(suite, 'cheetah-run', 0, [(10000, 50), (20000, 150)])
  write_run(suite, 'cheetah-run', 1, [(10000, 70), (20000, 250)])
  path = tmp_path / 'b.csv'
  path.write_text('algorithm,domain,task,actor_steps,return,source,note\n'
                  'D4PG,cheetah,run,20000,120.5,Someone 2020 Table 1,\n'
                  'MPO,cheetah,run,1000000,800,Other 2021 Fig. 2,read off\n'
                  'MPO,walker,run,1000000,700,Other 2021 Fig. 2,\n')
  baselines = report.read_baselines(str(path))
  assert [b.task for b in baselines] == ['cheetah-run'] * 2 + ['walker-run']
  table = report.baseline_table({'ours': results.load_suite(str(suite))},
                                baselines, reps=REPS, seed=0)
  lines = table.splitlines()
  assert len(lines) == 4  # header, rule, one row per cheetah baseline
  assert lines[2].startswith('| cheetah-run | D4PG | 20,000 | 120.5 | ours | '
                             '200.0 [150.0, 250.0] | +79.5 |')
  assert 'not reached (max 20,000 steps)' in lines[3]


@pytest.mark.parametrize('text, fragment', [
    ('algorithm,domain,task,actor_steps,return,source\nA,b,c,many,1,s\n',
     'line 2: actor_steps and return must be numbers'),
    ('algorithm,task,return\nA,b,1\n', 'needs the columns'),
])
def test_bad_baselines_file(tmp_path, text, fragment):
  path = tmp_path / 'b.csv'
  path.write_text(text)
  with pytest.raises(report.ReportError, match=fragment):
    report.read_baselines(str(path))


def cli(*args, cwd):
  return subprocess.run(
      [sys.executable, '-m', 'wpo_agent.analysis.report', *args],
      capture_output=True, text=True, cwd=cwd, timeout=300,
      env=dict(os.environ, PYTHONPATH=REPO))


def write_mixture_train_csv(run_dir):
  with open(os.path.join(str(run_dir), 'train.csv'), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['actor_steps', 'mix_weight_0', 'mix_weight_1',
                     'mix_scale_0', 'mix_scale_1', 'mix_effective_k',
                     'mix_loc_spread'])
    for step in range(100, 20000, 100):
      writer.writerow([step, 0.3, 0.7, 0.5, 0.4, 1.8, 0.2])


def test_smooth_is_a_trailing_moving_average():
  np.testing.assert_allclose(
      report_plots._smooth(np.array([1., 2., 3., 4.]), window=2),
      [1.0, 1.5, 2.5, 3.5])


def test_cli_compares_two_suites_and_writes_the_report(tmp_path):
  for name, offset in (('gaussian', 0), ('mixture', 100)):
    for seed in (0, 1):
      for task in ('cartpole-swingup', 'walker-walk'):
        write_run(tmp_path / name, task, seed,
                  [(10000, 100 * seed + offset), (20000, 1000 * seed)])
        if name == 'mixture':
          write_mixture_train_csv(tmp_path / name / task / f'seed{seed}')
  proc = cli(str(tmp_path / 'gaussian'), str(tmp_path / 'mixture'),
             '--out', str(tmp_path / 'out'), '--reps', str(REPS), cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr
  text = (tmp_path / 'out' / 'report.md').read_text()
  assert text in proc.stdout
  assert '| task | method | seeds | 10,000 | 20,000 | final |' in text
  # seeds 0/1: 0 and 100 -> 50 [0, 100]; at 20k 0 and 1000 -> 500 [0, 1000].
  assert ('| walker-walk | gaussian | 2 | 50.0 [0.0, 100.0] | '
          '500.0 [0.0, 1000.0] | 500.0 [0.0, 1000.0] |') in text
  assert '| walker-walk | mixture | 2 | 150.0 [100.0, 200.0] |' in text
  # IQM of (0.1, 0.1, 0.2, 0.2) -> 0.15; runs differ, so the CI is wide.
  assert '| mixture | 0.150 [' in text
  for name in ('curves.png', 'profile.png', 'components.png'):
    assert os.path.getsize(tmp_path / 'out' / name) > 10000
  assert 'components.png' in text
  # Gaussian runs (no mix_ columns) get no components figure.
  proc = cli(str(tmp_path / 'gaussian'), '--reps', str(REPS), cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr
  assert not os.path.exists(tmp_path / 'gaussian' / 'report' /
                            'components.png')
  assert os.path.exists(tmp_path / 'gaussian' / 'report' / 'profile.png')


PUBLISHED = ('method,task,env_steps,return,spread,seeds,source\n'
             'mpo,walker-walk,50000,100.0,20.0,10,s\n'
             'mpo,walker-walk,100000,300.0,40.0,10,s\n'
             'mpo,walker-walk,300000,800.0,30.0,10,s\n'
             'dreamerv3,walker-walk,100000,500.0,10.0,5,s\n'
             'ddpg,cheetah-run,100000,200.0,,1,s\n')


def test_report_draws_and_lists_published_curves(tmp_path, monkeypatch):
  drawn = []
  plot = report_plots.plot_curves
  monkeypatch.setattr(report_plots, 'plot_curves', lambda *a, **k: (
      drawn.append((a[2], k['published'])), plot(*a, **k))[1])
  suite = tmp_path / 'ours'
  for seed in (0, 1):
    write_run(suite, 'walker-walk', seed,
              [(s, s / 200 + seed) for s in range(10000, 100001, 10000)])
  curves = tmp_path / 'curves.csv'
  curves.write_text(PUBLISHED)
  baselines = tmp_path / 'b.csv'
  baselines.write_text(
      'algorithm,domain,task,actor_steps,return,source\n'
      '"MPO (Acme, DreamerV3 repo scores)",walker,walk,100000,290,repo\n'
      'SAC,walker,walk,50000,250,paper\n')
  kw = dict(baselines_path=str(baselines), published_path=str(curves),
            reps=REPS, seed=0)
  # Default: the Acme family and DDPG; dreamerv3 is not among them.
  text, written = report.write_report([str(suite)], str(tmp_path / 'out'),
                                      **kw)
  assert os.path.getsize(tmp_path / 'out' / 'curves.png') > 10000
  # Drawn: the MPO curve; marked: SAC only (the MPO row is the curve's).
  marked, curves_drawn = drawn[-1]
  assert [b.algorithm for b in marked] == ['SAC']
  assert [c.method for c in curves_drawn['walker-walk']] == ['mpo']
  assert '## Published curves' in text
  # Our last evaluation is 100k: 300k is beyond 110k, not drawn.
  assert ('| walker-walk | MPO published | 10 | 50,000-300,000 | '
          '50,000-100,000 (2 points) |') in text
  assert 'DreamerV3 published' not in text
  # The baseline row stays in the table.
  assert '| walker-walk | MPO (Acme, DreamerV3 repo scores) | 100,000 |' in text
  text, _ = report.write_report([str(suite)], str(tmp_path / 'all'),
                                published=['dreamerv3', 'mpo'],
                                published_range='all', **kw)
  assert '50,000-300,000 (3 points)' in text
  assert text.index('DreamerV3 published') < text.index('MPO published')
  text, written = report.write_report([str(suite)], str(tmp_path / 'none'),
                                      published=[], **kw)
  assert 'Published curves' not in text
  assert str(tmp_path / 'none' / 'curves.png') in written


def test_plot_curves_draws_and_labels_published_curves(tmp_path):
  suite = tmp_path / 'ours'
  write_run(suite, 'walker-walk', 0, [(50000, 100), (100000, 200)])
  methods = {'ours': results.load_suite(str(suite))}
  curves = tmp_path / 'curves.csv'
  curves.write_text(PUBLISHED)
  drawn, _ = report.published_curves(methods, ['walker-walk'], ['mpo'],
                                     str(curves))
  sac = results.Baseline('SAC', 'walker-walk', 50000, 250.0, 'paper')
  labels = report_plots.plot_curves(
      methods, ['walker-walk'], [sac], str(tmp_path / 'c.png'), reps=REPS,
      seed=0, published=drawn)
  assert labels == {'walker-walk': [
      'ours (1 seed)', 'MPO published (10 seeds, +-std)',
      'SAC @ 50,000: 250']}
  labels = report_plots.plot_curves(
      methods, ['walker-walk'], [], str(tmp_path / 'c.png'), reps=REPS,
      seed=0)
  assert labels == {'walker-walk': ['ours (1 seed)']}


@pytest.mark.parametrize('args, fragment', [
    (['missing'], 'missing: no such suite folder'),
    (['empty'], 'no <domain>-<task>/seed<N>/eval.csv'),
    (['suite', '--steps', '10k'], "--steps '10k': expected comma-separated"),
    (['suite', '--reps', '10'], '--reps=10: use at least 100'),
    (['suite', '--baselines', 'none.csv'], '--baselines none.csv: No such'),
    (['odd'], "eval.csv: no column 'eval_return_mean'"),
    (['suite', '--published', 'mpo,sac'], "--published 'mpo,sac': unknown "
     'method sac; choose from d4pg, ddpg, dmpo, dreamerv3, mpo, ppo_fixhp'),
    (['suite', '--published_curves', 'none.csv'],
     '--published_curves none.csv: No such'),
])
def test_cli_bad_input_is_one_line(tmp_path, args, fragment):
  os.makedirs(tmp_path / 'empty')
  os.makedirs(tmp_path / 'odd' / 'cartpole-swingup' / 'seed0')
  (tmp_path / 'odd' / 'cartpole-swingup' / 'seed0' / 'eval.csv').write_text(
      'actor_steps,return\n1000,5\n')
  write_run(tmp_path / 'suite', 'cartpole-swingup', 0, [(1000, 5)])
  proc = cli(*args, cwd=tmp_path)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr
  assert fragment in lines[0]
