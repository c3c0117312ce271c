"""A file-based control plane shared by the supervisor and the program's nodes.

Launchpad's local launcher neither reports crashed nodes nor stops the others
(stack_notes.md), so every node reports through small files in
`<workdir>/control/`, which the supervisor watches:

  nodes/<name>.json    {"pid", "state": running|done|failed, "time", ...}
  nodes/<name>.error   the traceback of a node that raised
  STOP                 written by the step limiter or the supervisor; every
                       node polls it and winds down (the learner checkpoints)
  progress.json        counter snapshot written by the step limiter

Files are replaced atomically (write to a temp file, then rename), so a reader
never sees half a file. Nothing here imports Launchpad or Reverb.
"""

import contextlib
import json
import os
import sys
import time
import traceback
from typing import Any, Dict, Iterator, Optional

from wpo_agent import workdir as workdir_lib

RUNNING, DONE, FAILED = 'running', 'done', 'failed'
# The stop reason of a run that reached max_actor_steps (it ends with a final
# evaluation; any other stop does not).
_STEP_LIMIT = 'reached max_actor_steps'


def _write_atomic(path: str, text: str) -> None:
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # it exists, as another user's
  return True


def _read_json(path: str) -> Optional[Dict[str, Any]]:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


class Control:
  """Paths and operations on `<workdir>/control`."""

  def __init__(self, workdir: str):
    self.root = workdir_lib.Workdir(workdir).control
    self.nodes_dir = os.path.join(self.root, 'nodes')
    self.stop_path = os.path.join(self.root, 'STOP')
    self.progress_path = os.path.join(self.root, 'progress.json')

  def reset(self) -> None:
    """Clears the previous run's state (called by the supervisor at start)."""
    os.makedirs(self.nodes_dir, exist_ok=True)
    for name in os.listdir(self.nodes_dir):
      os.remove(os.path.join(self.nodes_dir, name))
    for path in (self.stop_path, self.progress_path):
      if os.path.exists(path):
        os.remove(path)

  # --- stop request ---
  def request_stop(self, reason: str) -> None:
    if not os.path.exists(self.stop_path):
      _write_atomic(self.stop_path, reason)

  def request_step_limit_stop(self, limit: int) -> None:
    self.request_stop(f'{_STEP_LIMIT}={limit}')

  def reached_step_limit(self) -> bool:
    return (self.stop_reason() or '').startswith(_STEP_LIMIT)

  def stop_requested(self) -> bool:
    return os.path.exists(self.stop_path)

  def stop_reason(self) -> Optional[str]:
    try:
      with open(self.stop_path) as f:
        return f.read().strip()
    except OSError:
      return None

  # --- node status ---
  def set_status(self, name: str, state: str, **extra) -> None:
    os.makedirs(self.nodes_dir, exist_ok=True)
    record = dict(pid=os.getpid(), state=state, time=time.time(), **extra)
    _write_atomic(os.path.join(self.nodes_dir, f'{name}.json'),
                  json.dumps(record))

  def statuses(self) -> Dict[str, Dict[str, Any]]:
    out = {}
    if os.path.isdir(self.nodes_dir):
      for fname in sorted(os.listdir(self.nodes_dir)):
        if fname.endswith('.json'):
          record = _read_json(os.path.join(self.nodes_dir, fname))
          if record is not None:
            out[fname[:-len('.json')]] = record
    return out

  def wait_until_ended(self, name: str, timeout_s: float) -> bool:
    """Waits (at most timeout_s) until node `name` is no longer running:
    it reported an end, never started, or its process is gone."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
      status = self.statuses().get(name)
      if (status is None or status['state'] != RUNNING or
          not _alive(status['pid'])):
        return True
      time.sleep(0.2)
    return False

  def error_text(self, name: str) -> Optional[str]:
    try:
      with open(os.path.join(self.nodes_dir, f'{name}.error')) as f:
        return f.read()
    except OSError:
      return None

  # --- progress ---
  def write_progress(self, counts: Dict[str, Any]) -> None:
    _write_atomic(self.progress_path, json.dumps(dict(counts, time=time.time())))

  def read_progress(self) -> Optional[Dict[str, Any]]:
    return _read_json(self.progress_path)

  @contextlib.contextmanager
  def node(self, name: str) -> Iterator[None]:
    """Marks node `name` running; on exit done, or failed with its traceback.

    A failure also requests a program stop, so the other nodes wind down even
    if the supervisor is gone. The exception is re-raised: the process then
    exits non-zero and its log shows the traceback too.
    """
    self.set_status(name, RUNNING)
    try:
      yield
    except BaseException as e:  # pylint: disable=broad-except
      if isinstance(e, (KeyboardInterrupt, SystemExit)) and (
          self.stop_requested()):
        self.set_status(name, DONE)  # killed while stopping: not a failure
        raise
      self.record_failure(name, e)
      raise
    else:
      self.set_status(name, DONE)

  def record_failure(self, name: str, error: BaseException) -> None:
    """Writes the current traceback, marks `name` failed, requests a stop."""
    os.makedirs(self.nodes_dir, exist_ok=True)
    _write_atomic(os.path.join(self.nodes_dir, f'{name}.error'),
                  traceback.format_exc())
    self.set_status(name, FAILED, error=f'{type(error).__name__}: {error}')
    self.request_stop(f'node {name} failed')
    sys.stderr.flush()
