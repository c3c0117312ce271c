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
import time
from typing import Any, Dict

import reverb

from wpo_agent import builder as builder_lib
from wpo_agent import checkpointing
from wpo_agent import config as config_lib
from wpo_agent import device_replay
from wpo_agent import lifetime
from wpo_agent import logs
from wpo_agent import replay as replay_lib
from wpo_agent import resume
from wpo_agent import runs
from wpo_agent import stopping


def train(run: runs.RunOptions, config: config_lib.WPOConfig) -> Dict[str, Any]:
  """Trains until `max_actor_steps` or a stop signal; returns a summary dict.

  Raises lifetime.WorkdirInUseError, before anything is written, while
  processes of another run hold the workdir.
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
  replay = _Replay(builder)
  counts = dict(actor_steps=0, learner_steps=0, episodes=0, elapsed_s=0.0)
  learner = builder.learner(replay.client, logs.WithCounts(
      builder.loggers('train', 'learner_steps'), counts, ('actor_steps',)))
  # With the device replay the learner's feed keeps the ratio over what it
  # has drained; with reverb, `replay` keeps it over the actor's steps.
  replay.use_feed(learner.source.feed
                  if builder.replay_backend == 'device' else None)
  checkpointer = checkpointing.Checkpointer(run.workdir)
  _restore(checkpointer, learner, counts, replay, run, say)
  actor = builder.actor_loop(learner, actor_index=0, writer=replay.writer,
                             start_actor_steps=counts['actor_steps'])
  evaluator = builder.evaluator(learner,
                                start_actor_steps=counts['actor_steps'])
  progress = logs.Progress(run.max_actor_steps, config.batch_size)
  progress_due = logs.Every(run.progress_every_s)
  checkpoint_due = logs.Every(run.checkpoint_every_s)
  start, elapsed_before = time.time(), counts['elapsed_s']
  episodes_before = counts['episodes']

  def clock():  # run wall time, continued across resumes
    return elapsed_before + time.time() - start

  def save():
    counts.update(elapsed_s=clock(), learner_steps=learner.sgd_steps)
    if run.checkpoint_replay:
      replay.checkpoint()  # first, so the learner's checkpoint is never older
    checkpointing.save_learner(checkpointer, counts['actor_steps'], learner,
                               dict(counts), with_replay=run.checkpoint_replay)

  say(f'Training WPO on {run.domain}-{run.task} to {run.max_actor_steps} '
      f'actor steps; logs and checkpoints in {os.path.abspath(run.workdir)}')
  with stopping.GracefulStop() as stop:
    while counts['actor_steps'] < run.max_actor_steps and not stop.requested:
      steps_before = actor.steps
      actor.step()  # one step of each of the actor's environments
      made = actor.steps - steps_before
      counts['episodes'] = episodes_before + actor.episodes
      counts['actor_steps'] += made
      replay.inserted(made)
      while replay.learner_call_owed():
        learner.step()
        replay.learner_called()
      if progress_due.due():
        say(progress.line(counts['actor_steps'], learner.sgd_steps,
                          counts['actor_steps'], evaluator.last_return))
      if checkpoint_due.due():
        save()
      if counts['actor_steps'] < run.max_actor_steps:
        evaluator.maybe_evaluate(actor_steps=counts['actor_steps'],
                                 learner_steps=learner.sgd_steps,
                                 wall_time=clock())
    stopped = stop.requested
  if not stopped:
    evaluator.finish(actor_steps=counts['actor_steps'],
                     learner_steps=learner.sgd_steps, wall_time=clock())
  save()
  checkpointer.close()
  replay.close()
  return runs.summary(run, actor_steps=counts['actor_steps'],
                      learner_steps=learner.sgd_steps,
                      last_eval_return=evaluator.last_return,
                      elapsed_s=clock(), stopped_early=stopped)


class _Replay:
  """The in-process Reverb server, the actor's writer, and the ratio gate
  (the learner's device feed's gate with the device replay)."""

  def __init__(self, builder: builder_lib.Builder):
    self.min_size = builder.config.min_replay_size
    self._table = builder.table
    self._feed = None
    # With a replay checkpoint in the workdir, the server starts from it.
    self._server = reverb.Server([builder.replay_table()], port=None,
                                 checkpointer=builder.replay_checkpointer())
    self.client = reverb.Client(f'localhost:{self._server.port}')
    self.items_at_start = self._items()  # > 0 when a checkpoint was restored
    self._gate = builder.ratio_gate(items_in_replay=self.items_at_start)
    self.writer = builder.writer(self.client)
    self._filled = False  # this session's table has reached min_size

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
    self.client.checkpoint()

  def close(self) -> None:
    # Close the writer while the server still runs: closing it later (when it
    # is garbage collected) waits out a 10 s flush timeout on a stopped server.
    self.writer.close()
    self._server.stop()


def _restore(checkpointer, learner, counts, replay, run, say) -> None:
  """Restores the learner and counts if the workdir has a checkpoint."""
  meta = checkpointing.restore_learner(checkpointer, learner,
                                       with_replay=run.checkpoint_replay)
  if meta is not None:
    counts.update({k: meta[k] for k in counts if k in meta})
    items = replay.restored_items()
    say(f'Resumed from {checkpointer.directory} at actor step '
        f'{counts["actor_steps"]} (learner step {learner.sgd_steps}); ' + (
            f'replay restored with {items} items.' if items
            else f'replay refills to {replay.min_size} '
            'before learning resumes.'))
