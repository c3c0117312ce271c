"""The real Launchpad program (launch/run_local.py, wpo_agent/distributed), end
to end (local multi-processing, 2 actors).

Launches of a few hundred MB of processes each on a 2-core machine:
  1. SIGINT mid-run: exit 0 within 30 s, a checkpoint, no process left;
  2. resume to the limit: counters continue, learner steps grow, eval rows;
  3. an actor raises: non-zero exit within 30 s naming it, no process left;
  4. (device backend, one run after its SIGINT) kill -9 of the program, then
     of the launcher: nothing left within 60 s, a checkpoint each time, a
     rerun meanwhile refused, and the same command resumes, then finishes.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from wpo_agent.distributed import netns

import programs
import replay_checkpoints
import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_LOCAL = os.path.join(REPO, 'launch', 'run_local.py')
TINY = tiny.flags(policy_layer_sizes=(32, 32), critic_layer_sizes=(32, 32),
                  variable_update_period=100)

pytestmark = pytest.mark.slow


def _launch(workdir, max_steps, extra_env=None, backend='reverb'):
  cmd = [sys.executable, RUN_LOCAL, '--domain=cartpole', '--task=swingup',
         '--config=small', '--num_actors=2', f'--max_actor_steps={max_steps}',
         '--eval_every=1000', '--eval_episodes=1', f'--workdir={workdir}',
         '--progress_every=2', f'--set=replay_backend={backend}'] + TINY
  env = dict(os.environ, MUJOCO_GL='egl', **(extra_env or {}))
  return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _run_processes(workdir):
  """Processes of the run: anything whose environment points at its logs."""
  return programs.processes_logging_to(programs.logs_dir(workdir))


def _progress(workdir):
  try:
    with open(os.path.join(workdir, 'control', 'progress.json')) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _wait_for(predicate, timeout, what):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    time.sleep(0.5)
  raise AssertionError(f'timed out after {timeout} s waiting for {what}')


def _eval_rows(workdir):
  with open(os.path.join(workdir, 'eval.csv')) as f:
    return list(csv.DictReader(f))


def _replay_saved(workdir, backend):
  """Transitions saved with the newest checkpoint: the reverb table's, or the
  device replay's (one device here, so its filled slots)."""
  if backend == 'reverb':
    return replay_checkpoints.items_in_checkpoint(workdir)
  return _checkpoint_meta(workdir)['device_replay_filled_per_shard']


def _assert_isolated(workdir):
  """The run's processes share a network namespace other than ours, whose
  only interface is loopback; their servers listen there, not here."""
  procs = _run_processes(workdir)
  assert procs
  ours = os.readlink('/proc/self/ns/net')
  theirs = {os.readlink(f'/proc/{p.pid}/ns/net') for p in procs}
  assert len(theirs) == 1 and ours not in theirs
  pid = procs[0].pid
  with open(f'/proc/{pid}/net/dev') as f:
    interfaces = [line.split(':')[0].strip() for line in f.readlines()[2:]]
  assert interfaces == ['lo']
  listening_there = []
  for table in ('tcp', 'tcp6'):
    with open(f'/proc/{pid}/net/{table}') as f:
      listening_there += [l.split()[1] for l in f.readlines()[1:]
                          if l.split()[3] == '0A']  # state LISTEN
  assert listening_there  # reverb and the courier servers
  pids = {p.pid for p in procs}
  assert not [c for c in psutil.net_connections('tcp')
              if c.status == psutil.CONN_LISTEN and c.pid in pids]


def _sigint_stops_and_saves(workdir, backend):
  """Phase: a new run stopped by SIGINT once it learns; returns its progress
  and the replay items saved with its checkpoint."""
  namespaces = netns.isolated(['true'])[1] is None
  proc = _launch(workdir, 1_000_000, backend=backend)
  try:
    _wait_for(lambda: _progress(workdir).get('learner_steps', 0) > 0, 240,
              'the learner to start stepping')
    if namespaces:
      _assert_isolated(workdir)
    proc.send_signal(signal.SIGINT)
    sent = time.time()
    out, err = proc.communicate(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert time.time() - sent < 30, 'SIGINT took more than 30 s to stop the run'
  assert proc.returncode == 0, err[-3000:]
  assert 'stopped early' in out
  # Where this OS allows no namespace, the run says so in one line.
  assert ('warning: no network namespace' in err) == (not namespaces)
  assert os.listdir(os.path.join(workdir, 'checkpoints'))
  assert not _run_processes(workdir)
  first = _progress(workdir)
  assert int(first['actor_steps']) > 0
  # The replay buffer was saved with the learner: the learner had started, so
  # the buffer held at least min_replay_size = 200 items.
  saved = _replay_saved(workdir, backend)
  assert saved >= 200
  return first, saved


def _resumes_and_finishes(workdir, backend, after, saved):
  """Phase: the same command, to a limit beyond the checkpoint at
  after['actor_steps'] by more than the actors may run ahead of the learner
  (~1,500 items on the device backend: BUILD_NOTES.md, `make run`), so the
  resumed learner must have drained and stepped."""
  limit = int(after['actor_steps']) + 3000
  proc = _launch(workdir, limit, backend=backend)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  assert 'finished' in out
  final = _progress(workdir)
  assert final['actor_steps'] >= limit
  assert final['learner_steps'] > after['learner_steps']
  rows = _eval_rows(workdir)
  assert rows and int(rows[-1]['actor_steps']) > int(after['actor_steps'])
  # A run that reaches its step limit ends with an evaluation there.
  assert int(rows[-1]['actor_steps']) >= limit
  assert not _run_processes(workdir)
  assert _replay_saved(workdir, backend) > saved  # restored, then grown


def test_stop_resume_and_finish(tmp_path):
  """The reverb backend (the device backend: the next test)."""
  workdir = str(tmp_path / 'run')
  first, saved = _sigint_stops_and_saves(workdir, 'reverb')
  _resumes_and_finishes(workdir, 'reverb', first, saved)


def test_actor_failure_stops_everything(tmp_path):
  workdir = str(tmp_path / 'run')
  proc = _launch(workdir, 1_000_000, {'WPO_FAULT_INJECT': 'actor_1@150'})
  error_file = os.path.join(workdir, 'control', 'nodes', 'actor_1.error')
  try:
    _wait_for(lambda: os.path.exists(error_file) or proc.poll() is not None,
              240, 'the injected actor failure')
    failed_at = time.time()
    out, err = proc.communicate(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert time.time() - failed_at < 30
  assert proc.returncode == 1, (out[-2000:], err[-2000:])
  assert 'node actor_1 failed' in err
  assert 'injected fault' in err
  assert 'Traceback' not in err.split('node actor_1 failed')[0]
  assert not _run_processes(workdir)


def _learning(workdir, proc, checkpoint):
  """Waits until the learner and the actors step beyond the `checkpoint`
  metadata's counts. A resumed run's counter starts there, before its
  learner has started (the progress written at the last stop can be older,
  so beyond that is no sign of a learner); a checkpoint is keyed by actor
  steps, and one at the same step is not saved again."""
  _wait_for(lambda: (
      (_progress(workdir).get('learner_steps', 0) > checkpoint['learner_steps']
       and _progress(workdir).get('actor_steps', 0) >
       checkpoint['actor_steps']) or proc.poll() is not None), 240,
            'the learner to start stepping')
  assert proc.poll() is None, proc.communicate()[1][-3000:]


def _checkpoint_meta(workdir):
  from wpo_agent import checkpointing  # pylint: disable=g-import-not-at-top
  return checkpointing.Checkpointer(workdir).latest_metadata()


def _learner_saved(workdir, previous):
  """The learner reported its checkpoint, newer than the `previous` one's
  metadata (it had resumed and stepped)."""
  with open(os.path.join(workdir, 'control', 'nodes', 'learner.json')) as f:
    assert json.load(f)['state'] == 'done'
  meta = _checkpoint_meta(workdir)
  assert meta['learner_steps'] > previous['learner_steps']
  assert meta['actor_steps'] > previous['actor_steps']
  return meta


def test_stop_kills_resume_and_finish_on_the_device_backend(tmp_path):
  """One run through SIGINT, kill -9 of its program, kill -9 of its
  launcher, each resumed by the same command, then to its limit."""
  workdir = str(tmp_path / 'run')
  _, saved = _sigint_stops_and_saves(workdir, 'device')
  stopped = _checkpoint_meta(workdir)

  # kill -9 of the program: its launcher names it, after the learner saved.
  proc = _launch(workdir, 1_000_000, backend='device')
  try:
    _learning(workdir, proc, stopped)
    program, = [p for p in psutil.Process(proc.pid).children()
                if 'wpo_agent.distributed.program' in p.cmdline()]
    program.kill()
    killed = time.time()
    out, err = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert time.time() - killed < 60
  assert proc.returncode == 1, err[-3000:]
  assert (f'error: the program (pid {program.pid}, python -m '
          'wpo_agent.distributed.program) failed: it was killed by SIGKILL'
          in err)
  assert not _run_processes(workdir)
  first = _learner_saved(workdir, stopped)

  # The same command resumes; a second run on the workdir meanwhile is
  # refused; kill -9 of the launcher stops the program and every node.
  proc = _launch(workdir, 1_000_000, backend='device')
  try:
    _learning(workdir, proc, first)
    holders = {proc.pid} | {p.pid for p in _run_processes(workdir)}
    second = _launch(workdir, 1_000_000, backend='device')
    out, err = second.communicate(timeout=120)
    assert second.returncode == 2
    assert err.startswith(f'error: workdir {os.path.abspath(workdir)} is in '
                          'use by another run (pids ')
    assert len(err.strip().splitlines()) == 1
    named = {int(w) for w in err.split('(kill ')[1].split(')')[0].split()}
    assert named == holders
    proc.kill()
    proc.wait()
    _wait_for(lambda: not _run_processes(workdir), 60,
              'every process of the run to end after its launcher was killed')
  finally:
    if proc.poll() is None:
      proc.kill()
  with open(os.path.join(workdir, 'control', 'STOP')) as f:
    assert f.read().startswith(f'the launcher (pid {proc.pid}) failed')
  second = _learner_saved(workdir, first)

  _resumes_and_finishes(workdir, 'device', second, saved)
