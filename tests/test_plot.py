"""wpo_agent.analysis.plot: curves, the summary table (its values are
results.return_at's), and one-line CLI errors."""

import csv
import json
import os
import subprocess
import sys

import pytest

from wpo_agent.analysis import plot

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = ['actor_steps', 'learner_steps', 'eval_return_mean',
           'eval_return_std', 'wall_time']


def make_run(root, name, rows, seed=None, domain='cartpole', task='swingup'):
  run_dir = os.path.join(str(root), name)
  os.makedirs(run_dir)
  with open(os.path.join(run_dir, 'eval.csv'), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(COLUMNS)
    for actor_steps, ret in rows:
      writer.writerow([actor_steps, 2 * actor_steps, ret, 0.1 * ret,
                       actor_steps / 100])
  if seed is not None:
    with open(os.path.join(run_dir, 'config.json'), 'w') as f:
      json.dump({'run': {'domain': domain, 'task': task, 'seed': seed},
                 'config': {}}, f)
  return run_dir


@pytest.fixture
def runs(tmp_path):
  a = make_run(tmp_path, 'a', [(1000, 10.0), (2000, 50.0), (3000, 120.0)],
               seed=0)
  # Out of order rows are sorted by actor_steps.
  b = make_run(tmp_path, 'b', [(3000, 300.0), (1500, 20.0)], seed=1)
  c = make_run(tmp_path, 'plain_dir', [(500, 1.0)])
  return a, b, c


def test_labels(runs):
  a, b, c = runs
  assert plot.run_label(a) == 'cartpole-swingup-seed0'
  assert plot.run_label(b) == 'cartpole-swingup-seed1'
  assert plot.run_label(c) == 'plain_dir'


def test_summary_table_takes_the_nearest_row_within_ten_percent(runs):
  a, b, c = runs
  table = plot.summary_table([a, b, c], [999, 1600, 2100, 2500, 2900, 10_000])
  # a: rows 1000, 2000, 3000. 999: 1000 is 1 away (<= 99.9). 1600: 2000 is 400
  # away (> 160). 2100: 2000 is 100 away (<= 210). 2500: 2000 and 3000 are
  # 500 away (> 250). 2900: 3000 is 100 away (<= 290), a row after the step.
  assert table['cartpole-swingup-seed0'] == {999: 10.0, 1600: None,
                                             2100: 50.0, 2500: None,
                                             2900: 120.0, 10_000: None}
  # b: rows 1500, 3000. 999: 1500 is 501 away; 1600: 100 away (<= 160).
  assert table['cartpole-swingup-seed1'] == {999: None, 1600: 20.0,
                                             2100: None, 2500: None,
                                             2900: 300.0, 10_000: None}
  assert table['plain_dir'] == {999: None, 1600: None, 2100: None, 2500: None,
                                2900: None, 10_000: None}
  # c: one row at 500. 550 is past the run's end but 50 <= 55 away; 560 is 60
  # > 56 away; 455 is 45 <= 45.5 away, 450 is 50 > 45 away.
  assert plot.summary_table([c], [450, 455, 500, 550, 560])['plain_dir'] == {
      450: None, 455: 1.0, 500: 1.0, 550: 1.0, 560: None}
  text = plot.format_markdown_table(table)
  lines = text.splitlines()
  assert lines[0] == ('| run | actor_steps=999 | actor_steps=1600 | '
                      'actor_steps=2100 | actor_steps=2500 | '
                      'actor_steps=2900 | actor_steps=10000 |')
  assert lines[2] == ('| cartpole-swingup-seed0 | 10.0 | - | 50.0 | - | '
                      '120.0 | - |')
  assert len(lines) == 5


def test_summary_table_tie_goes_to_the_later_row_and_nan_rows_are_skipped(
    tmp_path):
  run = make_run(tmp_path, 'tie', [(900, 1.0), (1100, 2.0), (2000, 3.0),
                                   (2100, float('nan'))])
  # 1000: 900 and 1100 are both 100 away: the later one. 2060: the row at 2100
  # is nearer (40) but not a number; 2000 is 60 away, within 206.
  assert plot.summary_table([run], [1000, 2060])['tie'] == {1000: 2.0,
                                                           2060: 3.0}


def test_duplicate_labels_are_disambiguated(tmp_path):
  dirs = [make_run(tmp_path, name, [(1000, value)], seed=0)
          for name, value in (('first', 1.0), ('second', 2.0), ('third', 3.0))]
  dirs.append(make_run(tmp_path, 'other', [(1000, 4.0)], seed=1))
  table = plot.summary_table(dirs, [1000])
  assert list(table) == ['cartpole-swingup-seed0 (first)',
                         'cartpole-swingup-seed0 (second)',
                         'cartpole-swingup-seed0 (third)',
                         'cartpole-swingup-seed1']
  assert [row[1000] for row in table.values()] == [1.0, 2.0, 3.0, 4.0]


def test_plot_writes_png(runs, tmp_path):
  out = str(tmp_path / 'sub' / 'curve.png')
  assert plot.main(list(runs) + ['--out', out, '--title', 'test']) == 0
  with open(out, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert os.path.getsize(out) > 5000


def test_other_metric(runs, tmp_path):
  out = str(tmp_path / 'wall.png')
  assert plot.main([runs[0], '--out', out, '--metric', 'learner_steps',
                    '--x', 'wall_time']) == 0
  assert os.path.exists(out)


def test_table_flag(runs, capsys):
  assert plot.main([runs[0], runs[1], '--table', '1000,3000']) == 0
  out = capsys.readouterr().out
  assert '| cartpole-swingup-seed0 | 10.0 | 120.0 |' in out
  assert '| cartpole-swingup-seed1 | - | 300.0 |' in out


def _empty_csv(tmp_path):
  run_dir = tmp_path / 'empty'
  run_dir.mkdir()
  (run_dir / 'eval.csv').write_text(','.join(COLUMNS) + '\n')
  return str(run_dir)


def _header_only_nothing(tmp_path):
  run_dir = tmp_path / 'blank'
  run_dir.mkdir()
  (run_dir / 'eval.csv').write_text('')
  return str(run_dir)


def _no_csv(tmp_path):
  run_dir = tmp_path / 'nocsv'
  run_dir.mkdir()
  return str(run_dir)


@pytest.mark.parametrize('make_dir,fragment', [
    (lambda tmp: str(tmp / 'missing'), 'no such run directory'),
    (_no_csv, 'no eval.csv'),
    (_empty_csv, 'no evaluation rows'),
    (_header_only_nothing, 'no evaluation rows'),
], ids=['missing-dir', 'no-csv', 'header-only', 'empty-file'])
def test_bad_run_dirs(tmp_path, capsys, make_dir, fragment):
  run_dir = make_dir(tmp_path)
  out = str(tmp_path / 'x.png')
  assert plot.main([run_dir, '--out', out]) == 2
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and err.startswith('error: ')
  assert fragment in err and run_dir in err
  assert not os.path.exists(out)


def test_bad_metric_and_table(runs, tmp_path, capsys):
  assert plot.main([runs[0], '--out', str(tmp_path / 'x.png'),
                    '--metric', 'nope']) == 2
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and "'nope'" in err
  assert 'eval_return_mean' in err  # lists the available columns
  assert plot.main([runs[0], '--table', '10k']) == 2
  assert capsys.readouterr().err.count('\n') == 1
  assert plot.main([runs[0]]) == 2  # neither --out nor --table
  assert 'nothing to do' in capsys.readouterr().err


def test_module_cli(runs, tmp_path):
  """`python -m wpo_agent.analysis.plot`: exit 2 and one line, no traceback."""
  env = dict(os.environ, MPLBACKEND='Agg')
  proc = subprocess.run(
      [sys.executable, '-m', 'wpo_agent.analysis.plot',
       str(tmp_path / 'missing'), '--out', str(tmp_path / 'x.png')],
      cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().count('\n') == 0
  assert 'Traceback' not in proc.stderr
  out = str(tmp_path / 'ok.png')
  proc = subprocess.run(
      [sys.executable, '-m', 'wpo_agent.analysis.plot', runs[0], runs[1],
       '--out', out, '--table', '3000'],
      cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert os.path.exists(out)
  assert '| cartpole-swingup-seed1 | 300.0 |' in proc.stdout
