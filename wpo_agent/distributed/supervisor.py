"""Owns a distributed run's lifetime: launch, watch, report, stop, clean up.

The Launchpad program runs in its own session (process group), started by
`python -m wpo_agent.distributed.program`. This process watches the control
files (`control.py`) and:
  - prints the progress line across the program;
  - if any node fails or dies, stops everything and raises `ProgramFailed`
    naming the node with the last lines of its error / log;
  - on SIGINT/SIGTERM or when the step limiter reports max_actor_steps, asks
    the nodes to stop, waits for the learner's checkpoint, then terminates
    every process of the session (SIGTERM, then SIGKILL), so none is left.
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

import psutil

from wpo_agent import checkpointing
from wpo_agent import config as config_lib
from wpo_agent import logs
from wpo_agent import single_process
from wpo_agent import stopping
from wpo_agent.distributed import control as control_lib

_POLL_S = 0.5
_START_TIMEOUT_S = 180.0    # all nodes must report running by then
# The learner saves the replay buffer (~12 s for 1e6 humanoid items) and then
# its own state; it reports DONE when finished, so this only bounds a hang.
_LEARNER_SAVE_TIMEOUT_S = 90.0
# After the learner's save, the other nodes get this long to end by themselves
# before the session is terminated (an actor can be blocked in a reverb insert
# by the rate limiter once the learner stops sampling; its data is not needed).
_OTHERS_STOP_GRACE_S = 10.0
_KILL_GRACE_S = 3.0
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


class ProgramFailed(RuntimeError):
  """A node crashed; the message names it and shows its last error lines."""


def _tail(path: str, lines: int = 15) -> str:
  try:
    with open(path, errors='replace') as f:
      return ''.join(f.readlines()[-lines:])
  except OSError:
    return ''


def _session_processes(sid: int) -> List[psutil.Process]:
  out = []
  for proc in psutil.process_iter():
    try:
      if proc.pid != os.getpid() and os.getsid(proc.pid) == sid:
        out.append(proc)
    except (OSError, psutil.Error):
      continue
  return out


def terminate_session(launcher: subprocess.Popen) -> None:
  """SIGTERM then SIGKILL to every process of the launcher's session."""
  procs = _session_processes(launcher.pid)
  for proc in procs:
    try:
      proc.send_signal(signal.SIGTERM)
    except psutil.Error:
      pass
  _, alive = psutil.wait_procs(procs, timeout=_KILL_GRACE_S)
  for proc in alive + _session_processes(launcher.pid):
    try:
      proc.kill()
    except psutil.Error:
      pass
  try:
    launcher.wait(timeout=_KILL_GRACE_S)
  except subprocess.TimeoutExpired:
    launcher.kill()
    launcher.wait()


def _last_eval(workdir: str) -> Optional[float]:
  path = os.path.join(workdir, 'eval.csv')
  lines = _tail(path, 1).strip().split(',')
  try:
    return float(lines[2])
  except (IndexError, ValueError):
    return None


def _expected_nodes(num_actors: int) -> List[str]:
  return (['learner', 'evaluator', 'step_limiter'] +
          [f'actor_{i}' for i in range(num_actors)])


def _node_log(workdir: str, name: str) -> str:
  """Launchpad's output_to_files names logs <group>/<index>."""
  if name.startswith('actor_'):
    rel = os.path.join('actor', name.split('_')[1])
  else:
    rel = os.path.join(name, '0')
  return os.path.join(workdir, 'logs', rel)


def make_spec(run: single_process.RunOptions, config: config_lib.WPOConfig,
              lp_launch_type: str) -> Dict[str, Any]:
  meta = checkpointing.Checkpointer(run.workdir).latest_metadata() or {}
  initial = {k: meta[k] for k in ('actor_steps', 'learner_steps', 'episodes')
             if k in meta}
  return dict(
      dataclasses.asdict(run), workdir=os.path.abspath(run.workdir),
      config=config.to_dict(), initial_counts=initial,
      start_actor_steps=int(meta.get('actor_steps', 0)),
      start_elapsed_s=float(meta.get('elapsed_s', 0.0)),
      launch_time=time.time(), lp_launch_type=lp_launch_type)


def _check_failures(control, statuses, expected, launcher, stopping_since):
  """Raises ProgramFailed for a failed node, a dead node, or a dead launcher."""
  for name, status in statuses.items():
    if status['state'] == control_lib.FAILED:
      raise ProgramFailed(
          f'node {name} failed: {status.get("error", "")}\n'
          f'{(control.error_text(name) or "").rstrip()}')
    if (status['state'] == control_lib.RUNNING and
        not psutil.pid_exists(status['pid'])):
      if stopping_since is None:
        raise ProgramFailed(f'node {name} (pid {status["pid"]}) died without '
                            'reporting an error (killed or crashed)')
  if launcher.poll() is not None and stopping_since is None:
    missing = [n for n in expected if n not in statuses]
    raise ProgramFailed(
        f'the Launchpad launcher exited (code {launcher.returncode}) before the '
        f'run ended; nodes not started: {missing or "none"}')


def run(run_options: single_process.RunOptions, config: config_lib.WPOConfig,
        lp_launch_type: str = 'local_mp') -> Dict[str, Any]:
  """Runs the distributed program to completion; returns the run summary."""
  workdir = os.path.abspath(run_options.workdir)
  single_process.write_run_config(workdir, run_options, config)
  control = control_lib.Control(workdir)
  control.reset()
  spec = make_spec(run_options, config, lp_launch_type)
  spec_path = os.path.join(control.root, 'spec.json')
  with open(spec_path, 'w') as f:
    json.dump(spec, f, indent=2)
  log_dir = os.path.join(workdir, 'logs')
  os.makedirs(log_dir, exist_ok=True)
  env = dict(os.environ, LAUNCHPAD_LOGGING_DIR=log_dir,
             PYTHONPATH=os.pathsep.join(
                 p for p in (_REPO_ROOT, os.environ.get('PYTHONPATH')) if p))
  say = (lambda *a: None) if run_options.quiet else (
      lambda *a: print(*a, flush=True))
  expected = _expected_nodes(config.num_actors)
  say(f'Launching WPO on {spec["domain"]}-{spec["task"]}: {config.num_actors} '
      f'actors, learner, evaluator, replay; node logs in {log_dir}')
  launcher_log = open(os.path.join(log_dir, 'launcher.log'), 'w')
  launcher = subprocess.Popen(
      [sys.executable, '-m', 'wpo_agent.distributed.program', spec_path],
      env=env, stdout=launcher_log, stderr=subprocess.STDOUT,
      stdin=subprocess.DEVNULL, start_new_session=True)
  progress = logs.Progress(run_options.max_actor_steps, config.batch_size)
  start = last_line = time.time()
  stopping_since = learner_done_at = None
  interrupted = False
  try:
    with stopping.GracefulStop() as stop:
      while True:
        time.sleep(_POLL_S)
        now = time.time()
        statuses = control.statuses()
        _check_failures(control, statuses, expected, launcher, stopping_since)
        if stop.requested and not control.stop_requested():
          interrupted = True
          control.request_stop('stop signal received by the supervisor')
        if control.stop_requested() and stopping_since is None:
          stopping_since = now
          say(f'Stopping: {control.stop_reason()}; waiting for the learner '
              'to checkpoint.')
        if stopping_since is not None:
          learner = statuses.get('learner', {}).get('state')
          if learner == control_lib.DONE and learner_done_at is None:
            learner_done_at = now
          others_done = all(statuses.get(n, {}).get('state') !=
                            control_lib.RUNNING for n in expected)
          if ((learner_done_at is not None and
               (others_done or now - learner_done_at > _OTHERS_STOP_GRACE_S))
              or now - stopping_since > _LEARNER_SAVE_TIMEOUT_S):
            break
          continue
        missing = [n for n in expected if n not in statuses]
        if missing and now - start > _START_TIMEOUT_S:
          raise ProgramFailed(f'nodes did not start within '
                              f'{_START_TIMEOUT_S:.0f} s: {missing}')
        if now - last_line >= run_options.progress_every_s:
          counts = control.read_progress() or {}
          say(progress.line(int(counts.get('actor_steps', 0)),
                            int(counts.get('learner_steps', 0)),
                            int(counts.get('actor_steps', 0)),
                            _last_eval(workdir)))
          last_line = now
  except ProgramFailed as e:
    control.request_stop('a node failed')
    terminate_session(launcher)
    if 'Traceback' in str(e):  # the node recorded its own error
      raise
    name = str(e).split()[1] if str(e).startswith('node ') else None
    log_path = _node_log(workdir, name) if name else launcher_log.name
    raise ProgramFailed(f'{e}\n--- last lines of {log_path} ---\n'
                        f'{_tail(log_path)}') from None
  finally:
    if launcher.poll() is None or _session_processes(launcher.pid):
      terminate_session(launcher)
    launcher_log.close()

  learner_state = control.statuses().get('learner', {})
  counts = control.read_progress() or {}
  meta = checkpointing.Checkpointer(workdir).latest_metadata() or {}
  return dict(domain=spec['domain'], task=spec['task'],
              actor_steps=int(meta.get('actor_steps',
                                       counts.get('actor_steps', 0))),
              learner_steps=int(learner_state.get('learner_steps', meta.get(
                  'learner_steps', 0))),
              last_eval_return=_last_eval(workdir),
              elapsed_s=round(spec['start_elapsed_s'] + time.time() -
                              spec['launch_time'], 1),
              stopped_early=interrupted, workdir=workdir,
              checkpointed=learner_state.get('state') == control_lib.DONE)
