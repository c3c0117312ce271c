"""The bodies of the program's heavy nodes: replay, learner, actors, evaluator
(no Launchpad import here; the counter and step limiter: bookkeeping.py).

Each node receives the launch `spec` (a JSON-able dict written by
`supervisor.make_spec`: run options, config and where the run resumes from)
and handles to the nodes it talks to: a reverb.Client for replay, courier
clients for the learner (get_variables) and the counter (increment /
get_counts). Every part comes from the same `Builder` the single-process
runner uses; with several hosts the learner's loop is `lockstep.Lockstep`.
Every node reports its state through `control.Control`, polls its STOP file,
and watches the program (`bookkeeping.join_program`).
"""

import os
import threading
import time
from typing import Any, ContextManager, Dict

from acme.utils import counting

from wpo_agent import builder as builder_lib
from wpo_agent import checkpointing
from wpo_agent import config as config_lib
from wpo_agent import device_replay
from wpo_agent import nstep_writer
from wpo_agent import replay_checkpoint
from wpo_agent import runs
from wpo_agent import workdir as workdir_lib
from wpo_agent.distributed import bookkeeping
from wpo_agent.distributed import control as control_lib
from wpo_agent.distributed import hosts
from wpo_agent.distributed import lockstep

Spec = Dict[str, Any]
_COUNT_EVERY = 100  # actor steps between counter increments / STOP checks
# The learner serves the evaluator's final parameters for at most this long
# after its own checkpoint, before it exits.
_FINAL_EVAL_WAIT_S = 60.0
_PUSH_COUNTS_S = 0.25  # how often an actor adds its steps to the counter
# Fault injection for the lifetime tests: WPO_FAULT_INJECT=actor_1@200 makes
# actor 1 raise after 200 of its steps.
_FAULT_ENV = 'WPO_FAULT_INJECT'


class _Node:
  """What every node derives from the spec."""

  def __init__(self, spec: Spec):
    bookkeeping.join_program(spec)
    self.spec = spec
    self.run = runs.RunOptions(**spec['run'])
    self.config = config_lib.WPOConfig(**spec['config'])
    self.builder = builder_lib.Builder(self.config, self.run)
    self.control = control_lib.Control(self.run.workdir)
    self.start_actor_steps = int(spec['start_actor_steps'])  # this host's
    # The run's actor steps: with several hosts, the sum over hosts, which
    # the learner publishes in the counter after each exchange (hosts.py).
    self.steps_key = ('global_actor_steps' if self.run.num_hosts > 1
                      else 'actor_steps')
    self.start_run_steps = int(spec.get('start_global_actor_steps',
                                        self.start_actor_steps))

  def reporting(self, name: str) -> ContextManager[None]:
    return bookkeeping.reporting(self.control, name, self.run.num_hosts)

  def elapsed(self) -> float:
    """Run wall time, continued across resumes."""
    return (self.spec['start_elapsed_s'] + time.time() -
            self.spec['launch_time'])


def _fault_step(name: str):
  node, _, steps = os.environ.get(_FAULT_ENV, '').partition('@')
  return int(steps or 0) if node == name else None


def make_replay_tables(spec: Spec):
  """Replay node: the ratio-limited table (reverb backend) or the transport
  queue to the learner's device replay (device backend)."""
  return [_Node(spec).builder.replay_table()]


class LearnerNode:
  """Courier node: serves get_variables to actors and runs the SGD loop.

  On STOP a watcher thread checkpoints the last completed step and ends the
  process; the SGD thread may be blocked on the replay rate limiter by then
  (actors stopped inserting), so it cannot be relied upon to notice.
  """

  def __init__(self, replay_client, counter, spec: Spec):
    # Before hosts.join, which may wait for the others.
    bookkeeping.join_program(spec)
    run = runs.RunOptions(**spec['run'])
    if run.num_hosts > 1:  # before anything else in this process uses JAX
      hosts.join(coordinator_address=run.coordinator_address,
                 num_hosts=run.num_hosts, host_id=run.host_id)
    self._node = node = _Node(spec)
    self._replay_client = replay_client
    self._counter = counter
    self._learner = node.builder.learner(
        replay_client, logger=node.builder.loggers('train', 'learner_steps'))
    self._checkpointer = checkpointing.open_checkpointer(
        node.run.workdir, num_hosts=node.run.num_hosts)
    self._restore()
    # Before the courier server starts (after this returns): actors wait for
    # parameters, so none runs ahead of the ratio while the step compiles.
    self._learner.compile(
        device_replay.transition_item(node.builder.environment_spec))

  def get_variables(self, names):
    return self._learner.get_variables(names)

  def _restore(self) -> None:
    """The checkpoint the supervisor read the counts of (with several hosts:
    the newest every host can load, lockstep.restore)."""
    with_replay = self._node.run.checkpoint_replay
    if self._node.run.num_hosts > 1:
      restored = lockstep.restore(self._checkpointer, self._learner,
                                  with_replay=with_replay)
      # An older step than this host's newest (another host lacks that one):
      # its counts, before any actor starts (they wait for parameters).
      fix = lockstep.count_corrections(self._node.spec['initial_counts'],
                                       restored)
      if fix:
        self._counter.increment(**fix)
      self._published = int((restored or {}).get('global_actor_steps', 0))
      return
    spec = self._node.spec
    if 'resume_step' in spec and spec['resume_step'] is None:
      return  # the workdir had no checkpoint
    checkpointing.restore_learner(self._checkpointer, self._learner,
                                  with_replay=with_replay,
                                  step=spec.get('resume_step'))

  def _save(self, step=None, actor_steps=None) -> None:
    """A checkpoint at `step` (default: the counter's actor steps), whose
    metadata holds the counts, with this host's actor steps replaced by
    `actor_steps` where given (lockstep: those the hosts' decision used)."""
    if self._node.run.checkpoint_replay:
      # First, so that it is never older than the learner's.
      replay_checkpoint.save(self._replay_client.checkpoint,
                             workdir_lib.Workdir(self._node.run.workdir).replay)
    counts = self._counter.get_counts()
    meta = dict(counts, elapsed_s=self._node.elapsed())
    if actor_steps is not None:
      meta['actor_steps'] = actor_steps
    checkpointing.save_learner(
        self._checkpointer,
        int(counts.get('actor_steps', 0)) if step is None else step,
        self._learner, meta, with_replay=self._node.run.checkpoint_replay)

  def _watch_for_stop(self) -> None:
    control = self._node.control
    while not control.stop_requested():
      time.sleep(0.2)
    code = 0
    try:
      self._save()
      if control.reached_step_limit():
        # Keep serving parameters while the evaluator makes its final eval.
        control.wait_until_ended('evaluator', _FINAL_EVAL_WAIT_S)
      control.set_status('learner', control_lib.DONE,
                         learner_steps=self._learner.sgd_steps)
    except Exception as e:  # pylint: disable=broad-except
      control.record_failure('learner', e)
      code = 1
    os._exit(code)  # the SGD thread may be blocked inside reverb

  def run(self) -> None:
    node = self._node
    if node.run.num_hosts > 1:
      lockstep.Lockstep(
          learner=self._learner, counter=self._counter, control=node.control,
          run=node.run,
          sgd_steps_per_call=node.config.sgd_steps_per_learner_step,
          published_steps=self._published,
          save=lambda step, host_steps: self._save(step=step,
                                                   actor_steps=host_steps),
          final_eval_wait_s=_FINAL_EVAL_WAIT_S).run()
      return
    with node.control.node('learner'):
      threading.Thread(target=self._watch_for_stop, daemon=True).start()
      k = node.config.sgd_steps_per_learner_step
      local = counting.Counter(self._counter, time_delta=1.0)
      last_save = time.time()
      while True:  # ends in the watcher thread (os._exit) after STOP
        self._learner.step()
        local.increment(learner_steps=k)
        if time.time() - last_save >= node.run.checkpoint_every_s:
          self._save()
          last_save = time.time()


def run_actor(index: int, replay_client, learner, counter, spec: Spec) -> None:
  """Actor node: steps its envs_per_actor environments (one policy call per
  round) and writes their n-step transitions."""
  node = _Node(spec)
  name = f'actor_{index}'
  with node.reporting(name):
    loop = node.builder.actor_loop(
        learner, actor_index=index, start_actor_steps=node.start_actor_steps,
        writer=node.builder.writer(
            replay_client, should_stop=node.control.stop_requested))
    # Counts reach the step limiter within ~0.25 s: at thousands of steps/s
    # (before min_replay_size nothing throttles the actors) a longer delay is
    # an overshoot of the step limit by as many steps.
    local = counting.Counter(counter, time_delta=_PUSH_COUNTS_S)
    fail_at = _fault_step(name)
    while not node.control.stop_requested():
      steps_before, episodes_before = loop.steps, loop.episodes
      try:
        loop.run(_COUNT_EVERY)  # whole rounds of envs_per_actor steps
      except nstep_writer.WriterStopped:
        break  # the learner stopped sampling: the table takes no more
      if fail_at is not None and loop.steps >= fail_at:
        raise RuntimeError(f'injected fault in {name} at step {loop.steps} '
                           f'({_FAULT_ENV})')
      local.increment(actor_steps=loop.steps - steps_before,
                      episodes=loop.episodes - episodes_before)


def run_evaluator(learner, counter, spec: Spec) -> None:
  """Evaluator node: deterministic-policy returns every `eval_every` steps,
  and once more at the end of a run that reached its step limit."""
  node = _Node(spec)
  with node.reporting('evaluator'):
    evaluator = node.builder.evaluator(
        learner, start_actor_steps=node.start_run_steps)

    def counts():
      c = counter.get_counts()
      return dict(actor_steps=int(c.get(node.steps_key, 0)),
                  learner_steps=int(c.get('learner_steps', 0)),
                  wall_time=node.elapsed())

    while not node.control.stop_requested():
      now = counts()
      if evaluator.due(now['actor_steps']):
        evaluator.evaluate(**now)
      else:
        time.sleep(0.5)
    if node.control.reached_step_limit():
      evaluator.finish(**counts())
