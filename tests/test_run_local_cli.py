"""launch/run_local.py as a user runs it: one-line flag errors and a short run.

Each case is a subprocess (about a second each); test_config.py covers the
validation rules in full.
"""

import os
import subprocess
import sys

import pytest

import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, 'launch', 'run_local.py')


def run_local(*args, timeout=120, cwd=None):
  env = dict(os.environ, MUJOCO_GL='egl')
  return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd or REPO,
                        env=env, capture_output=True, text=True,
                        timeout=timeout)


@pytest.mark.parametrize('args,fragments', [
    (['--domain=nope'], ["'nope'", 'cartpole', 'humanoid', 'walker']),
    (['--domain=cartpole', '--task=nope'], ["'nope'", 'swingup', 'balance']),
    (['--config=nope'], ["'nope'", 'acme', 'paper', 'small']),
    (['--set', 'batchsize=3'], ['batchsize', 'batch_size']),
    (['--set', 'batch_size=abc'], ['batch_size', "'abc'"]),
    (['--set', 'bootstrap_aggregate=median'], ['bootstrap_aggregate',
                                               "'median'", 'max']),
    (['--set', 'batch_size=0'], ['batch_size=0']),
    (['--set', 'nofield'], ['FIELD=VALUE']),
    (['--max_actor_steps=0'], ['--max_actor_steps=0', '>= 1']),
    (['--eval_episodes=0'], ['--eval_episodes=0']),
    (['stray_argument'], ['stray_argument']),
    (['--max_actor_steps=abc'], ['--max_actor_steps=abc']),  # absl parsing
    (['--envs_per_actor=0'], ['--envs_per_actor=0', 'from 1 to 256']),
    (['--envs_per_actor=1.5'], ['--envs_per_actor=1.5']),  # absl parsing
    (['--domian=cartpole'], ['domian', 'domain']),
    (['--set', 'replay_backend=gpu'], ["replay_backend='gpu'", 'device',
                                      'reverb']),
    # 1e11 humanoid items of 628 B: refused before anything is written.
    (['--domain=humanoid', '--set', 'max_replay_size=1e11'],
     ['max_replay_size=100000000000', '628 bytes',
      'lower max_replay_size to at most', 'replay_backend=reverb']),
], ids=['domain', 'task', 'config', 'set-field', 'set-type', 'set-choice',
        'set-range', 'set-syntax', 'max-actor-steps', 'eval-episodes',
        'positional', 'flag-type', 'envs-per-actor', 'envs-per-actor-type',
        'unknown-flag', 'replay-backend',
        'replay-too-large'])
def test_bad_flags_give_one_line(tmp_path, args, fragments):
  proc = run_local('--single_process', f'--workdir={tmp_path / "run"}', *args)
  assert proc.returncode == 2, proc.stderr
  assert 'Traceback' not in proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith('error: ')
  for fragment in fragments:
    assert fragment in lines[0]
  assert not os.path.exists(tmp_path / 'run')  # nothing written


@pytest.mark.slow  # a real training run
def test_short_single_process_run(tmp_path):
  workdir = tmp_path / 'run'
  proc = run_local(
      '--domain=cartpole', '--task=swingup', '--single_process',
      '--config=small', '--max_actor_steps=300', '--eval_every=300',
      '--eval_episodes=1', '--progress_every=0.2', f'--workdir={workdir}',
      '--envs_per_actor=4',  # 75 rounds of 4 environment steps
      *tiny.flags(min_replay_size=100),
      # One learner step per actor step past min_replay_size is the reverb
      # backend's ratio (the device backend's is per drained chunk).
      '--set', 'replay_backend=reverb', timeout=240)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert 'Traceback' not in proc.stderr
  out = proc.stdout
  assert 'Training WPO on cartpole-swingup to 300 actor steps' in out
  progress = [l for l in out.splitlines() if l.startswith('actor_steps ')]
  assert progress, out
  assert all('| env ' in l and '| ETA ' in l for l in progress)
  assert ('finished: cartpole-swingup, 300 actor steps, 200 learner steps'
          in out)
  assert f'{workdir}/eval.csv' in out
  assert 'python -m wpo_agent.analysis.plot' in out
  assert (workdir / 'eval.csv').exists()
  assert (workdir / 'checkpoints').is_dir()

  # The same workdir for another task cannot resume it: one line, exit 2,
  # and the run's files are left as they were.
  config_before = (workdir / 'config.json').read_text()
  proc = run_local('--domain=walker', '--single_process', f'--workdir={workdir}')
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr
  for fragment in ("domain: saved 'cartpole', now 'walker'",
                   "task: saved 'swingup', now 'walk'", '--workdir'):
    assert fragment in lines[0]
  assert (workdir / 'config.json').read_text() == config_before


def test_distributed_refuses_a_device_replay_too_large(tmp_path):
  proc = run_local('--domain=humanoid', f'--workdir={tmp_path / "run"}',
                   '--set', 'max_replay_size=1e11')
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr
  assert 'lower max_replay_size to at most' in lines[0]
  assert not os.path.exists(tmp_path / 'run')  # refused before launching
