"""One of several hosts' learners: restore, step, save and stop with the others.

Every host's learner makes the same jitted calls in the same order (hosts.py):
before each call the hosts exchange one row each and take the same
`hosts.Decision`, so they save together, stop together, and the step limit
applies to the sum of their actor steps. Used by `nodes.LearnerNode` when a
run has several hosts; nothing here imports Launchpad or Reverb.
"""

import os
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence

from acme.utils import counting
import jax
import numpy as np

from wpo_agent import checkpoint_recovery as recovery
from wpo_agent import checkpointing
from wpo_agent import runs
from wpo_agent.distributed import control as control_lib
from wpo_agent.distributed import hosts

# Host 0's learner serves the JAX coordinator; the others abort once it is
# gone, so after the hosts' last exchange it waits this long before exiting.
_COORDINATOR_GRACE_S = 2.0


# The newest steps each host offers for a resume (its checkpointer keeps 2).
_OFFERED_STEPS = 8
# The counts a resume seeds the counter with (supervisor.make_spec).
_COUNTS = ('actor_steps', 'learner_steps', 'episodes', 'global_actor_steps')


def offered_steps(steps: Sequence[int]) -> np.ndarray:
  """A host's row for the resume exchange: its newest steps, -1 padded."""
  newest = sorted(steps, reverse=True)[:_OFFERED_STEPS]
  return np.array(newest + [-1] * (_OFFERED_STEPS - len(newest)), np.int32)


def common_steps(rows: np.ndarray) -> List[int]:
  """The steps every host that has a checkpoint holds, newest first (the
  same list on every host: they see the same rows)."""
  held = [set(int(s) for s in row if s >= 0) for row in np.asarray(rows)]
  held = [h for h in held if h]
  return sorted(set.intersection(*held), reverse=True) if held else []


def restore(checkpointer, learner, *, with_replay: bool,
            warn: Callable[[str], None] = recovery.warn_stderr
            ) -> Optional[Dict[str, Any]]:
  """The newest checkpoint step that every host holds and reads back whole,
  with host 0's learner state on every host (all then step identically);
  this host's metadata of it, or None (no host has a checkpoint).

  A collective: every host makes the same exchanges (one for the hosts'
  steps, one per step tried), so all restore the same step or all raise the
  same CheckpointError. Steps this host could not read, newer than the one
  restored, are set aside with one `warning:` line.
  """
  mine = checkpointer.all_steps()
  rows = hosts.exchange(offered_steps(mine))
  failed = []
  for step in common_steps(rows):
    read = None
    if mine:  # a host without any (a new workdir) takes host 0's state
      try:
        read = recovery.reading(checkpointer.read_leaves, step)
      except recovery.Unreadable as e:
        failed.append((step, e))
    ok = read is not None or not mine
    if hosts.exchange(np.array([ok], np.int32)).all():
      if failed:
        warn(recovery.fallback_line(
            checkpointer.directory, failed, step,
            [checkpointer.set_aside(s) for s, _ in failed]))
      return _apply(learner, read, with_replay=with_replay)
  if (np.asarray(rows) >= 0).any():
    raise recovery.CheckpointError(
        'no checkpoint step that every host holds can be loaded on every host '
        f'(steps held: host {_held(rows)}'
        + (f'; this host {recovery.cannot_load(failed, checkpointer.directory)}'
           if failed else '') +
        '); move every host\'s checkpoints folder away to start afresh')
  learner.restore(hosts.from_host0(learner.save()))  # equal fresh states
  return None


def _held(rows: np.ndarray) -> str:
  """'0: [300, 200], 1: [200]': each host's offered steps."""
  return ', '.join(f'{h}: {[int(s) for s in row if s >= 0]}'
                   for h, row in enumerate(np.asarray(rows)))


def _apply(learner, read, *, with_replay: bool) -> Optional[Dict[str, Any]]:
  """Host 0's state and this host's replay of `read` (None: this host has
  no checkpoint) into `learner`; this host's metadata of it."""
  if read is None:
    learner.restore(hosts.from_host0(learner.save()))
    return None
  state_leaves, metadata, replay_leaves = read
  state = jax.tree.unflatten(jax.tree.structure(learner.save()), state_leaves)
  # Equal on every host before it reaches a device (device_put checks).
  learner.restore(hosts.from_host0(state))
  if (with_replay and replay_leaves is not None and
      checkpointing.REPLAY_FILLED in metadata):
    learner.restore_replay(
        metadata[checkpointing.REPLAY_FILLED],
        lambda like: jax.tree.unflatten(jax.tree.structure(like),
                                        replay_leaves))
  return metadata


def count_corrections(seeded: Dict[str, Any],
                      restored: Optional[Dict[str, Any]]) -> Dict[str, int]:
  """What to add to the counter, seeded with `seeded` (the supervisor's
  read of this host's newest checkpoint), so that it holds the counts of the
  checkpoint the hosts restored (`restored`, None: none)."""
  restored = restored or {}
  return {k: int(restored.get(k, 0)) - int(seeded.get(k, 0)) for k in _COUNTS
          if int(restored.get(k, 0)) != int(seeded.get(k, 0))}


class Lockstep:
  """The SGD loop of one host's learner among several (a collective)."""

  def __init__(self, *, learner, counter, control: control_lib.Control,
               run: runs.RunOptions, sgd_steps_per_call: int,
               published_steps: int, save: Callable[[int, int], None],
               final_eval_wait_s: float):
    self._learner = learner
    self._counter = counter
    self._control = control
    self._run = run
    self._k = sgd_steps_per_call
    self._published = published_steps  # global actor steps in the counter
    # save(global_steps, host_steps): a checkpoint at the global step the
    # hosts decided on, recording this host's actor steps as they entered that
    # decision (its counter runs on while it saves), so that the checkpoints'
    # global count is the sum of theirs.
    self._save = save
    self._host_steps = 0  # this host's actor steps in the last exchange
    self._final_eval_wait_s = final_eval_wait_s

  def run(self) -> None:
    """Steps until the hosts stop, then winds this host down the way a STOP
    file does, and exits the process (os._exit: JAX's exit barrier would
    hang on a host that is gone)."""
    control, run = self._control, self._run
    try:
      with control.node('learner'):  # records a failure, then re-raises
        try:
          decision = self._loop()
          hosts.exchange(np.zeros(1, np.int32))  # every host has saved
        except Exception as e:  # a peer's learner went away mid-collective
          raise RuntimeError(hosts.peer_lost_reason(
              e, host_id=run.host_id, num_hosts=run.num_hosts)) from e
        self._wind_down(decision)
        if run.host_id == 0:  # it serves the JAX coordinator: leave last
          time.sleep(_COORDINATOR_GRACE_S)
        os._exit(1 if decision.stop == hosts.FAILED else 0)
    except BaseException:  # pylint: disable=broad-except
      traceback.print_exc()
      os._exit(1)

  def _wind_down(self, decision: hosts.Decision) -> None:
    control, run = self._control, self._run
    if decision.stop == hosts.STEP_LIMIT:
      control.request_step_limit_stop(run.max_actor_steps)
      control.wait_until_ended('evaluator', self._final_eval_wait_s)
    else:
      control.request_stop(decision.reason())
    if (decision.stop == hosts.FAILED and
        run.host_id not in decision.failed_hosts):
      raise RuntimeError(f'stopped with the other hosts: '
                         f'{decision.reason()} (see its output)')
    control.set_status('learner', control_lib.DONE,
                       learner_steps=self._learner.sgd_steps)

  def _loop(self) -> hosts.Decision:
    """Exchange, maybe save, step: until the hosts decide to stop."""
    control, run = self._control, self._run
    local = counting.Counter(self._counter, time_delta=1.0)
    last_save = time.time()
    while True:
      self._learner.ready(stop=control.stop_requested)
      decision = self._exchange(save=(
          run.host_id == 0 and
          time.time() - last_save >= run.checkpoint_every_s))
      if decision.save:
        self._save(decision.global_actor_steps, self._host_steps)
        last_save = time.time()
      if decision.stop != hosts.RUNNING:
        return decision
      self._learner.step()
      local.increment(learner_steps=self._k)

  def _exchange(self, *, save: bool) -> hosts.Decision:
    """One exchange of the hosts' rows; publishes the run's actor steps."""
    self._host_steps = int(self._counter.get_counts().get('actor_steps', 0))
    row = hosts.make_row(
        actor_steps=self._host_steps,
        stop=hosts.stop_code(self._control.stop_reason()), save=save)
    decision = hosts.decide(hosts.exchange(row),
                            max_actor_steps=self._run.max_actor_steps)
    self._counter.increment(
        global_actor_steps=decision.global_actor_steps - self._published)
    self._published = decision.global_actor_steps
    return decision
