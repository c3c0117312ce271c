"""The program's light nodes and every process's watch on its parent.

The counter and the step limiter only count and write control files, so they
live apart from `nodes.py`: Launchpad's node process imports the module that
defines its function, and this one pulls in neither JAX, TensorFlow nor Reverb
(~1 s of CPU to start instead of ~3.5 s, twice per launch: BUILD_NOTES.md,
"Test time").

Every process of the program holds the workdir while it lives, and stops the
run when its parent dies (`watch_launcher`, `join_program`; lifetime.py).
"""

import contextlib
import functools
import os
import time
from typing import Any, Dict, Iterator

from acme.utils import counting

from wpo_agent import lifetime
from wpo_agent.distributed import control as control_lib

Spec = Dict[str, Any]
_TELL_HOSTS_S = 60.0
# The program's pid, which its node processes inherit (`watch_launcher`).
_PROGRAM_PID_ENV = 'WPO_PROGRAM_PID'
# How long a process whose parent died waits for the learner's checkpoint
# (the replay and the counter serve it) before it exits.
_ORPHAN_SAVE_TIMEOUT_S = 90.0


def watch_launcher(spec: Spec) -> None:
  """In the program process: holds the workdir, and if the launcher (the
  supervisor, `spec['launcher_pid']`) dies, stops the run with a checkpoint
  and ends every node of this host."""
  os.environ[_PROGRAM_PID_ENV] = str(os.getpid())  # before any node starts
  lifetime.hold_workdir(spec['run']['workdir'])
  lifetime.watch_parent(int(spec['launcher_pid']),
                        functools.partial(_parent_lost, spec, 'launcher'))


def join_program(spec: Spec) -> None:
  """In a node process: holds the workdir, and if the program dies (and so
  possibly the launcher: nobody would stop this node), stops the run with a
  checkpoint and exits. Nodes that are threads of the program (local_mt)
  share its watch."""
  lifetime.hold_workdir(spec['run']['workdir'])
  program = int(os.environ.get(_PROGRAM_PID_ENV, os.getpid()))
  if program != os.getpid():
    lifetime.watch_parent(program,
                          functools.partial(_parent_lost, spec, 'program'))


def _parent_lost(spec: Spec, parent: str, pid: int) -> None:
  # "failed": with several hosts the others stop non-zero (hosts.stop_code).
  control = control_lib.Control(spec['run']['workdir'])
  control.request_stop(f'the {parent} (pid {pid}) failed: it died while the '
                       'run was running')
  control.wait_until_ended('learner', _ORPHAN_SAVE_TIMEOUT_S)
  if parent == 'launcher':  # this is the program, its session's leader
    sid = os.getsid(0)
    lifetime.end_processes(lifetime.session_processes(sid), sid=sid)
  os._exit(1)  # pylint: disable=protected-access


@contextlib.contextmanager
def reporting(control: control_lib.Control, name: str,
              num_hosts: int) -> Iterator[None]:
  """`control.node(name)`; with several hosts a failure first waits (at most
  _TELL_HOSTS_S) for this host's learner to pass it on to the other hosts,
  since Launchpad ends every process once one exits non-zero."""
  try:
    with control.node(name):
      yield
  except Exception:
    if num_hosts > 1:
      control.wait_until_ended('learner', _TELL_HOSTS_S)
    raise


def make_counter(spec: Spec) -> counting.Counter:
  """Counter node, seeded with the counts of the checkpoint being resumed."""
  join_program(spec)
  counter = counting.Counter()
  if spec['initial_counts']:
    counter.increment(**spec['initial_counts'])
  return counter


def run_step_limiter(counter, spec: Spec) -> None:
  """Ends the program at max_actor_steps; publishes counts for the supervisor.

  With several hosts the learners end the run together (hosts.py): this
  only publishes the counts.
  """
  join_program(spec)
  run = spec['run']
  control = control_lib.Control(run['workdir'])
  with reporting(control, 'step_limiter', run['num_hosts']):
    limit = run['max_actor_steps']
    while not control.stop_requested():
      counts = counter.get_counts()
      control.write_progress(counts)
      if run['num_hosts'] == 1 and counts.get('actor_steps', 0) >= limit:
        control.request_step_limit_stop(limit)
        break
      time.sleep(0.2)
