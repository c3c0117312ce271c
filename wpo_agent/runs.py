"""A run's options, and the summary a runner returns: a launcher's contract.

Both runners (single-process and distributed) and every node of the
distributed program read the same `RunOptions`; hyperparameters live in
`config.WPOConfig`. What a resumed run may change is `resume.py`'s, the
run's seeds `seeds.py`'s, and a workdir's files `workdir.py`'s.
"""

import dataclasses
import os
from typing import Any, Dict, Optional

from wpo_agent import config as config_lib
from wpo_agent import environments
from wpo_agent import replicas
from wpo_agent import workdir as workdir_lib


# Launchpad launch types of the distributed program (distributed/program.py).
LAUNCH_TYPES = ('local_mp', 'local_mt')


# More environments per actor gain nothing measurable beyond 16 (BUILD_NOTES.md)
# and delay every actor's first transitions; the cap catches typos.
MAX_ENVS_PER_ACTOR = 256


class RunOptionsError(ValueError):
  """A run option has a value outside what is allowed."""


@dataclasses.dataclass(frozen=True)
class RunOptions:
  """Run-level options (not hyperparameters; those live in WPOConfig).

  The only place their defaults live: launch/run_local.py's flags take theirs
  from here.
  """
  domain: str = 'humanoid'
  task: Optional[str] = None  # None: the domain's default (resolved here)
  seed: int = 0
  # The smooth minimum's temperature over a replicated task's rewards
  # (task '<task>-xK'; replicas.softmin); 0.1 keeps one failing replica's
  # weight near the minimum (why: replicas.DEFAULT_TEMPERATURE).
  replica_temperature: float = replicas.DEFAULT_TEMPERATURE
  workdir: str = 'runs/default'
  max_actor_steps: int = 1_000_000
  eval_every: int = 10_000
  eval_episodes: int = 5
  progress_every_s: float = 5.0
  checkpoint_every_s: float = 600.0
  # Save the replay buffer with each checkpoint, so a resumed run continues
  # from the same data instead of refilling a small, fresh buffer.
  checkpoint_replay: bool = True
  tensorboard: bool = True
  quiet: bool = False
  single_process: bool = False  # else the Launchpad program
  num_actors: int = 4  # actor processes of the distributed program
  # Environments each actor process steps together, with one policy call per
  # round (loops.ActorLoop); the single-process runner's actor too. Chosen by
  # measurement (BUILD_NOTES.md, "Vectorised actors").
  envs_per_actor: int = 16
  # Cut each environment's first episode at a different length (spread over
  # one episode, as a time limit), so that environments started together do
  # not stay in step (loops.ActorLoop).
  stagger_starts: bool = True
  lp_launch_type: str = 'local_mp'  # or 'local_mt' (threads, debugging)
  # Run a single-host program in a network namespace of its own, so that its
  # unauthenticated Reverb and courier ports are reachable from nowhere else
  # (distributed/netns.py).
  isolate_network: bool = True
  # Several hosts training as one learner (distributed/hosts.py): every host
  # runs the same command with its own host_id; host 0 serves the JAX
  # coordinator at coordinator_address (HOST:PORT).
  num_hosts: int = 1
  host_id: int = 0
  coordinator_address: Optional[str] = None

  def __post_init__(self):
    # Raises environments.UnknownTaskError listing the valid names.
    object.__setattr__(self, 'task',
                       environments.resolve_task(self.domain, self.task))
    try:
      replicas.check_temperature(self.replica_temperature)
    except ValueError as e:
      raise RunOptionsError(str(e)) from None
    for name in ('max_actor_steps', 'eval_every', 'eval_episodes',
                 'num_actors'):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RunOptionsError(f'--{name}={value}: must be an integer >= 1')
    value = self.envs_per_actor
    if (not isinstance(value, int) or isinstance(value, bool) or
        not 1 <= value <= MAX_ENVS_PER_ACTOR):
      raise RunOptionsError(
          f'--envs_per_actor={value}: must be an integer from 1 to '
          f'{MAX_ENVS_PER_ACTOR} (environments each actor process steps '
          'together; 1 steps one at a time)')
    if self.lp_launch_type not in LAUNCH_TYPES:
      raise RunOptionsError(f'--lp_launch_type={self.lp_launch_type}: allowed '
                            f'values are {list(LAUNCH_TYPES)}')
    self._check_hosts()

  def _check_hosts(self) -> None:
    if (not isinstance(self.num_hosts, int) or isinstance(self.num_hosts, bool)
        or self.num_hosts < 1):
      raise RunOptionsError(f'--num_hosts={self.num_hosts}: must be an integer '
                            '>= 1')
    if not (isinstance(self.host_id, int) and
            0 <= self.host_id < self.num_hosts):
      raise RunOptionsError(f'--host_id={self.host_id}: must be an integer in '
                            f'[0, {self.num_hosts - 1}] (--num_hosts='
                            f'{self.num_hosts})')
    if self.num_hosts == 1:
      return
    if self.single_process:
      raise RunOptionsError('--num_hosts > 1 runs the distributed program: '
                            'drop --single_process')
    host, _, port = (self.coordinator_address or '').rpartition(':')
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
      raise RunOptionsError(
          f'--coordinator_address={self.coordinator_address}: a run on '
          f'{self.num_hosts} hosts needs HOST:PORT of host 0 (the same on '
          'every host), e.g. 10.0.0.2:8476')

  @property
  def host_workdir(self) -> str:
    """Where this host writes: the workdir on host 0, WORKDIR/host_<id> on the
    others (so one shared workdir serves every host)."""
    if self.host_id == 0:
      return self.workdir
    return os.path.join(self.workdir, os.path.basename(
        workdir_lib.Workdir(self.workdir).host(self.host_id).root))

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)


def check_hosts(run: RunOptions, config: config_lib.WPOConfig) -> None:
  """What a multi-host run needs of the config (RunOptionsError otherwise)."""
  if run.num_hosts > 1 and config.replay_backend != 'device':
    raise RunOptionsError(
        f'--num_hosts={run.num_hosts} needs replay_backend=device (got '
        f'{config.replay_backend}): the hosts\' learners step in lockstep, '
        'which a reverb sampler blocked on its rate limiter cannot')


def summary(run: RunOptions, *, actor_steps: int,
            learner_steps: int, last_eval_return: Optional[float],
            elapsed_s: float, stopped_early: bool) -> Dict[str, Any]:
  """What both runners return (and launch/run_local.py prints)."""
  return dict(domain=run.domain, task=run.task, actor_steps=int(actor_steps),
              learner_steps=int(learner_steps),
              last_eval_return=last_eval_return,
              elapsed_s=round(elapsed_s, 1), stopped_early=stopped_early,
              workdir=os.path.abspath(run.workdir))
