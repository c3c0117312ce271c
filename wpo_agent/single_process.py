"""Single-process WPO training: in-process Reverb, one actor, interleaved learner.

The actor steps `envs_per_actor` environments per round (loops.ActorLoop).

Everything comes from the `Builder` the distributed program uses too; this
module only wires it into one loop. After `min_replay_size` items the learner
is stepped as often as the samples-per-insert ratio allows (`ratio.RatioGate`):
a blocking ratio limiter would deadlock a single thread, so the reverb table
here only waits for `min_replay_size`. With the device replay the learner's
feed keeps the ratio over the items it has drained from the transport queue.
"""

import dataclasses
import os
import sys
import time
from typing import Any, Dict

import reverb

from wpo_agent import builder as builder_lib
from wpo_agent import checkpoint_recovery as recovery
from wpo_agent import checkpointing
from wpo_agent import config as config_lib
from wpo_agent import device_replay
from wpo_agent import lifetime
from wpo_agent import logs
from wpo_agent import replay as replay_lib
from wpo_agent import replay_checkpoint
from wpo_agent import resume
from wpo_agent import runs
from wpo_agent import stopping
from wpo_agent import workdir as workdir_lib


def train(run: runs.RunOptions, config: config_lib.WPOConfig) -> Dict[str, Any]:
  """Trains until `max_actor_steps` or a stop signal; returns a summary dict.

  Raises lifetime.WorkdirInUseError, before anything is written, while
  processes of another run hold the workdir; checkpoint_recovery.
  CheckpointError (one line) when no checkpoint in it can be loaded, or when
  a save fails (a full disk), after closing the replay.
  """
  run = dataclasses.replace(run, single_process=True)
  builder = builder_lib.Builder(config, run)
  device_replay.check_replay_fits(config, builder.environment_spec,
                                  in_process=True)
  with lifetime.claimed(run.workdir):
    return _train(run, config, builder)


def _train(run, config, builder) -> Dict[str, Any]:
  resume.write_run_config(run.workdir, run, config)
  say = (lambda *a: None) if run.quiet else (lambda *a: print(*a, flush=True))
  session = _Session(run, config, builder, say)
  say(f'Training {config.algorithm.upper()} on {run.domain}-{run.task} to '
      f'{run.max_actor_steps} actor steps; logs and checkpoints in '
      f'{os.path.abspath(run.workdir)}')
  try:
    with stopping.GracefulStop() as stop:
      session.train(stop)
      stopped = stop.requested
    return session.finish(stopped=stopped)
  finally:
    session.close()


class _Session:
  """One launch of the runner: its parts, its counts (restored from the
  checkpoint it resumes) and its wall clock."""

  def __init__(self, run, config, builder, say):
    self.run = run
    self._say = say
    self.replay = _Replay(builder)
    self.counts = dict(actor_steps=0, learner_steps=0, episodes=0,
                       elapsed_s=0.0)
    self.learner = builder.learner(self.replay.client, logs.WithCounts(
        builder.loggers('train', 'learner_steps'), self.counts,
        ('actor_steps',)))
    # With the device replay the learner's feed keeps the ratio over what it
    # has drained; with reverb, `replay` keeps it over the actor's steps.
    self.replay.use_feed(self.learner.source.feed
                         if builder.replay_backend == 'device' else None)
    self.checkpointer = checkpointing.Checkpointer(run.workdir)
    try:
      self._restore()
    except BaseException:
      self.close()  # a reverb server left running prints errors at exit
      raise
    start_steps = self.counts['actor_steps']
    self.actor = builder.actor_loop(self.learner, actor_index=0,
                                    writer=self.replay.writer,
                                    start_actor_steps=start_steps)
    self.evaluator = builder.evaluator(self.learner,
                                       start_actor_steps=start_steps)
    self._progress = logs.Progress(run.max_actor_steps, config.batch_size)
    self._progress_due = logs.Every(run.progress_every_s)
    self._checkpoint_due = logs.Every(run.checkpoint_every_s)
    self._start, self._elapsed_before = time.time(), self.counts['elapsed_s']
    self._episodes_before = self.counts['episodes']

  def _restore(self) -> None:
    """Restores the learner and counts if the workdir has a checkpoint."""
    meta = checkpointing.restore_learner(
        self.checkpointer, self.learner, with_replay=self.run.checkpoint_replay)
    if meta is None:
      return
    counts = self.counts
    counts.update({k: meta[k] for k in counts if k in meta})
    items = self.replay.restored_items()
    self._say(f'Resumed from {self.checkpointer.directory} at actor step '
              f'{counts["actor_steps"]} (learner step '
              f'{self.learner.sgd_steps}); ' + (
                  f'replay restored with {items} items.' if items
                  else f'replay refills to {self.replay.min_size} '
                  'before learning resumes.'))

  def clock(self) -> float:
    """Run wall time, continued across resumes."""
    return self._elapsed_before + time.time() - self._start

  def train(self, stop: stopping.GracefulStop) -> None:
    """Actor rounds, each followed by the learner calls the ratio owes, until
    the step limit or `stop`; progress lines, checkpoints and evaluations
    when due."""
    run, counts = self.run, self.counts
    while counts['actor_steps'] < run.max_actor_steps and not stop.requested:
      self._act()
      while self.replay.learner_call_owed():
        self.learner.step()
        self.replay.learner_called()
      if self._progress_due.due():
        self._say(self._progress.line(
            counts['actor_steps'], self.learner.sgd_steps,
            counts['actor_steps'], self.evaluator.last_return))
      if self._checkpoint_due.due():
        self.save()
      if counts['actor_steps'] < run.max_actor_steps:
        self.evaluator.maybe_evaluate(actor_steps=counts['actor_steps'],
                                      learner_steps=self.learner.sgd_steps,
                                      wall_time=self.clock())

  def _act(self) -> None:
    """One step of each of the actor's environments, counted."""
    steps_before = self.actor.steps
    self.actor.step()
    made = self.actor.steps - steps_before
    self.counts['episodes'] = self._episodes_before + self.actor.episodes
    self.counts['actor_steps'] += made
    self.replay.inserted(made)

  def save(self) -> None:
    counts = self.counts
    counts.update(elapsed_s=self.clock(), learner_steps=self.learner.sgd_steps)
    if self.run.checkpoint_replay:
      self.replay.checkpoint()  # first, so the learner's is never older
    checkpointing.save_learner(self.checkpointer, counts['actor_steps'],
                               self.learner, dict(counts),
                               with_replay=self.run.checkpoint_replay)

  def finish(self, *, stopped: bool) -> Dict[str, Any]:
    """The final evaluation (unless stopped early) and checkpoint; the run's
    summary."""
    if not stopped:
      self.evaluator.finish(actor_steps=self.counts['actor_steps'],
                            learner_steps=self.learner.sgd_steps,
                            wall_time=self.clock())
    self.save()
    return runs.summary(self.run, actor_steps=self.counts['actor_steps'],
                        learner_steps=self.learner.sgd_steps,
                        last_eval_return=self.evaluator.last_return,
                        elapsed_s=self.clock(), stopped_early=stopped)

  def close(self) -> None:
    """Closes the checkpointer and the replay (once)."""
    if self.replay is not None:
      self.checkpointer.close()
      self.replay.close()
      self.replay = None


class _Replay:
  """The in-process Reverb server, the actor's writer, and the ratio gate
  (the learner's device feed's gate with the device replay)."""

  def __init__(self, builder: builder_lib.Builder):
    self.min_size = builder.config.min_replay_size
    self._table = builder.table
    self._feed = None
    self._replay_dir = workdir_lib.Workdir(builder.run.workdir).replay
    self._server = self._start_server(builder)
    self.client = reverb.Client(f'localhost:{self._server.port}')
    self.items_at_start = self._items()  # > 0 when a checkpoint was restored
    self._gate = builder.ratio_gate(items_in_replay=self.items_at_start)
    self.writer = builder.writer(self.client)
    self._filled = False  # this session's table has reached min_size

  def _start_server(self, builder: builder_lib.Builder) -> reverb.Server:
    """The server; with a replay checkpoint in the workdir, it starts from
    it, or empty (one `warning:` line) if Reverb cannot load it."""
    checkpointer = builder.replay_checkpointer()
    try:
      return reverb.Server([builder.replay_table()], port=None,
                           checkpointer=checkpointer)
    except RuntimeError as e:  # damage replay_checkpoint.check cannot see
      folder = checkpointer and replay_checkpoint.newest(self._replay_dir)
      if not folder:
        raise
      print(replay_checkpoint.set_aside(folder, recovery.one_line(e)),
            file=sys.stderr, flush=True)
    return reverb.Server([builder.replay_table()], port=None,
                         checkpointer=builder.replay_checkpointer())

  def _items(self) -> int:
    return replay_lib.num_items(self.client, self._table)

  def use_feed(self, feed) -> None:
    """The device replay's feed keeps the ratio (None: the reverb table)."""
    self._feed = feed

  def restored_items(self) -> int:
    """Items the replay holds at the start (0: it refills to min_size)."""
    return self._feed.items if self._feed is not None else self.items_at_start

  def inserted(self, steps: int) -> None:
    """Counts actor steps (one transition written each)."""
    self._gate.insert(steps)

  def learner_call_owed(self) -> bool:
    if self._feed is not None:
      while self._feed.pull(timeout=None):  # whatever the drain has ready
        pass
      return self._feed.gate.owed() > 0
    if not self._gate.owed():
      return False
    if not self._filled:
      # The writer holds a few items in flight, so the table can still be
      # below min_size here; sampling now would block this thread (and so the
      # actor that must insert them) forever.
      self._filled = self._items() >= self.min_size
    return self._filled

  def learner_called(self) -> None:
    self._gate.called()

  def checkpoint(self) -> None:
    self.writer.flush()  # so the checkpoint holds every item written so far
    replay_checkpoint.save(self.client.checkpoint, self._replay_dir)

  def close(self) -> None:
    # Close the writer while the server still runs: closing it later (when it
    # is garbage collected) waits out a 10 s flush timeout on a stopped server.
    self.writer.close()
    self._server.stop()
