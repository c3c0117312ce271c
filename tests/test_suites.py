"""The suite runner (launch/run_suite.py, wpo_agent.analysis.suites): task
lists, bad input, a real suite stopped (Ctrl-C, then kill -9 of the runner),
resumed and with one failing run."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from wpo_agent.analysis import suites

import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--config=small', '--single_process', '--eval_every=1000',
        '--eval_episodes=1'] + tiny.FLAGS


def run_suite(*args, **kwargs):
  env = dict(os.environ, MUJOCO_GL='egl')
  return subprocess.Popen(
      [sys.executable, os.path.join(REPO, 'launch', 'run_suite.py'), *args],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      **kwargs)


def test_every_named_suite_resolves_to_dm_control_tasks():
  for name, tasks in suites.SUITES.items():
    assert suites.resolve_tasks(name, None) == [
        tuple(t.split('-', 1)) for t in tasks]
  assert suites.resolve_tasks(None, 'ball_in_cup-catch,humanoid_CMU-run') == [
      ('ball_in_cup', 'catch'), ('humanoid_CMU', 'run')]


@pytest.mark.parametrize('args,fragments', [
    (['--suite=nope'], ["'nope'", 'quick', 'hard', 'paper']),
    (['--tasks=cartpole-nope'], ["'nope'", 'swingup', 'balance']),
    (['--tasks=walkerwalk'], ['domain-task']),
    (['--suite=quick', '--tasks=cartpole-swingup'], ['exactly one']),
    (['--suite=quick', '--seeds=0,x'], ['--seeds=0,x', 'distinct integers']),
    (['--suite=quick', '--set=batch_size=0'], ['batch_size=0']),
    (['--suite=quick', '--parallel=0'], ['--parallel=0']),
    (['--tasks=humanoid-stand-x0'], ["'stand-x0'", "'-x0' must be -xK"]),
    (['--suite=fig5', '--replica_temperature=0'],
     ['--replica_temperature=0.0', 'finite number > 0']),
])
def test_bad_input_is_one_line(tmp_path, args, fragments):
  proc = run_suite('--max_actor_steps=100', f'--workdir={tmp_path / "s"}',
                   *args)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 2, err
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), err
  for fragment in fragments:
    assert fragment in lines[0]
  assert not os.path.exists(tmp_path / 's')


def _final_table(out, rows=2):
  """The last status table's rows (the report's line comes after it)."""
  lines = [line for line in out.strip().splitlines()
           if not line.startswith(('Report: ', 'No report: '))]
  return lines[-rows:]


def _wait_for(path, timeout=240):
  deadline = time.time() + timeout
  while not os.path.exists(path):
    assert time.time() < deadline, f'no {path} after {timeout} s'
    time.sleep(0.2)


def _wait_until(condition, message, timeout=240):
  deadline = time.time() + timeout
  while not condition():
    assert time.time() < deadline, f'{message} after {timeout} s'
    time.sleep(0.2)


def _after_resume(run):
  """The run's log from its last resume on."""
  return (run / 'suite_run.log').read_text().rpartition('Resumed from')[2]


def _wait_for_text(path, text, timeout=240, count=1):
  deadline = time.time() + timeout
  while not (os.path.exists(path) and path.read_text().count(text) >= count):
    assert time.time() < deadline, f'no {text!r} in {path} after {timeout} s'
    time.sleep(0.2)


@pytest.mark.slow
def test_suite_stops_on_ctrl_c_resumes_and_reports_a_failed_run(tmp_path):
  root = tmp_path / 'suite'
  common = ['--tasks=cartpole-swingup,cartpole-balance', '--seeds=0',
            '--parallel=2', f'--workdir={root}', '--status_every=1000'] + TINY
  args = ['--max_actor_steps=4000'] + common
  runs = [root / 'cartpole-swingup' / 'seed0', root / 'cartpole-balance' /
          'seed0']
  proc = run_suite(*args)
  for run in runs:  # both are learning
    _wait_for(run / 'train.csv')
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=180)
  assert proc.returncode == 0, out + err
  assert 'Stopping' in out
  final = _final_table(out)
  assert all(line.split()[-1] == 'stopped' for line in final), out
  assert 'Report: ' not in out  # a stopped suite is not done
  steps = [suites.checkpointed_steps(str(r)) for r in runs]
  assert all(0 < s < 4000 for s in steps), steps

  # kill -9 of the suite runner: each run checkpoints and stops by itself.
  # A limit no run reaches here, so neither can finish before the kill.
  proc = run_suite('--max_actor_steps=1000000', *common)
  for run in runs:  # a progress line after resuming: in the training loop
    _wait_for_text(run / 'suite_run.log', 'Resumed from')
    _wait_until(lambda: '\nactor_steps' in _after_resume(run),
                f'no progress line after resuming in {run}')
  proc.kill()
  proc.communicate()
  for run in runs:  # a second summary line, printed after the checkpoint
    _wait_for_text(run / 'suite_run.log', 'stopped early', timeout=60,
                   count=2)
  deadline = time.time() + 30  # the summary is printed just before exit
  while [p for p in psutil.process_iter(['cmdline'])
         if f'--workdir={root}' in ' '.join(p.info['cmdline'] or [])]:
    assert time.time() < deadline, 'a run outlived the suite runner'
    time.sleep(0.2)
  killed_at = [suites.checkpointed_steps(str(r)) for r in runs]
  assert all(k > s for k, s in zip(killed_at, steps)), (killed_at, steps)
  # From here on the runs' limit lies 2000 steps past the furthest one.
  limit = (max(killed_at) // 1000 + 2) * 1000
  args = [f'--max_actor_steps={limit}'] + common

  # A broken run fails and is reported; the other resumes and finishes.
  (runs[1] / 'config.json').write_text('not json')
  proc = run_suite(*args)
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 1, out + err
  assert 'cartpole-balance seed 0 failed' in out
  table = {line.split()[0]: line.split() for line in _final_table(out)}
  assert table['cartpole-swingup'][-1] == 'finished'
  assert table['cartpole-balance'][-1] == 'failed'
  assert suites.checkpointed_steps(str(runs[0])) >= limit
  with open(runs[0] / 'suite_run.log') as f:
    log = f.read()
  assert 'Resumed from' in log
  # Every run ended, so the suite's report is written, failed run or not.
  assert f'Report: {root}/report/report.md' in out, out
  with open(root / 'report' / 'report.md') as f:
    assert '| cartpole-swingup | suite | 1 |' in f.read()

  # Finished runs are skipped: no process, the log does not grow.
  proc = run_suite(*args)
  out, _ = proc.communicate(timeout=300)
  assert os.path.getsize(runs[0] / 'suite_run.log') == len(log.encode())
  assert 'cartpole-swingup  0' in out and proc.returncode == 1
