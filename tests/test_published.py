"""wpo_agent.analysis.published: the published curves and table rows from
per-seed curves, against values computed by hand; the committed files."""

import csv
import math
import os

import numpy as np
import pytest

from wpo_agent.analysis import published
from wpo_agent.analysis import report
from wpo_agent.analysis import results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(REPO, '..', 'shared', 'data', 'dmc_acme_baselines.csv')

# (method, seed): [(env_steps, return)], all on walker-walk.
TINY = {
    ('d4pg', 0): [(36000, 0), (97000, 100), (105000, 200), (500000, 300),
                  (1990000, 800)],
    ('d4pg', 1): [(36000, 10), (100000, 400), (480000, 500),
                  (2000000, 700)],
    ('d4pg', 2): [(40000, 20), (120000, 900)],  # ends short of 500k
    ('dreamerv3', 0): [(100000, 50), (490000, 600)],
    ('dreamerv3', 1): [(100000, 150), (490000, 800)],
}
OLD_ROW = ('SAC (TD-MPC2 results),cheetah,run,1000000,730.1,3.2,std,3,'
           'TD-MPC2,results/sac/cheetah-run.csv,results_file,kept as it is')


def write_tiny(tmp_path):
  source = tmp_path / 'source.csv'
  with open(source, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(published.SOURCE_COLUMNS)
    for (method, seed), points in TINY.items():
      for step, ret in reversed(points):  # out of order: read_source sorts
        writer.writerow([method, 'walker-walk', seed, step, ret])
  baselines = tmp_path / 'baselines.csv'
  baselines.write_text(
      'algorithm,domain,task,actor_steps,return,spread,spread_kind,seeds,'
      'source,location,obtained,note\r\n' + OLD_ROW + '\r\n'
      '"D4PG (Acme, DreamerV3 repo scores)",walker,walk,5,1,,,1,s,l,o,'
      'stale: replaced\r\n')
  curves = tmp_path / 'curves.csv'
  assert published.write(str(source), str(curves), str(baselines)) == (6, 5)
  return curves, baselines


def test_table_rows_are_window_means_over_seeds_by_hand(tmp_path):
  _, baselines = write_tiny(tmp_path)
  with open(baselines, newline='') as f:
    rows = list(csv.DictReader(f))
  assert ','.join(rows[0].values()) == OLD_ROW  # other rows stay, first
  got = [(r['algorithm'], r['actor_steps'], r['return'], r['spread'],
          r['seeds']) for r in rows[1:]]
  d4pg, dreamer = published.METHODS['d4pg'].algorithm, published.METHODS[
      'dreamerv3'].algorithm
  assert got == [
      # 100k: seed 0 averages 97k and 105k -> 150; seed 1 400; seed 2's 120k
      # is outside [90k, 110k]. Std of (150, 400): 250 / sqrt(2).
      (d4pg, '100000', '275.0', '176.8', '2'),
      # 500k: 300 and 500 (480k is inside [450k, 550k]); seed 2 never got
      # there. 1M: no seed has a point in [900k, 1.1M]: no row.
      (d4pg, '500000', '400.0', '141.4', '2'),
      # The end (2M, the largest last step) is no target's: its own row.
      (d4pg, '2000000', '750.0', '70.7', '2'),
      # DreamerV3 ends at 490k, inside 500k's window: no separate end row.
      (dreamer, '100000', '100.0', '70.7', '2'),
      (dreamer, '500000', '700.0', '141.4', '2'),
  ]
  d4pg_row, dreamer_row = rows[1], rows[4]
  assert (d4pg_row['domain'], d4pg_row['task']) == ('walker', 'walk')
  assert published.OLD in d4pg_row['location']
  assert 'scores/data/dmcproprio_d4pg.json.gz' in d4pg_row['location']
  assert '[90,000, 110,000]' in d4pg_row['location']
  assert 'danijar/dreamerv3' in d4pg_row['source']
  assert 'inferred' in d4pg_row['note']
  assert 'Runs end at 120,000-2,000,000' in d4pg_row['note']
  assert 'the runs\' end' in rows[3]['note']
  assert 'agent steps x action repeat' in dreamer_row['note']
  assert published.NEW in dreamer_row['location']
  assert 'ddof=1' in d4pg_row['spread_kind']
  # The report reads them as it reads every baseline.
  b = report.read_baselines(str(baselines))
  assert (b[1].task, b[1].actor_steps, b[1].value) == ('walker-walk', 100000,
                                                        275.0)


def test_bins_cut_at_gaps_and_widths():
  # 104k and 108k are within 5% of the previous step, but 112k is more than
  # 10% above the bin's first (100k); 200k is far from 112k.
  assert published.bins([108000, 100000, 104000, 112000, 200000, 100000]) == [
      (100000, 108000), (112000, 112000), (200000, 200000)]


def test_curves_by_hand_and_read_back(tmp_path):
  curves_path, _ = write_tiny(tmp_path)
  text = curves_path.read_text().splitlines()
  assert text[0] == ','.join(published.CURVE_COLUMNS)
  source = f'danijar/dreamerv3@{published.OLD[:7]}'
  assert text[1:5] == [
      # 36k: seeds 0 and 1 (0, 10). 40k and 120k: seed 2 alone, fewer than
      # half of the 3 seeds: dropped.
      f'd4pg,walker-walk,36000,5.0,7.1,2,{source}',
      # 97k-105k: seed 0's two points (steps 101k, return 150), seed 1's
      # 100k (400): step (101k + 100k) / 2.
      f'd4pg,walker-walk,100500,275.0,176.8,2,{source}',
      f'd4pg,walker-walk,490000,400.0,141.4,2,{source}',
      f'd4pg,walker-walk,1995000,750.0,70.7,2,{source}',
  ]
  got = published.read_curves(str(curves_path), ['dreamerv3', 'd4pg'],
                              ['walker-walk', 'cheetah-run'])
  assert list(got) == ['walker-walk']
  dreamer, d4pg = got['walker-walk']
  assert (dreamer.method, d4pg.method) == ('dreamerv3', 'd4pg')
  assert dreamer.label == 'DreamerV3 published'
  np.testing.assert_array_equal(dreamer.steps, [100000, 490000])
  np.testing.assert_allclose(dreamer.mean, [100, 700])
  np.testing.assert_allclose(dreamer.spread, [70.7, 141.4])
  np.testing.assert_array_equal(d4pg.seeds, [2, 2, 2, 2])
  assert published.read_curves(str(curves_path), ['mpo']) == {}
  # Clipped to our runs' range: steps up to 10% past the limit.
  np.testing.assert_array_equal(published.clip(d4pg, 100000).steps,
                                [36000, 100500])
  np.testing.assert_array_equal(published.clip(d4pg, 91000).steps, [36000])
  assert len(published.clip(d4pg, None).steps) == 4


@pytest.mark.parametrize('text, methods', [
    ('none', []), ('all', list(published.METHODS)),
    ('default', ['mpo', 'dmpo', 'd4pg', 'ddpg']),
    ('MPO, d4pg,mpo', ['mpo', 'd4pg'])])
def test_parse_methods(text, methods):
  assert published.parse_methods(text) == methods


def test_unknown_method_is_one_clear_error():
  with pytest.raises(results.ResultsError) as e:
    published.parse_methods('mpo,sac')
  assert str(e.value) == (
      "--published 'mpo,sac': unknown method sac; choose from d4pg, ddpg, "
      'dmpo, dreamerv3, mpo, ppo_fixhp, or all, default, none')


def test_bad_curves_file(tmp_path):
  with pytest.raises(results.ResultsError, match='none.csv: No such'):
    published.read_curves(str(tmp_path / 'none.csv'))
  path = tmp_path / 'c.csv'
  path.write_text('method,task,env_steps,return,spread,seeds,source\n'
                  'mpo,walker-walk,many,1,,3,s\n')
  with pytest.raises(results.ResultsError, match='line 2: env_steps'):
    published.read_curves(str(path))


def test_committed_files_are_small_complete_and_readable():
  assert os.path.getsize(published.CURVES_CSV) < 300_000
  curves = published.read_curves(published.CURVES_CSV)
  by_method = {}
  for task, cs in curves.items():
    for c in cs:
      by_method.setdefault(c.method, set()).add(task)
      assert np.all(np.diff(c.steps) > 0) and np.all(c.seeds >= 1)
      assert np.all((c.mean >= 0) & (c.mean <= 1000))
  assert {m: len(t) for m, t in by_method.items()} == {
      'mpo': 28, 'dmpo': 28, 'd4pg': 28, 'ddpg': 18, 'dreamerv3': 18,
      'ppo_fixhp': 18}
  rows = report.read_baselines(published.BASELINES_CSV)
  ours = [b for b in rows if b.algorithm in published.ALGORITHMS]
  assert len(rows) - len(ours) >= 30  # the SAC and PPO rows stay
  at_100k = {(b.algorithm, b.task) for b in ours if b.actor_steps == 100000}
  assert len(at_100k) == 3 * 28 + 3 * 18
  # humanoid runs go to 10M: rows at 1M and at the end.
  assert {b.actor_steps for b in ours if b.task == 'humanoid-run' and
          b.algorithm == published.METHODS['mpo'].algorithm} == {
              100000, 500000, 1000000, 10000000}


@pytest.mark.skipif(not os.path.isfile(SHARED),
                    reason='no ../shared/data (a clone without it)')
def test_committed_files_are_what_the_script_writes(tmp_path):
  curves, baselines = tmp_path / 'c.csv', tmp_path / 'b.csv'
  with open(published.BASELINES_CSV, 'rb') as f:
    committed_baselines = f.read()
  baselines.write_bytes(committed_baselines)
  published.write(SHARED, str(curves), str(baselines))
  with open(published.CURVES_CSV, 'rb') as f:
    assert curves.read_bytes() == f.read()
  assert baselines.read_bytes() == committed_baselines
  # One number of the shared README ("near 1e6"): mpo humanoid-run's point
  # nearest 1M is 1.3 on average, its only point in [900k, 1.1M].
  row = [b for b in report.read_baselines(str(baselines))
         if b.task == 'humanoid-run' and b.actor_steps == 1000000 and
         b.algorithm.startswith('MPO')]
  assert math.isclose(row[0].value, 1.3)
