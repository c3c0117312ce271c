"""Several hosts training as one learner over `jax.distributed`.

Every host runs the same distributed program (its own replay, actors and
learner); the learner processes form one JAX job. The jitted step runs over
every learner device of every host, so all hosts must make the same calls in
the same order. Before each call the learners exchange one small row each
(`process_allgather`): the host's actor steps, its stop code and whether it
asks for a checkpoint. Every host derives the same `Decision` from the same
rows, so they step, save and stop together, and the step limit applies to the
sum of the hosts' actor steps.

Nothing here imports Launchpad or Reverb.
"""

import dataclasses
import os
from typing import Any, Optional, Sequence, Tuple

import jax
import numpy as np

# Stop codes, in increasing precedence: a failure anywhere wins over a stop
# signal, which wins over the step limit.
RUNNING, STEP_LIMIT, STOP_SIGNAL, FAILED = 0, 1, 2, 3
_ROW = ('actor_steps', 'stop', 'save')


@dataclasses.dataclass(frozen=True)
class Decision:
  """What every host does after an exchange (the same on every host)."""
  global_actor_steps: int
  stop: int                      # the highest stop code of any host
  save: bool                     # checkpoint now (host 0's schedule, or stop)
  failed_hosts: Tuple[int, ...]  # hosts whose code is FAILED
  stopped_by: Tuple[int, ...]    # hosts whose code is `stop`

  def reason(self) -> str:
    hosts = ', '.join(str(h) for h in self.stopped_by)
    return {STEP_LIMIT: 'reached max_actor_steps',
            STOP_SIGNAL: f'stop requested on host {hosts}',
            FAILED: f'host {hosts} failed'}.get(self.stop, 'running')


def make_row(*, actor_steps: int, stop: int, save: bool) -> np.ndarray:
  """One host's row (int32: jax without x64 would truncate int64)."""
  if not 0 <= actor_steps < 2**31:
    raise ValueError(f'actor_steps={actor_steps} does not fit an int32 row')
  return np.array([actor_steps, stop, int(save)], np.int32)


def decide(rows: np.ndarray, *, max_actor_steps: int) -> Decision:
  """The decision every host takes from the exchanged rows [H, len(_ROW)]."""
  rows = np.asarray(rows)
  total = int(rows[:, 0].astype(np.int64).sum())
  codes = rows[:, 1]
  stop = int(codes.max())
  if stop == RUNNING and total >= max_actor_steps:
    stop = STEP_LIMIT
  stopped_by = tuple(int(h) for h in np.flatnonzero(codes == stop))
  return Decision(global_actor_steps=total, stop=stop,
                  save=bool(rows[:, 2].max()) or stop != RUNNING,
                  failed_hosts=tuple(int(h) for h in
                                     np.flatnonzero(codes == FAILED)),
                  stopped_by=stopped_by)


def stop_code(reason: Optional[str]) -> int:
  """A host's code from its control STOP reason (None: not stopping).

  Every failure's reason says "... failed": a node's, the program's and the
  launcher's (supervisor.py, nodes.py).
  """
  if reason is None:
    return RUNNING
  if reason.startswith('reached max_actor_steps'):
    return STEP_LIMIT
  if ' failed' in reason:
    return FAILED
  return STOP_SIGNAL


def join(*, coordinator_address: str, num_hosts: int, host_id: int,
         timeout_s: int = 300) -> None:
  """Makes this process host `host_id` of the JAX job; call before any other
  JAX use in the process (host 0 also serves the coordinator)."""
  # CPU hosts (tests, CPU clusters) need a cross-process collectives backend.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_hosts, process_id=host_id,
                             initialization_timeout=timeout_s)


def exchange(row: np.ndarray) -> np.ndarray:
  """Every host's row, [H, n] in host order (a collective: all hosts call)."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(row))


def from_host0(tree: Any) -> Any:
  """Host 0's value of `tree` on every host (a collective)."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.broadcast_one_to_all(tree)


def peer_lost_reason(error: BaseException, *, host_id: int,
                     num_hosts: int) -> str:
  """A short reason for a collective that failed because a peer went away.

  The collectives name only the peer's address; of two hosts the lost one
  is the other.
  """
  text = str(error).splitlines()[0] if str(error) else type(error).__name__
  peer = f'host {1 - host_id}' if num_hosts == 2 else 'another host'
  return f'lost contact with {peer}\'s learner ({text})'


def environment_defaults(environ: Optional[dict] = None
                         ) -> Tuple[Optional[str], Optional[int], Optional[int]]:
  """(coordinator_address, num_hosts, host_id) from JAX's standard variables
  (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), else None."""
  environ = os.environ if environ is None else environ

  def integer(name):
    value = environ.get(name)
    return int(value) if value not in (None, '') and value.isdigit() else None
  return (environ.get('JAX_COORDINATOR_ADDRESS') or None,
          integer('JAX_NUM_PROCESSES'), integer('JAX_PROCESS_ID'))


def common_step(steps: Sequence[int]) -> Optional[int]:
  """The checkpoint step every host restores, from each host's newest (-1:
  none): the oldest of them, since a host that died while the others saved
  lacks the newest. None when no host has one."""
  have = [int(s) for s in steps if s >= 0]
  return min(have) if have else None
