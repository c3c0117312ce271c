"""A replicated task (cartpole-balance-x2, wpo_agent/replicas.py) in the
distributed program as a user runs it (launch/run_local.py, one actor of 2
environments, device replay): to its step limit, where it checkpoints,
evaluates and leaves no process.

One of the program files that conftest.py runs one after another (two
programs at once starve a 2-core machine).
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


def test_a_replicated_task_runs_in_the_program_to_its_limit(tmp_path):
  workdir = str(tmp_path / 'run')
  steps = 800
  proc = subprocess.run(
      [sys.executable, RUN_LOCAL, '--domain=cartpole', '--task=balance-x2',
       '--replica_temperature=0.2', '--config=small', '--num_actors=1',
       '--envs_per_actor=2', f'--max_actor_steps={steps}',
       f'--eval_every={steps}', '--eval_episodes=1', f'--workdir={workdir}',
       '--progress_every=5'] + tiny.flags(),
      env=dict(os.environ, MUJOCO_GL='egl'), capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'Launching WPO on cartpole-balance-x2' in proc.stdout
  assert 'finished' in proc.stdout
  with open(os.path.join(workdir, 'config.json')) as f:
    run = json.load(f)['run']
  assert (run['task'], run['replica_temperature']) == ('balance-x2', 0.2)
  with open(os.path.join(workdir, 'eval.csv')) as f:
    rows = list(csv.DictReader(f))
  assert int(rows[-1]['actor_steps']) >= steps
  # The smooth minimum of rewards in [0, 1], 1000 steps: a return in
  # [0, 1000].
  assert 0 <= float(rows[-1]['eval_return_mean']) <= 1000
  assert os.listdir(os.path.join(workdir, 'checkpoints'))
  assert not programs.processes_logging_to(programs.logs_dir(workdir))
