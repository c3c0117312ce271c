"""One run per workdir, and a run's processes live and die together.

- **One run per workdir.** Every process of a run (the launcher, the
  Launchpad program, each node; the single-process runner) holds a shared
  `flock` on `WORKDIR/run.lock` for as long as it lives, and the kernel
  drops it when the process dies, however it dies. A launch first takes the
  lock exclusively: while any process of an earlier run lives that fails,
  and the launch is refused with the pids that hold it (`WorkdirInUseError`).
- **No orphans.** A process whose parent dies is adopted by another, so its
  `os.getppid()` changes: `watch_parent` polls it and calls back once. The
  program watches its launcher and every node watches the program
  (distributed/program.py, distributed/nodes.py); the callback asks the run
  to stop, so the learner checkpoints, and then ends what is left.

Why polling rather than Linux's parent-death signal (PR_SET_PDEATHSIG): that
signal follows the *thread* that forked the child, so a launcher that starts
its program from a worker thread would kill it when the thread ends; Launchpad
starts the nodes with its own `Popen`, which takes no `preexec_fn` from us;
and a signal that kills loses the work since the last checkpoint, where a
STOP file first lets the learner save. One `getppid` every half second costs
nothing measurable and behaves the same under every launcher.

Nothing here imports Launchpad or Reverb.
"""

import contextlib
import fcntl
import os
import signal
import threading
import time
from typing import Callable, List, Optional

import psutil

from wpo_agent import workdir as workdir_lib

# Set by a program of ours that starts launchers (the suite runner) to its own
# pid: such a launcher stops when that program dies (`stop_with_starter`).
STOP_WITH_ENV = 'WPO_STOP_WITH_PID'
_POLL_S = 0.5
_KILL_GRACE_S = 3.0

# The lock files this process holds, kept open (and so locked) until it exits.
_held = {}
_watching = threading.Event()


class WorkdirInUseError(RuntimeError):
  """Processes of another run still hold the workdir."""

  def __init__(self, workdir: str, pids: List[int]):
    self.pids = pids
    by_command = {}
    for pid in pids:
      by_command.setdefault(_command(pid), []).append(str(pid))
    shown = '; '.join(f'{", ".join(p)} ({c})' for c, p in by_command.items())
    # Processes of another user or container hold a lock we cannot trace.
    lock = workdir_lib.Workdir(workdir).lock
    held_by = (f'pids {shown}' if pids else
               f'processes not visible from here hold {lock}')
    stop = f'kill {" ".join(map(str, pids))}' if pids else 'where it runs'
    super().__init__(
        f'workdir {workdir} is in use by another run ({held_by}): wait for it '
        f'to end, stop it ({stop}), or use another --workdir')


def _command(pid: int) -> str:
  try:
    words = psutil.Process(pid).cmdline()
  except psutil.Error:
    return '?'
  # The script or module is what tells a user which process this is.
  if any(w.endswith('process_entry.py') for w in words):
    return 'Launchpad nodes'
  for i, word in enumerate(words):
    if word == '-m' and i + 1 < len(words):
      return words[i + 1]
    if word.endswith('.py'):
      return os.path.basename(word)
  return os.path.basename(words[0]) if words else '?'


def lock_path(workdir: str) -> str:
  return workdir_lib.Workdir(workdir).lock


def holders(workdir: str) -> List[int]:
  """Pids of the processes (other than this one) with the lock file open."""
  path = lock_path(workdir)
  pids = []
  for proc in psutil.process_iter():
    if proc.pid == os.getpid():
      continue
    try:
      if any(f.path == path for f in proc.open_files()):
        pids.append(proc.pid)
    except (psutil.Error, OSError):
      continue
  return sorted(pids)


def _open(workdir: str) -> int:
  os.makedirs(os.path.abspath(workdir), exist_ok=True)
  return os.open(lock_path(workdir), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o644)


def claim_workdir(workdir: str) -> None:
  """Makes this process the first of a new run on `workdir`, or raises
  WorkdirInUseError naming the processes of the run that holds it."""
  fd = _open(workdir)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    # Shared from now on, so this run's own processes can join it. Another
    # claim may slip in while the lock changes mode: then this one fails.
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(fd)
    raise WorkdirInUseError(workdir, holders(workdir)) from None
  _held[lock_path(workdir)] = fd


@contextlib.contextmanager
def claimed(workdir: str):
  """`claim_workdir` for the duration of a `with` block (a runner's run)."""
  claim_workdir(workdir)
  try:
    yield
  finally:
    release_workdir(workdir)


def hold_workdir(workdir: str) -> None:
  """Joins the run that claimed `workdir` (no-op if this process holds it)."""
  path = lock_path(workdir)
  if path in _held:
    return
  fd = _open(workdir)
  fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a claim changes mode
  _held[path] = fd


def release_workdir(workdir: str) -> None:
  """Lets go of `workdir` (a process's exit does the same)."""
  fd = _held.pop(lock_path(workdir), None)
  if fd is not None:
    os.close(fd)


def watch_parent(parent_pid: int, on_lost: Callable[[int], None]) -> bool:
  """Calls `on_lost(parent_pid)` in a daemon thread as soon as this process's
  parent is no longer `parent_pid` (it died; this process was adopted).

  One watch per process: returns False, and watches nothing, if one runs.
  """
  if _watching.is_set():
    return False
  _watching.set()

  def watch():
    while os.getppid() == parent_pid:
      time.sleep(_POLL_S)
    on_lost(parent_pid)
  threading.Thread(target=watch, name='watch_parent', daemon=True).start()
  return True


def stop_with_starter() -> None:
  """SIGTERM to this process (a graceful stop) once its parent dies, if
  $WPO_STOP_WITH_PID names the parent. Without it nothing is watched: a
  launcher started from a shell keeps running under `nohup`."""
  pid = os.environ.pop(STOP_WITH_ENV, '')  # not passed on to our children
  if pid.isdigit() and int(pid) == os.getppid():
    watch_parent(int(pid), lambda _: os.kill(os.getpid(), signal.SIGTERM))


def session_processes(sid: int) -> List[psutil.Process]:
  """The processes of session `sid`, other than this one."""
  out = []
  for proc in psutil.process_iter():
    try:
      if proc.pid != os.getpid() and os.getsid(proc.pid) == sid:
        out.append(proc)
    except (OSError, psutil.Error):
      continue
  return out


def end_processes(procs: List[psutil.Process],
                  sid: Optional[int] = None) -> None:
  """SIGTERM, then SIGKILL after a grace, to `procs` (and to whatever else
  is in session `sid` by then: a process may start another meanwhile)."""
  for proc in procs:
    try:
      proc.send_signal(signal.SIGTERM)
    except psutil.Error:
      pass
  _, alive = psutil.wait_procs(procs, timeout=_KILL_GRACE_S)
  if sid is not None:
    alive += session_processes(sid)
  for proc in alive:
    try:
      proc.kill()
    except psutil.Error:
      pass
  psutil.wait_procs(alive, timeout=_KILL_GRACE_S)
