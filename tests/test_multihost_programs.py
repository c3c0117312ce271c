"""Two whole programs as one run (launch/multihost/run_host.sh --num_hosts=2 on
127.0.0.1): they train, stop together on a signal to one host, resume and
finish; a failure, a killed learner, a killed launcher or a lost machine on
host 1 stops host 0 non-zero, naming host 1, and leaves no process behind.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import portpicker
import pytest

import programs
import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_HOST = os.path.join(REPO, 'launch', 'multihost', 'run_host.sh')

pytestmark = pytest.mark.slow


def _env():
  return dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO,
              MUJOCO_GL='egl')


TINY = tiny.flags(policy_layer_sizes=(32, 32), critic_layer_sizes=(32, 32),
                  min_replay_size=256)


def _launch_hosts(workdir, max_steps, port, extra_env=(None, None)):
  """Both hosts' launch/multihost/run_host.sh on one shared workdir (host 1
  writes under workdir/host_1)."""
  procs = []
  for host in (0, 1):
    cmd = ['bash', RUN_HOST, str(host), '2', f'127.0.0.1:{port}',
           '--domain=cartpole', '--task=swingup', '--config=small',
           '--num_actors=1', f'--max_actor_steps={max_steps}',
           '--eval_every=2000', '--eval_episodes=1', f'--workdir={workdir}',
           '--progress_every=2'] + TINY
    procs.append(subprocess.Popen(
        cmd, env=dict(_env(), WPO_PYTHON=sys.executable,
                      **(extra_env[host] or {})),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  return procs


def _kill(procs):
  for proc in procs:
    if proc.poll() is None:
      proc.kill()


def _finish(procs, timeout):
  outs = []
  try:
    for proc in procs:
      outs.append(proc.communicate(timeout=timeout))
  finally:
    _kill(procs)
  return outs


def _once_learning(workdir, procs, act):
  """act() once the learners step; returns (when, both hosts' outputs)."""
  deadline = time.time() + 240
  try:
    while _progress(workdir).get('learner_steps', 0) == 0:
      assert time.time() < deadline, 'the learners did not start stepping'
      assert all(p.poll() is None for p in procs), 'a host exited early'
      time.sleep(0.5)
    act()
  except BaseException:
    _kill(procs)
    raise
  return time.time(), _finish(procs, 90)


def _meta(workdir):
  from wpo_agent import checkpointing  # pylint: disable=g-import-not-at-top
  return checkpointing.HostCheckpointer(workdir).latest_metadata()


def _progress(workdir):
  from wpo_agent.distributed import control  # pylint: disable=g-import-not-at-top
  return control.Control(workdir).read_progress() or {}


def _left_behind(workdir):
  return programs.processes_logging_to(programs.logs_dir(workdir, 0),
                                       programs.logs_dir(workdir, 1))


@pytest.mark.slow
def test_two_host_run_stops_on_one_signal_resumes_and_finishes(tmp_path):
  workdir = str(tmp_path / 'run')
  host1 = os.path.join(workdir, 'host_1')
  procs = _launch_hosts(workdir, 1_000_000, portpicker.pick_unused_port())
  sent, outs = _once_learning(  # SIGTERM to one host only
      workdir, procs, lambda: procs[1].send_signal(signal.SIGTERM))
  assert time.time() - sent < 60
  for proc, (out, err) in zip(procs, outs):
    assert proc.returncode == 0, err[-3000:]
    assert 'stopped early' in out
  assert 'stop requested on host 1' in outs[0][0]
  first0, first1 = _meta(workdir), _meta(host1)
  # Saved together: the same global count, which is the sum of the hosts'.
  assert first0['global_actor_steps'] == first1['global_actor_steps'] == (
      first0['actor_steps'] + first1['actor_steps'])
  assert first1['device_replay_filled_per_shard'] > 0
  assert not _left_behind(workdir)

  limit = first0['global_actor_steps'] + 2000
  procs = _launch_hosts(workdir, limit, portpicker.pick_unused_port())
  outs = _finish(procs, 300)
  for proc, (out, err) in zip(procs, outs):
    assert proc.returncode == 0, err[-3000:]
    assert 'finished' in out
  final0, final1 = _meta(workdir), _meta(host1)
  assert final0['global_actor_steps'] == final1['global_actor_steps'] == (
      final0['actor_steps'] + final1['actor_steps']) >= limit
  # Host 1 resumed too: it joined the resumed run's exchanges and saved its
  # own checkpoint at the new global count. (Its actors may add nothing: host
  # 0's alone can reach a 2000-step limit before host 1's start.)
  assert final1['global_actor_steps'] >= limit > first1['global_actor_steps']
  assert final1['actor_steps'] >= first1['actor_steps']
  assert final0['learner_steps'] > first0['learner_steps']
  with open(os.path.join(workdir, 'eval.csv')) as f:
    rows = list(csv.DictReader(f))
  assert int(rows[-1]['actor_steps']) >= limit  # evaluated at the end
  assert not os.path.exists(os.path.join(host1, 'eval.csv'))  # host 0 only
  assert f'all hosts: {final0["global_actor_steps"]} actor steps' in outs[0][0]
  assert not _left_behind(workdir)


@pytest.mark.slow
def test_a_failure_on_one_host_stops_both_and_is_named(tmp_path):
  workdir = str(tmp_path / 'run')
  procs = _launch_hosts(workdir, 1_000_000, portpicker.pick_unused_port(),
                        extra_env=(None, {'WPO_FAULT_INJECT': 'actor_0@1500'}))
  start = time.time()
  outs = _finish(procs, 240)
  # Host 1's actor raised at its step 1500 (after the learners started).
  assert time.time() - start < 240
  for proc in procs:
    assert proc.returncode != 0
  assert 'actor_0' in outs[1][1]
  assert 'host 1 failed' in outs[0][1]
  assert not _left_behind(workdir)


@pytest.mark.slow
def test_killing_one_hosts_learner_stops_both(tmp_path):
  workdir = str(tmp_path / 'run')
  status = os.path.join(workdir, 'host_1', 'control', 'nodes', 'learner.json')
  procs = _launch_hosts(workdir, 1_000_000, portpicker.pick_unused_port())

  def kill_learner():
    with open(status) as f:
      os.kill(json.load(f)['pid'], signal.SIGKILL)
  killed, outs = _once_learning(workdir, procs, kill_learner)
  assert time.time() - killed < 60
  assert [p.returncode != 0 for p in procs] == [True, True]
  assert 'node learner' in outs[1][1]  # host 1: its learner died
  assert "lost contact with host 1's learner" in outs[0][1]
  # Host 0 sees host 1's control files (a shared workdir) and names it.
  assert 'host 1: node learner' in outs[0][1]
  assert not _left_behind(workdir)


def _host_processes(workdir, host, launcher):
  """Host `host`'s launcher (if alive) and its program's processes."""
  found = [launcher] if launcher.poll() is None else []
  return found + programs.processes_logging_to(
      programs.logs_dir(workdir, host))


@pytest.mark.slow
@pytest.mark.parametrize('lost', ['every process', 'the launcher'])
def test_losing_host_1_stops_host_0_and_leaves_nothing(tmp_path, lost):
  """A lost machine (kill -9 of all its processes), or only its launcher
  killed: host 0 stops non-zero within 60 s naming host 1."""
  workdir = str(tmp_path / 'run')
  procs = _launch_hosts(workdir, 1_000_000, portpicker.pick_unused_port())

  def kill_host_1():
    victims = (_host_processes(workdir, 1, procs[1])
               if lost == 'every process' else [procs[1]])
    for proc in victims:
      proc.kill()
  killed, outs = _once_learning(workdir, procs, kill_host_1)
  assert time.time() - killed < 60
  assert procs[0].returncode == 1
  assert procs[1].returncode == -signal.SIGKILL
  err0 = outs[0][1]
  if lost == 'every process':
    assert "lost contact with host 1's learner" in err0, err0[-3000:]
  else:  # host 1's program stopped the hosts together, then its own nodes
    assert 'stopped with the other hosts: host 1 failed' in err0, err0[-3000:]
    assert f'host 1: the launcher (pid {procs[1].pid}) failed' in err0
  deadline = time.time() + 60
  while _left_behind(workdir):
    assert time.time() < deadline, 'processes of a host were left behind'
    time.sleep(0.5)

