"""lifetime.py: one run per workdir, parent watches and ending a session.

Real processes throughout (the kernel's flock and reparenting are the thing
under test); the end-to-end kills of a running program are in
test_distributed.py and test_multihost.py.
"""

import os
import select
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from wpo_agent import lifetime

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code, **kwargs):
  return subprocess.Popen([sys.executable, '-c', textwrap.dedent(code)],
                          env=dict(os.environ, PYTHONPATH=REPO),
                          stdout=subprocess.PIPE, text=True, **kwargs)


def _holder(workdir):
  """A process that joins the run on `workdir` and lives on."""
  proc = _python(f"""
      import time
      from wpo_agent import lifetime
      lifetime.hold_workdir({str(workdir)!r})
      print('held', flush=True)
      time.sleep(120)""")
  # A holder that cannot join would block in flock: fail, do not hang.
  ready, _, _ = select.select([proc.stdout], [], [], 60)
  if not ready:
    proc.kill()
    raise AssertionError('the holder did not get the lock within 60 s')
  assert proc.stdout.readline().strip() == 'held'
  return proc


def _wait_gone(proc, timeout=10):
  proc.wait(timeout=timeout)


def test_a_held_workdir_is_refused_naming_the_pids_until_they_die(tmp_path):
  holder = _holder(tmp_path)
  try:
    with pytest.raises(lifetime.WorkdirInUseError) as e:
      lifetime.claim_workdir(str(tmp_path))
    assert e.value.pids == [holder.pid]
    assert f'pids {holder.pid} (python' in str(e.value)
    assert f'kill {holder.pid})' in str(e.value)
    assert '\n' not in str(e.value)
  finally:
    holder.kill()
    _wait_gone(holder)
  # kill -9 drops the lock with the process: nothing to clean up by hand.
  lifetime.claim_workdir(str(tmp_path))
  lifetime.release_workdir(str(tmp_path))


def test_a_claimed_workdir_admits_its_own_processes_and_no_other_claim(
    tmp_path):
  lifetime.claim_workdir(str(tmp_path))
  try:
    member = _holder(tmp_path)  # would block (and time out) if excluded
    other = _python(f"""
        from wpo_agent import lifetime
        try:
          lifetime.claim_workdir({str(tmp_path)!r})
        except lifetime.WorkdirInUseError as e:
          print(sorted(e.pids))""")
    out, _ = other.communicate(timeout=60)
    assert out.strip() == str(sorted([os.getpid(), member.pid]))
    member.kill()
    _wait_gone(member)
  finally:
    lifetime.release_workdir(str(tmp_path))
  assert lifetime.holders(str(tmp_path)) == []
  lifetime.claim_workdir(str(tmp_path))  # released: free again
  lifetime.release_workdir(str(tmp_path))


def test_watch_parent_calls_back_once_the_parent_is_killed(tmp_path):
  flag = tmp_path / 'lost'
  # parent -> child; the child watches the parent and writes `flag` when it
  # is gone.
  parent = _python(f"""
      import subprocess, sys, time
      child = subprocess.Popen([sys.executable, '-c', '''
      import os, time
      from wpo_agent import lifetime
      def lost(pid):
        with open({str(flag)!r}, 'w') as f:
          f.write(str(pid))
        os._exit(0)
      lifetime.watch_parent(os.getppid(), lost)
      print(os.getpid(), flush=True)
      time.sleep(120)
      '''])
      time.sleep(120)""")
  try:
    deadline = time.time() + 60
    while not [p for p in psutil.Process(parent.pid).children()]:
      assert time.time() < deadline
      time.sleep(0.1)
    child = psutil.Process(parent.pid).children()[0]
    # The child prints its pid once it watches (killing the parent earlier
    # would make it watch its new parent instead).
    ready, _, _ = select.select([parent.stdout], [], [], 60)
    assert ready and parent.stdout.readline().strip() == str(child.pid)
    time.sleep(1.5)  # a live parent is no reason to call back
    assert not flag.exists()
    parent.kill()
    parent.wait()
    deadline = time.time() + 10
    while not flag.exists():
      assert time.time() < deadline, 'the watch did not call back in 10 s'
      time.sleep(0.1)
    assert flag.read_text() == str(parent.pid)
    child.wait(timeout=10)
  finally:
    parent.kill()


def test_one_watch_per_process():
  code = """
      import os
      from wpo_agent import lifetime
      first = lifetime.watch_parent(os.getppid(), print)
      print(first, lifetime.watch_parent(os.getppid(), print))"""
  out, _ = _python(code).communicate(timeout=60)
  assert out.split() == ['True', 'False']


def test_end_processes_ends_a_session_that_ignores_sigterm():
  # A session leader whose child ignores SIGTERM: SIGKILL after the grace.
  leader = _python("""
      import signal, subprocess, sys, time
      subprocess.Popen([sys.executable, '-c', 'import signal, time; '
                        'signal.signal(signal.SIGTERM, signal.SIG_IGN); '
                        'print(1, flush=True); time.sleep(120)'],
                       stdout=sys.stdout)
      time.sleep(120)""", start_new_session=True)
  assert leader.stdout.readline().strip() == '1'
  members = lifetime.session_processes(leader.pid)
  assert len(members) == 2
  start = time.time()
  lifetime.end_processes(members, sid=leader.pid)
  assert not lifetime.session_processes(leader.pid)
  # The child outlived SIGTERM until the grace ran out; then SIGKILL.
  assert lifetime._KILL_GRACE_S <= time.time() - start < 10
  leader.wait(timeout=10)  # already reaped by end_processes


@pytest.mark.parametrize('mode', ['--single_process', '--nosingle_process'])
def test_run_local_refuses_a_held_workdir_in_one_line(tmp_path, mode):
  workdir = tmp_path / 'run'
  holder = _holder(workdir)
  try:
    out = subprocess.run(
        [sys.executable, os.path.join(REPO, 'launch', 'run_local.py'),
         '--domain=cartpole', '--config=small', f'--workdir={workdir}', mode],
        capture_output=True, text=True, timeout=120)
  finally:
    holder.kill()
    _wait_gone(holder)
  assert out.returncode == 2
  assert out.stderr.startswith(f'error: workdir {workdir} is in use by '
                               f'another run (pids {holder.pid} (python')
  assert len(out.stderr.strip().splitlines()) == 1
  assert not (workdir / 'config.json').exists()  # nothing written


def test_a_refusal_without_visible_holders_still_reads_as_one_line(tmp_path):
  message = str(lifetime.WorkdirInUseError(str(tmp_path), []))
  assert message == (
      f'workdir {tmp_path} is in use by another run (processes not visible '
      f'from here hold {tmp_path}/run.lock): wait for it to end, stop it '
      '(where it runs), or use another --workdir')
