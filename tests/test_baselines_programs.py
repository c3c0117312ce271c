"""Each baseline (MPO, DDPG, SAC) as a user runs it: in the distributed
program (launch/run_local.py, one actor of 2 environments, device replay) to
its step limit, where it checkpoints, evaluates and leaves no process; a
resume with another algorithm is then refused in one line.

One of the program files that conftest.py runs one after another: beside the
other worker's tests, two programs at once starved the two cores (a CI run
where the two-host learner test lost a host).
"""

import csv
import json
import os
import subprocess
import sys

import pytest

import programs
import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_LOCAL = os.path.join(REPO, 'launch', 'run_local.py')

pytestmark = pytest.mark.slow


def _run(workdir, algorithm, steps):
  cmd = [sys.executable, RUN_LOCAL, '--domain=cartpole', '--task=swingup',
         '--config=small', '--num_actors=1', '--envs_per_actor=2',
         f'--max_actor_steps={steps}', f'--eval_every={steps}',
         '--eval_episodes=1', f'--workdir={workdir}', '--progress_every=5',
         '--set', f'algorithm={algorithm}'] + tiny.flags()
  return subprocess.run(cmd, env=dict(os.environ, MUJOCO_GL='egl'),
                        capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize('algorithm', ['mpo', 'ddpg', 'sac'])
def test_a_baseline_runs_in_the_program_to_its_limit(tmp_path, algorithm):
  workdir = str(tmp_path / 'run')
  proc = _run(workdir, algorithm, 800)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f'Launching {algorithm.upper()} on cartpole-swingup' in proc.stdout
  assert 'finished' in proc.stdout
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['config']['algorithm'] == algorithm
  with open(os.path.join(workdir, 'eval.csv')) as f:
    assert int(list(csv.DictReader(f))[-1]['actor_steps']) >= 800
  with open(os.path.join(workdir, 'train.csv')) as f:
    rows = list(csv.DictReader(f))
  assert rows and float(rows[-1]['critic_loss']) >= 0
  assert os.listdir(os.path.join(workdir, 'checkpoints'))
  assert not programs.processes_logging_to(programs.logs_dir(workdir))

  if algorithm == 'sac':  # once: the same workdir with another algorithm
    proc = _run(workdir, 'wpo', 1600)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "algorithm: saved 'sac', now 'wpo'" in lines[0]
