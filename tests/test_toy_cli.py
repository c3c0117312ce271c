"""Tests of the toy CLI, `python -m wpo_agent.analysis.toy` (in-process and one
subprocess)."""

import json
import os
import subprocess
import sys

import pytest

from wpo_agent.analysis import toy

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gaussian_json_in_process(capsys):
  code = toy.main(['gaussian', '--mu', '2', '--sigma', '0.5', '--k', '3',
                   '--a-star', '-1', '--samples', '50000', '--seed', '7',
                   '--json'])
  assert code == 0
  out = json.loads(capsys.readouterr().out)  # exactly one JSON object
  assert out['expected_delta_mu'] == pytest.approx(-9.0)   # -k (mu - a*)
  assert out['expected_delta_sigma'] == pytest.approx(-1.5)  # -k sigma
  assert out['delta_mu'] == pytest.approx(-9.0, abs=5 * out['stderr_mu'])
  assert out['delta_sigma'] == pytest.approx(-1.5, abs=5 * out['stderr_sigma'])
  assert out['fisher'] is True and out['samples'] == 50000


def test_gaussian_no_fisher_table(capsys):
  assert toy.main(['gaussian', '--no-fisher', '--samples', '50000']) == 0
  out = capsys.readouterr().out
  assert 'fisher = False' in out
  # Closed form without Fisher at mu = sigma = k = 1: (-1, -2).
  rows = {line.split()[0]: [float(x) for x in line.split()[1:]]
          for line in out.splitlines() if line.startswith('delta_')}
  assert rows['delta_mu'][1] == pytest.approx(-1.0)
  assert rows['delta_sigma'][1] == pytest.approx(-2.0)
  assert rows['delta_sigma'][0] == pytest.approx(-2.0, abs=5 * rows['delta_sigma'][2])


def test_gaussian_json_subprocess():
  env = dict(os.environ, MUJOCO_GL='egl', JAX_PLATFORMS='cpu')
  proc = subprocess.run(
      [sys.executable, '-m', 'wpo_agent.analysis.toy', 'gaussian', '--mu', '1',
       '--sigma', '1', '--k', '1', '--a-star', '0', '--samples', '100000',
       '--json'], cwd=_REPO, env=env, capture_output=True, text=True,
      timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr
  out = json.loads(proc.stdout)
  for key in ('delta_mu', 'delta_sigma', 'expected_delta_mu',
              'expected_delta_sigma'):
    assert key in out
  assert out['expected_delta_mu'] == -1.0
  assert out['expected_delta_sigma'] == -1.0
  assert out['delta_mu'] == pytest.approx(-1.0, abs=0.02)
  assert out['delta_sigma'] == pytest.approx(-1.0, abs=0.02)


@pytest.mark.parametrize('argv', [
    ['gaussian', '--sigma', '0'],
    ['gaussian', '--sigma', '-1'],
    ['gaussian', '--samples', '0'],
    ['gaussian', '--samples', '2.5'],
    ['gaussian', '--mu', 'nan'],
    ['gaussian', '--k', 'abc'],
    ['mixture', '--steps', '0'],
    ['mixture', '--lr', '0'],
    ['mixture', '--lr', '-0.1'],
    ['mixture', '--batch', '0'],
    ['mixture', '--init-sigma', '0'],
    ['mixture', '--bogus'],
    ['sinusoid'],
    [],
])
def test_invalid_arguments_exit_2_with_one_line(argv, capsys):
  assert toy.main(argv) == 2
  captured = capsys.readouterr()
  assert captured.out == ''
  lines = captured.err.strip().splitlines()
  assert len(lines) == 1, captured.err
  assert 'error' in lines[0] and 'Traceback' not in captured.err


def test_unwritable_plot_path_exits_2(tmp_path, capsys):
  bad = tmp_path / 'missing_dir' / 'fig.png'
  code = toy.main(['mixture', '--steps', '20', '--batch', '64', '--plot',
                   str(bad)])
  assert code == 2
  err = capsys.readouterr().err
  assert len(err.strip().splitlines()) == 1 and 'Traceback' not in err
  assert 'does not exist' in err


def test_help_explains_every_flag(capsys):
  assert toy.main(['gaussian', '--help']) == 0
  text = capsys.readouterr().out
  for flag in ('--mu', '--sigma', '--k', '--a-star', '--samples',
               '--no-fisher', '--seed', '--json'):
    assert flag in text
  assert toy.main(['mixture', '--help']) == 0
  text = capsys.readouterr().out
  for flag in ('--steps', '--lr', '--batch', '--init-sigma', '--seed', '--json',
               '--plot'):
    assert flag in text
  assert toy.main(['--help']) == 0
  assert 'gaussian' in capsys.readouterr().out


def test_mixture_json_and_plot(tmp_path, capsys):
  png = tmp_path / 'fig3.png'
  code = toy.main(['mixture', '--steps', '20', '--batch', '64', '--seed', '1',
                   '--json', '--plot', str(png)])
  assert code == 0
  out = json.loads(capsys.readouterr().out)
  for method in ('wpo', 'pg'):
    assert len(out[method]['loc']) == 2
    assert sum(out[method]['weight']) == pytest.approx(1.0, abs=1e-5)
    # 20 small steps from means -+1 (both methods push them outwards).
    assert out[method]['loc'][0] < -1.0 < 1.0 < out[method]['loc'][1]
  assert out['optimum'] == pytest.approx(50**0.5)
  assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert png.stat().st_size > 10_000


def test_mixture_table(capsys):
  assert toy.main(['mixture', '--steps', '20', '--batch', '64']) == 0
  out = capsys.readouterr().out
  assert out.count('WPO  component') == 2 and out.count('PG   component') == 2
