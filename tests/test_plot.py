"""wpo_agent.plot: curves, the summary table, and one-line CLI errors."""

import csv
import json
import os
import subprocess
import sys

import pytest

from wpo_agent import plot

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


def test_summary_table_nearest_row_at_or_before(runs):
  a, b, c = runs
  table = plot.summary_table([a, b, c], [999, 1000, 2500, 3000, 10_000])
  assert table['cartpole-swingup-seed0'] == {999: None, 1000: 10.0,
                                             2500: 50.0, 3000: 120.0,
                                             10_000: None}
  assert table['cartpole-swingup-seed1'] == {999: None, 1000: None,
                                             2500: 20.0, 3000: 300.0,
                                             10_000: None}
  # A run that has not reached a step count has no value there.
  assert table['plain_dir'] == {999: None, 1000: None, 2500: None, 3000: None,
                                10_000: None}
  assert plot.summary_table([c], [500])['plain_dir'] == {500: 1.0}
  text = plot.format_markdown_table(table)
  lines = text.splitlines()
  assert lines[0] == ('| run | actor_steps=999 | actor_steps=1000 | '
                      'actor_steps=2500 | actor_steps=3000 | '
                      'actor_steps=10000 |')
  assert lines[2] == ('| cartpole-swingup-seed0 | - | 10.0 | 50.0 | 120.0 '
                      '| - |')
  assert len(lines) == 5


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
  """`python -m wpo_agent.plot`: exit 2 and one line, no traceback."""
  env = dict(os.environ, MPLBACKEND='Agg')
  proc = subprocess.run(
      [sys.executable, '-m', 'wpo_agent.plot', str(tmp_path / 'missing'),
       '--out', str(tmp_path / 'x.png')],
      cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().count('\n') == 0
  assert 'Traceback' not in proc.stderr
  out = str(tmp_path / 'ok.png')
  proc = subprocess.run(
      [sys.executable, '-m', 'wpo_agent.plot', runs[0], runs[1], '--out', out,
       '--table', '3000'],
      cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert os.path.exists(out)
  assert '| cartpole-swingup-seed1 | 300.0 |' in proc.stdout
