"""Named task suites and the suite runner: many (task, seed) runs, P at a time.

Each run is `launch/run_local.py` in its own process and session, with its own
workdir SUITE_DIR/<domain>-<task>/seed<seed>, so everything a single run does
(checkpoints, resume, graceful stop) holds per run. The runner skips finished
runs, resumes stopped ones, reports failed ones and goes on, and on SIGINT or
SIGTERM stops every running run through its own checkpointing.
"""

import dataclasses
import os
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from dm_control import suite as dm_suite

from wpo_agent import environments
from wpo_agent import lifetime
from wpo_agent import workdir as workdir_lib

# 'paper' is our reading of the paper's (Pfau et al. 2025) figure of all
# Control Suite tasks: every task in dm_control.suite.ALL_TASKS except LQR's,
# humanoid_CMU and dog included. The paper gives its tasks as that figure, not
# as a table, so this is a reading, not a copy. 'fig5' is its replica
# experiment: one agent controlling K standing humanoids (replicas.py).
_PAPER = tuple(f'{domain}-{task}' for domain, task in dm_suite.ALL_TASKS
               if domain != 'lqr')

SUITES: Dict[str, Tuple[str, ...]] = {
    'quick': ('cartpole-swingup', 'walker-walk', 'cheetah-run', 'reacher-hard',
              'finger-spin', 'ball_in_cup-catch'),
    'hard': ('humanoid-stand', 'humanoid-walk', 'humanoid-run', 'dog-stand',
             'dog-walk', 'dog-trot', 'dog-run', 'dog-fetch',
             'humanoid_CMU-stand', 'humanoid_CMU-walk', 'humanoid_CMU-run'),
    'paper': _PAPER,
    'fig5': ('humanoid-stand-x1', 'humanoid-stand-x3', 'humanoid-stand-x5'),
}

# The checkout this package is in (wpo_agent/analysis/suites.py: 3 levels up),
# whose launch/run_local.py every run is.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

# Run states in the status table.
PENDING, RUNNING, FINISHED, STOPPED, FAILED = (
    'pending', 'running', 'finished', 'stopped', 'failed')


class SuiteError(ValueError):
  """Bad suite input; the message lists what is allowed."""


def resolve_tasks(suite: Optional[str], tasks: Optional[str]
                  ) -> List[Tuple[str, str]]:
  """(domain, task) pairs of `suite` or of `tasks` ('domain-task,...').

  Domains hold no '-' (tasks may: 'humanoid-stand-x3' is task 'stand-x3'),
  so a name splits at its first '-'.
  """
  if (suite is None) == (tasks is None):
    raise SuiteError('give exactly one of --suite (one of '
                     f'{", ".join(SUITES)}) and --tasks=domain-task,...')
  if suite is not None:
    if suite not in SUITES:
      raise SuiteError(f'unknown suite {suite!r}; valid suites: '
                       f'{", ".join(SUITES)}')
    names = SUITES[suite]
  else:
    names = [t for t in tasks.split(',') if t]
  out = []
  for name in names:
    domain, _, task = name.partition('-')
    try:
      if not task:
        raise environments.UnknownTaskError(
            f'{name!r} is not domain-task (e.g. cartpole-swingup)')
      environments.resolve_task(domain, task)
    except environments.UnknownTaskError as e:
      raise SuiteError(f'--tasks: {e}') from None
    out.append((domain, task))
  return out


def parse_seeds(text: str) -> List[int]:
  try:
    seeds = [int(s) for s in text.split(',') if s.strip()]
  except ValueError:
    seeds = []
  if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
    raise SuiteError(f'--seeds={text}: give distinct integers >= 0, e.g. '
                     '--seeds=0,1,2')
  return seeds


@dataclasses.dataclass
class Run:
  """One (task, seed) of the suite and its process."""
  domain: str
  task: str
  seed: int
  workdir: str
  state: str = PENDING
  process: Optional[subprocess.Popen] = None

  @property
  def name(self) -> str:
    return f'{self.domain}-{self.task}'


def checkpointed_steps(workdir: str) -> int:
  """The newest checkpoint's actor steps (0 without one)."""
  return max(workdir_lib.Workdir(workdir).checkpoint_steps(), default=0)


class SuiteRunner:
  """Runs `runs` with at most `parallel` processes; `stop()` ends them all."""

  def __init__(self, runs: Sequence[Run], *, max_actor_steps: int,
               parallel: int, run_args: Sequence[str],
               status_every_s: float = 60.0, say=print):
    self.runs = list(runs)
    self._max_steps = max_actor_steps
    self._parallel = parallel
    self._run_args = list(run_args)
    self._status_every_s = status_every_s
    self._say = say
    self._stopping = False
    for run in self.runs:
      if checkpointed_steps(run.workdir) >= max_actor_steps:
        run.state = FINISHED

  def command(self, run: Run) -> List[str]:
    script = os.path.join(REPO, 'launch', 'run_local.py')
    return [sys.executable, script, f'--domain={run.domain}',
            f'--task={run.task}', f'--seed={run.seed}',
            f'--workdir={run.workdir}',
            f'--max_actor_steps={self._max_steps}'] + self._run_args

  def _start(self, run: Run) -> None:
    os.makedirs(run.workdir, exist_ok=True)
    log = open(workdir_lib.Workdir(run.workdir).suite_log, 'ab')
    # Its own session: a terminal's Ctrl-C reaches the runner only, which
    # stops each run the way its own Ctrl-C would.
    # ... and if this runner dies, each run stops as on SIGTERM.
    run.process = subprocess.Popen(
        self.command(run), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
        env=dict(os.environ, **{lifetime.STOP_WITH_ENV: str(os.getpid())}))
    log.close()
    run.state = RUNNING

  def _reap(self, run: Run) -> None:
    code = run.process.poll()
    if code is None:
      return
    run.process = None
    if code != 0:
      run.state = FAILED
      self._say(f'{run.name} seed {run.seed} failed (exit {code}); see '
                f'{workdir_lib.Workdir(run.workdir).suite_log}')
    elif checkpointed_steps(run.workdir) >= self._max_steps:
      run.state = FINISHED
    else:
      run.state = STOPPED

  @property
  def stopping(self) -> bool:
    return self._stopping

  def stop(self, *_) -> None:
    """Asks every running run to checkpoint and stop (SIGINT/SIGTERM)."""
    if not self._stopping:
      self._say('Stopping: every running run checkpoints and exits; rerun '
                'the same command to resume.')
    self._stopping = True
    for run in self.runs:
      if run.process is not None:
        try:
          os.killpg(run.process.pid, signal.SIGTERM)
        except ProcessLookupError:
          pass

  def run(self) -> bool:
    """Runs until every run ended or a stop; True when none failed."""
    last_status = time.time()
    while True:
      for run in self.runs:
        if run.process is not None:
          self._reap(run)
      running = [r for r in self.runs if r.state == RUNNING]
      pending = [r for r in self.runs if r.state == PENDING]
      while not self._stopping and pending and len(running) < self._parallel:
        run = pending.pop(0)
        self._start(run)
        running.append(run)
      if not running and (self._stopping or not pending):
        break
      if time.time() - last_status >= self._status_every_s:
        self._say(self.status_table())
        last_status = time.time()
      time.sleep(0.5)
    self._say(self.status_table())
    return not any(r.state == FAILED for r in self.runs)

  def status_table(self) -> str:
    rows = [('task', 'seed', 'actor steps', 'last eval', 'state')]
    for run in self.runs:
      steps, ret = workdir_lib.Workdir(run.workdir).last_eval() or (None,
                                                                    None)
      steps = max(steps or 0, checkpointed_steps(run.workdir))
      rows.append((run.name, str(run.seed), str(steps) if steps else '-',
                   f'{ret:.1f}' if ret is not None else '-', run.state))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return '\n'.join('  '.join(c.ljust(w) for c, w in zip(r, widths))
                     for r in rows)
