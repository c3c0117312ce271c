"""Owns a distributed run's lifetime: launch, watch, report, stop, clean up.

The Launchpad program runs in its own session (process group), started by
`python -m wpo_agent.distributed.program`. This process watches the control
files (`control.py`) and:
  - prints the progress line across the program;
  - if any node fails or dies, stops everything and raises `ProgramFailed`
    naming the node with the last lines of its error / log;
  - on SIGINT/SIGTERM or when the step limiter reports max_actor_steps, asks
    the nodes to stop, waits for the learner's checkpoint, then terminates
    every process of the session (SIGTERM, then SIGKILL), so none is left;
  - if the program process dies, does the same and raises `ProgramFailed`
    naming it.
This process holds the workdir for the run (`lifetime.claim_workdir`). If it
dies however it dies, the program notices and stops the run, and the nodes
do the same if the program dies with it (`lifetime.watch_parent`).
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import psutil

from wpo_agent import checkpoint_recovery as recovery
from wpo_agent import checkpointing
from wpo_agent import config as config_lib
from wpo_agent import device_replay
from wpo_agent import environments
from wpo_agent import lifetime
from wpo_agent import logs
from wpo_agent import replay_checkpoint
from wpo_agent import resume as resume_lib
from wpo_agent import runs
from wpo_agent import stopping
from wpo_agent import workdir as workdir_lib
from wpo_agent.distributed import control as control_lib
from wpo_agent.distributed import netns

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
# How long host 0 looks for the other hosts' stop reasons (shared workdir).
_NAMING_WAIT_S = 5.0
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


class ProgramFailed(RuntimeError):
  """A node crashed; `node` names it (None: the program itself failed).

  str() is the one-line reason followed by `details` (the node's traceback or
  the last lines of its log).
  """

  def __init__(self, reason: str, *, node: Optional[str], details: str):
    super().__init__(f'{reason}\n{details.rstrip()}' if details else reason)
    self.node = node
    self.reason = reason


def _tail(path: str, lines: int = 15) -> str:
  try:
    with open(path, errors='replace') as f:
      return ''.join(f.readlines()[-lines:])
  except OSError:
    return ''


def terminate_session(program: subprocess.Popen) -> None:
  """SIGTERM then SIGKILL to every process of the program's session."""
  lifetime.end_processes(lifetime.session_processes(program.pid),
                         sid=program.pid)
  try:
    program.wait(timeout=_KILL_GRACE_S)
  except subprocess.TimeoutExpired:
    program.kill()
    program.wait()


def _expected_nodes(run: runs.RunOptions) -> List[str]:
  return (['learner', 'step_limiter'] +
          (['evaluator'] if run.host_id == 0 else []) +
          [f'actor_{i}' for i in range(run.num_actors)])


def _naming_other_hosts(error: ProgramFailed, workdir: str,
                        num_hosts: int) -> ProgramFailed:
  """`error` plus what the other hosts' control files say, when host 0 can
  see them (a workdir shared by the hosts): gloo names only a peer address."""
  deadline = time.time() + _NAMING_WAIT_S
  while True:
    found = [(h, control_lib.Control(workdir_lib.Workdir(workdir).host(h).root)
              .stop_reason()) for h in range(1, num_hosts)]
    found = [(h, r) for h, r in found if r]
    if found or time.time() > deadline:
      break
    time.sleep(_POLL_S)
  if not found:
    return error
  said = '; '.join(f'host {h}: {reason}' for h, reason in found)
  return ProgramFailed(f'{error.reason} [{said}]', node=error.node,
                       details=str(error)[len(error.reason):])


def _node_log(workdir: str, name: str) -> str:
  """Launchpad's output_to_files names logs <group>/<index>."""
  if name.startswith('actor_'):
    rel = os.path.join('actor', name.split('_')[1])
  else:
    rel = os.path.join(name, '0')
  return os.path.join(workdir_lib.Workdir(workdir).logs, rel)


def make_spec(run: runs.RunOptions, config: config_lib.WPOConfig,
              resume: Dict[str, Any],
              resume_step: Optional[int] = None) -> Dict[str, Any]:
  """The launch spec the nodes read (nodes.py); `resume` is the metadata of
  the checkpoint at `resume_step` that the learner restores ({} and None if
  none: checkpointing.resume_point)."""
  return dict(run=run.to_dict(), config=config.to_dict(),
              resume_step=resume_step,
              initial_counts={k: resume[k] for k in
                              ('actor_steps', 'learner_steps', 'episodes',
                               'global_actor_steps') if k in resume},
              start_actor_steps=int(resume.get('actor_steps', 0)),
              start_global_actor_steps=int(resume.get(
                  'global_actor_steps', resume.get('actor_steps', 0))),
              start_elapsed_s=float(resume.get('elapsed_s', 0.0)),
              launch_time=time.time(),
              # The program stops the run when this process dies (program.py).
              launcher_pid=os.getpid())


def _last_eval_return(workdir: str) -> Optional[float]:
  last = workdir_lib.Workdir(workdir).last_eval()
  return last[1] if last else None


def _check_failures(control, statuses, expected, program, program_log,
                    stopping_since) -> None:
  """Raises ProgramFailed for a failed node, a dead node, or a dead program."""
  workdir = os.path.dirname(control.root)
  for name, status in statuses.items():
    if status['state'] == control_lib.FAILED:
      error = status.get('error', '')
      # A checkpoint's failure (a full disk) is one line that says it all.
      details = ('' if error.startswith(f'{recovery.CheckpointError.__name__}:')
                 else control.error_text(name) or '')
      raise ProgramFailed(f'node {name} failed: {error}', node=name,
                          details=details)
    # While stopping, nodes may end abruptly, but the learner must report.
    if (status['state'] == control_lib.RUNNING and
        (stopping_since is None or name == 'learner') and
        not psutil.pid_exists(status['pid'])):
      log_path = _node_log(workdir, name)
      raise ProgramFailed(
          f'node {name} (pid {status["pid"]}) failed: it died without '
          'reporting an error (killed or crashed)', node=name,
          details=f'--- last lines of {log_path} ---\n{_tail(log_path)}')
  if program.poll() is not None and stopping_since is None:
    missing = [n for n in expected if n not in statuses]
    code = program.returncode
    how = (f'was killed by {signal.Signals(-code).name}' if code < 0 else
           f'exited with code {code}')
    raise ProgramFailed(
        f'the program (pid {program.pid}, python -m '
        f'wpo_agent.distributed.program) failed: it {how} before the run '
        'ended' + (f'; nodes not started: {missing}' if missing else ''),
        node=None, details='' if code < 0 else
        f'--- last lines of {program_log} ---\n{_tail(program_log)}')


def _launch(workdir: str, spec: Dict[str, Any], *, isolate: bool
            ) -> Tuple[subprocess.Popen, str, Optional[str]]:
  """Starts the program in its own session (and, if `isolate`, its own
  network namespace: netns.py); returns (program, its log path, why the
  isolation asked for is not there or None)."""
  control = control_lib.Control(workdir)
  spec_path = os.path.join(control.root, 'spec.json')
  with open(spec_path, 'w') as f:
    json.dump(spec, f, indent=2)
  log_dir = workdir_lib.Workdir(workdir).logs
  os.makedirs(log_dir, exist_ok=True)
  env = dict(os.environ, LAUNCHPAD_LOGGING_DIR=log_dir,
             PYTHONPATH=os.pathsep.join(
                 p for p in (_REPO_ROOT, os.environ.get('PYTHONPATH')) if p))
  log_path = os.path.join(log_dir, 'program.log')
  command = [sys.executable, '-m', 'wpo_agent.distributed.program', spec_path]
  why_not = None
  if isolate:
    command, why_not = netns.isolated(command)
  with open(log_path, 'w') as log:
    program = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True)
  return program, log_path, why_not


class _Stopping:
  """When a stopping program may be terminated: the learner has saved and the
  other nodes ended (or had their grace), or the learner's time ran out."""

  def __init__(self, now: float):
    self.since = now
    self.learner_done_at = None

  def finished(self, statuses, expected, now: float) -> bool:
    learner = statuses.get('learner', {}).get('state')
    if learner == control_lib.DONE and self.learner_done_at is None:
      self.learner_done_at = now
    others_done = all(statuses.get(n, {}).get('state') != control_lib.RUNNING
                      for n in expected)
    return ((self.learner_done_at is not None and
             (others_done or now - self.learner_done_at > _OTHERS_STOP_GRACE_S))
            or now - self.since > _LEARNER_SAVE_TIMEOUT_S)


def _watch(run: runs.RunOptions, batch_size: int, control, program,
           program_log, expected: List[str], say) -> None:
  """Polls the program until it has stopped."""
  # Each host samples 1/H of every batch; the run's steps are the hosts' sum.
  progress = logs.Progress(run.max_actor_steps, batch_size // run.num_hosts)
  progress_due = logs.Every(run.progress_every_s)
  start = time.time()
  stopping_state = None
  with stopping.GracefulStop() as stop:
    while True:
      time.sleep(_POLL_S)
      now = time.time()
      statuses = control.statuses()
      _check_failures(control, statuses, expected, program, program_log,
                      stopping_state and stopping_state.since)
      if stop.requested and not control.stop_requested():
        control.request_stop('stop signal received by the supervisor')
      if control.stop_requested() and stopping_state is None:
        stopping_state = _Stopping(now)
        say(f'Stopping: {control.stop_reason()}; waiting for the learner '
            'to checkpoint.')
      if stopping_state is not None:
        if stopping_state.finished(statuses, expected, now):
          return
        continue
      missing = [n for n in expected if n not in statuses]
      if missing and now - start > _START_TIMEOUT_S:
        raise ProgramFailed(f'the program failed: nodes did not start within '
                            f'{_START_TIMEOUT_S:.0f} s: {missing}', node=None,
                            details='')
      if progress_due.due():
        counts = control.read_progress() or {}
        steps = int(counts.get('actor_steps', 0))
        line = progress.line(
            int(counts.get('global_actor_steps', steps)),
            int(counts.get('learner_steps', 0)), steps,
            _last_eval_return(run.workdir))
        say(line + (f' | host {run.host_id}: {steps} actor steps'
                    if run.num_hosts > 1 else ''))


def run(run_options: runs.RunOptions,
        config: config_lib.WPOConfig) -> Dict[str, Any]:
  """Runs the distributed program to completion; returns the run summary.

  Raises lifetime.WorkdirInUseError, before anything is written, while
  processes of another run hold this host's workdir.
  """
  base_workdir = os.path.abspath(run_options.workdir)
  run_options = dataclasses.replace(
      run_options, workdir=os.path.abspath(run_options.host_workdir),
      single_process=False)
  runs.check_hosts(run_options, config)
  environment = environments.make_environment(
      run_options.domain, run_options.task, seed=0,
      replica_temperature=run_options.replica_temperature)
  device_replay.check_replay_fits(
      config, environments.environment_spec(environment), in_process=False,
      num_hosts=run_options.num_hosts)
  with lifetime.claimed(run_options.workdir):
    return _run_claimed(run_options, config, base_workdir)


def _run_claimed(run_options, config, base_workdir) -> Dict[str, Any]:
  workdir = run_options.workdir
  resume_lib.write_run_config(workdir, run_options, config)
  control = control_lib.Control(workdir)
  control.reset()
  # The step the learner restores, and its counts; damage set aside here,
  # where the warnings reach the terminal (the nodes' go to their logs).
  step, resume = checkpointing.resume_point(
      workdir, num_hosts=run_options.num_hosts) or (None, {})
  if run_options.checkpoint_replay:
    replay_checkpoint.check(workdir_lib.Workdir(workdir).replay)
  spec = make_spec(run_options, config, resume, resume_step=step)
  say = (lambda *a: None) if run_options.quiet else (
      lambda *a: print(*a, flush=True))
  expected = _expected_nodes(run_options)
  # Several hosts must reach each other: README "Security" for those.
  isolate = run_options.isolate_network and run_options.num_hosts == 1
  program, program_log, why_not = _launch(workdir, spec, isolate=isolate)
  if isolate and why_not:
    print(f'warning: no network namespace for this run ({why_not}): its '
          'Reverb and courier ports listen on every interface, without '
          'authentication (README "Security"; --noisolate_network hides '
          'this line)', file=sys.stderr, flush=True)
  host = (f' (host {run_options.host_id} of {run_options.num_hosts}, '
          f'coordinator {run_options.coordinator_address})'
          if run_options.num_hosts > 1 else '')
  say(f'Launching {config.algorithm.upper()} on {run_options.domain}-'
      f'{run_options.task}{host}: {run_options.num_actors} actors, learner, '
      f'{"evaluator, " if "evaluator" in expected else ""}replay; node logs '
      f'in {os.path.dirname(program_log)}')
  try:
    _watch(run_options, config.batch_size, control, program, program_log,
           expected, say)
  except ProgramFailed as e:
    control.request_stop(e.reason)  # kept if a node already wrote one
    # Let the learner checkpoint (when the program died, its nodes live on)
    # and, with several hosts, tell the other hosts.
    if run_options.num_hosts > 1 or e.node is None:
      control.wait_until_ended('learner', _LEARNER_SAVE_TIMEOUT_S)
    if (run_options.num_hosts > 1 and run_options.host_id == 0 and
        ('lost contact' in e.reason or 'with the other hosts' in e.reason)):
      raise _naming_other_hosts(e, base_workdir, run_options.num_hosts)
    raise
  finally:
    if program.poll() is None or lifetime.session_processes(program.pid):
      terminate_session(program)
  return _summary(run_options, control, spec)


def _summary(run_options, control, spec) -> Dict[str, Any]:
  workdir = run_options.workdir
  learner_state = control.statuses().get('learner', {})
  counts = control.read_progress() or {}
  meta = checkpointing.open_checkpointer(
      workdir, num_hosts=run_options.num_hosts).latest_metadata() or {}
  summary = runs.summary(
      run_options,
      actor_steps=meta.get('actor_steps', counts.get('actor_steps', 0)),
      learner_steps=learner_state.get('learner_steps',
                                      meta.get('learner_steps', 0)),
      last_eval_return=_last_eval_return(workdir),
      elapsed_s=spec['start_elapsed_s'] + time.time() - spec['launch_time'],
      stopped_early=not control.reached_step_limit())
  summary['checkpointed'] = learner_state.get('state') == control_lib.DONE
  if run_options.num_hosts > 1:
    summary['global_actor_steps'] = int(meta.get('global_actor_steps', 0))
  return summary
