"""Orbax checkpoints of the learner's TrainingState plus JSON metadata.

A checkpoint holds everything needed to continue a run: the full TrainingState
(params, targets, optimiser and dual states, SGD step count, PRNG key) and a
JSON dict of counters (actor steps, episodes, inserts, ...) and the actor's RNG
state. Saves are synchronous so that a save issued on SIGTERM is complete
before the process exits. A reverb replay table has its own reverb checkpoint
(replay.make_checkpointer, replay_checkpoint.py), written just before each of
these; the device replay's buffer (device_replay.py) is saved inside it, as
the item 'replay'.

Kills, damage, a full disk (checkpoint_recovery.py): a checkpoint is complete
or absent (orbax renames a step's folder once every item is written); a
resume restores the newest checkpoint that reads back whole, setting newer
damaged ones aside with one `warning:` line, and stops with one line
(CheckpointError) when none does; a failed save removes its partial files and
stops the run with one line, the previous checkpoint intact.

Disk: max_to_keep (2) checkpoints of C bytes each (the state; with the device
replay, plus its filled slots: ~628 B per humanoid transition), and one more
while a save runs (the oldest is pruned only once the new one is complete): at
most (max_to_keep + 1) x C. Besides: Reverb's replay checkpoint (reverb
backend with --checkpoint_replay: one, two while Reverb saves), and any
`<step>.damaged` folder set aside by a resume, until you delete it.
"""

import json
import os
import shutil
from typing import Any, Dict, List, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from wpo_agent import checkpoint_recovery as recovery
from wpo_agent import workdir as workdir_lib

# The suffix of orbax's folder for a save in progress (atomicity_types).
_ORBAX_TMP = '.orbax-checkpoint-tmp'
_HOST_TMP = '.tmp'


class Checkpointer:
  """Keeps the newest `max_to_keep` checkpoints under `<workdir>/checkpoints`
  (on disk: at most max_to_keep + 1 while a save runs, see the module
  docstring)."""

  def __init__(self, workdir: str, max_to_keep: int = 2):
    self._directory = workdir_lib.Workdir(workdir).checkpoints
    self._manager = ocp.CheckpointManager(
        self._directory, options=self._options(max_to_keep))

  def _options(self, max_to_keep: int) -> ocp.CheckpointManagerOptions:
    return ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False)

  @property
  def directory(self) -> str:
    return self._directory

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> Tuple[int, ...]:
    return tuple(self._manager.all_steps())

  def save(self, step: int, state: Any, metadata: Dict[str, Any],
           replay: Optional[Any] = None) -> None:
    """Saves `state` (a pytree of arrays), JSON-able `metadata` and, if
    given, the device replay's host copy at `step`.

    Raises CheckpointError (one line; 'disk full' when it is) if the disk
    fails it: its partial files are removed and the previous checkpoint is
    intact.
    """
    if step in self._manager.all_steps():
      return  # already saved at this step (e.g. periodic save then SIGTERM)
    items = dict(state=ocp.args.StandardSave(
                     jax.tree.map(np.asarray, jax.device_get(state))),
                 metadata=ocp.args.JsonSave(metadata))
    if replay is not None:
      items['replay'] = ocp.args.StandardSave(replay)
    previous = self._manager.latest_step()
    try:
      with recovery.quiet_orbax():
        self._manager.save(step, args=ocp.args.Composite(**items))
        self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      recovery.drop_late_callbacks()
      recovery.remove_unfinished(self._directory,
                                 lambda name: name == f'{step}{_ORBAX_TMP}')
      if recovery.is_io_error(e):
        raise recovery.save_error(
            self._directory, f'checkpoint {step}', e,
            kept=recovery.previous_kept(previous)) from e
      raise

  def read(self, step: int) -> Dict[str, Any]:
    """Reads every item of checkpoint `step` back, as saved (numpy, no
    device); its metadata. Whatever is damaged raises."""
    metadata = self._metadata(step)
    items = dict(state=ocp.args.StandardRestore(),
                 metadata=ocp.args.JsonRestore())
    if _has_replay(metadata, os.path.join(self._directory, str(step),
                                          'replay')):
      items['replay'] = ocp.args.StandardRestore()
    self._manager.restore(step, args=ocp.args.Composite(**items))
    return metadata

  def restore_replay(self, like: Any, step: Optional[int] = None) -> Any:
    """The device replay saved with the newest checkpoint (shapes of `like`)."""
    step = self._manager.latest_step() if step is None else step
    restored = self._manager.restore(step, args=ocp.args.Composite(
        replay=ocp.args.StandardRestore(_abstract(like))))
    return restored['replay']

  def restore(self, like: Any,
              step: Optional[int] = None) -> Optional[Tuple[Any, Dict[str, Any]]]:
    """Restores the pytree (structured like `like`) and metadata, or None."""
    step = self._manager.latest_step() if step is None else step
    if step is None:
      return None
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(jax.device_get(like))),
        metadata=ocp.args.JsonRestore()))
    return restored['state'], dict(restored['metadata'])

  def _metadata(self, step: int) -> Dict[str, Any]:
    restored = self._manager.restore(step, args=ocp.args.Composite(
        metadata=ocp.args.JsonRestore()))
    return dict(restored['metadata'])

  def latest_metadata(self) -> Optional[Dict[str, Any]]:
    """The newest checkpoint's JSON metadata alone (no arrays), or None."""
    step = self._manager.latest_step()
    return None if step is None else self._metadata(step)

  def set_aside(self, step: int) -> str:
    """Renames checkpoint `step` to `<step>.damaged` (no longer a step);
    returns its new path."""
    path = recovery.set_aside(self._directory, str(step))
    self._manager.reload()
    return path

  def remove_unfinished(self) -> List[str]:
    """Deletes the folders of saves that never finished (a kill, a full
    disk); only the run that owns the workdir may, as one may be a save in
    progress."""
    return recovery.remove_unfinished(self._directory,
                                      lambda name: _ORBAX_TMP in name)

  def close(self) -> None:
    self._manager.close()


class HostCheckpointer:
  """Checkpointer's interface for the hosts of a multi-host run: each host
  saves its own, in its own workdir, when the hosts agree to
  (distributed/hosts.py).

  Not orbax: inside a multi-process JAX job orbax writes numpy arrays from
  JAX process 0 only (its type handlers test `process_index() == 0`), so
  host 1's arrays would never reach its disk. Each checkpoint is a folder
  `<step>/` with state.npz, replay.npz (leaves in tree order) and
  metadata.json, written as `<step>.tmp/` and renamed when complete; the
  oldest beyond `max_to_keep` is pruned after that (zip's CRCs make a
  damaged file fail to read back).
  """

  def __init__(self, workdir: str, max_to_keep: int = 2):
    self._directory = workdir_lib.Workdir(workdir).checkpoints
    self._max_to_keep = max_to_keep
    self._saved = set()  # steps this process saved
    os.makedirs(self._directory, exist_ok=True)

  @property
  def directory(self) -> str:
    return self._directory

  def all_steps(self) -> Tuple[int, ...]:
    return tuple(sorted(int(n) for n in os.listdir(self._directory)
                        if n.isdigit()))

  def latest_step(self) -> Optional[int]:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def save(self, step: int, state: Any, metadata: Dict[str, Any],
           replay: Optional[Any] = None) -> None:
    """As Checkpointer.save. A step saved by an earlier launch (newer than
    the one the hosts resumed from) is replaced."""
    if step in self._saved:
      return
    final = os.path.join(self._directory, str(step))
    tmp = f'{final}{_HOST_TMP}'
    previous = self.latest_step()
    shutil.rmtree(tmp, ignore_errors=True)
    try:
      self._write(tmp, state, metadata, replay)
    except Exception as e:  # pylint: disable=broad-except
      shutil.rmtree(tmp, ignore_errors=True)
      if recovery.is_io_error(e):
        raise recovery.save_error(
            self._directory, f'checkpoint {step}', e,
            kept=recovery.previous_kept(previous)) from e
      raise
    self._commit(tmp, final)
    self._saved.add(step)
    for old in self.all_steps()[:-self._max_to_keep]:
      shutil.rmtree(os.path.join(self._directory, str(old)))

  def _write(self, tmp: str, state: Any, metadata: Dict[str, Any],
             replay: Optional[Any]) -> None:
    os.makedirs(tmp)
    for name, tree in (('state', state), ('replay', replay)):
      if tree is not None:
        leaves = jax.tree.leaves(jax.device_get(tree))
        np.savez(os.path.join(tmp, f'{name}.npz'),
                 *[np.asarray(x) for x in leaves])
    with open(os.path.join(tmp, 'metadata.json'), 'w') as f:
      json.dump(metadata, f)

  def _commit(self, tmp: str, final: str) -> None:
    """Makes the complete `tmp` the checkpoint `final`."""
    shutil.rmtree(final, ignore_errors=True)  # an earlier launch's
    os.replace(tmp, final)

  def _leaves(self, step: int, name: str) -> List[np.ndarray]:
    with np.load(os.path.join(self._directory, str(step), f'{name}.npz')) as z:
      return [z[f'arr_{i}'] for i in range(len(z.files))]

  def read_leaves(self, step: int) -> Tuple[List[np.ndarray], Dict[str, Any],
                                            Optional[List[np.ndarray]]]:
    """(state leaves, metadata, replay leaves or None) of checkpoint `step`,
    read back whole; whatever is damaged raises."""
    metadata = self._metadata(step)
    replay = (self._leaves(step, 'replay') if _has_replay(
        metadata, os.path.join(self._directory, str(step), 'replay.npz'))
              else None)
    return self._leaves(step, 'state'), metadata, replay

  def read(self, step: int) -> Dict[str, Any]:
    """As Checkpointer.read."""
    return self.read_leaves(step)[1]

  def _load(self, step: Optional[int], name: str, like: Any) -> Any:
    step = self.latest_step() if step is None else step
    return jax.tree.unflatten(jax.tree.structure(like),
                              self._leaves(step, name))

  def restore_replay(self, like: Any, step: Optional[int] = None) -> Any:
    return self._load(step, 'replay', like)

  def restore(self, like: Any,
              step: Optional[int] = None) -> Optional[Tuple[Any, Dict[str, Any]]]:
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    return self._load(step, 'state', like), self._metadata(step)

  def _metadata(self, step: int) -> Dict[str, Any]:
    with open(os.path.join(self._directory, str(step), 'metadata.json')) as f:
      return json.load(f)

  def latest_metadata(self) -> Optional[Dict[str, Any]]:
    step = self.latest_step()
    return None if step is None else self._metadata(step)

  def set_aside(self, step: int) -> str:
    return recovery.set_aside(self._directory, str(step))

  def remove_unfinished(self) -> List[str]:
    return recovery.remove_unfinished(
        self._directory, lambda name: name.endswith(_HOST_TMP) and
        name[:-len(_HOST_TMP)].isdigit())

  def close(self) -> None:
    pass


def open_checkpointer(workdir: str, *, num_hosts: int = 1):
  """The checkpointer of a run on `num_hosts` hosts (fixed on resume)."""
  return Checkpointer(workdir) if num_hosts == 1 else HostCheckpointer(workdir)


def _abstract(like: Any) -> Any:
  """Shapes and dtypes of the host pytree `like`, for orbax's restore."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), like)


# Metadata key: filled slots per device shard of a saved device replay.
REPLAY_FILLED = 'device_replay_filled_per_shard'


def save_learner(checkpointer: Checkpointer, step: int, learner,
                 metadata: Dict[str, Any], *, with_replay: bool) -> None:
  """Saves a learner.WPOLearner's state (and its device replay if any and
  `with_replay`) with `metadata`, all taken at one instant."""
  state, replay = learner.snapshot()
  filled = 0 if replay is None else int(np.shape(replay['data'][0])[1])
  # An empty buffer (a run stopped before its first chunk arrived) is saved
  # as none: orbax refuses zero-size arrays, and a resume starts it empty.
  if not filled or not with_replay:
    checkpointer.save(step, state, metadata)
    return
  checkpointer.save(step, state, dict(metadata, **{REPLAY_FILLED: filled}),
                    replay=replay)


def _has_replay(metadata: Dict[str, Any], path: str) -> bool:
  """Whether a checkpoint holds a replay (a missing one is then damage)."""
  return REPLAY_FILLED in metadata or os.path.exists(path)


def restore_learner(checkpointer: Checkpointer, learner, *,
                    with_replay: bool, step: Optional[int] = None,
                    warn=recovery.warn_stderr) -> Optional[Dict[str, Any]]:
  """Restores a checkpoint into `learner` (and its device replay when saved
  and `with_replay`); returns its metadata, or None if there is none.

  `step` None: the newest that reads back whole, after removing unfinished
  saves (only the run that owns the workdir may call it so); newer damaged
  ones are set aside with one `warning:` line (`warn`), and none readable is
  a CheckpointError. A given `step` (chosen by resume_point) is restored or
  raises CheckpointError.
  """
  def load(s: int) -> Dict[str, Any]:
    state, metadata = recovery.reading(checkpointer.restore, learner.save(), s)
    learner.restore(state)
    if with_replay:
      restore_replay(checkpointer, learner, metadata, s)
    return metadata

  if step is not None:
    try:
      return load(step)
    except recovery.Unreadable as e:
      raise recovery.CheckpointError(
          f'checkpoint {step} in {checkpointer.directory} cannot be loaded '
          f'({e}), although it read back whole when this launch started: run '
          'the same command again to resume from the newest that does') from e
  checkpointer.remove_unfinished()
  picked = recovery.newest_loadable(
      checkpointer.all_steps(), load, directory=checkpointer.directory,
      set_aside=checkpointer.set_aside, warn=warn)
  return None if picked is None else picked[1]


def restore_replay(checkpointer: Checkpointer, learner,
                   metadata: Dict[str, Any], step: Optional[int]) -> None:
  """The device replay saved at `step` (if it was) into `learner`; a failed
  read raises checkpoint_recovery.Unreadable."""
  if REPLAY_FILLED in metadata:
    learner.restore_replay(
        metadata[REPLAY_FILLED],
        lambda like: recovery.reading(checkpointer.restore_replay, like, step))


def resume_point(workdir: str, *, num_hosts: int = 1,
                 warn=recovery.warn_stderr
                 ) -> Optional[Tuple[int, Dict[str, Any]]]:
  """(step, metadata) of the checkpoint a launch resumes from: the newest
  that reads back whole (every item, as restore_learner would read it), or
  None if the workdir has none.

  For the launcher that owns the workdir (distributed/supervisor.py), before
  any node starts: it removes unfinished saves and sets newer damaged
  checkpoints aside with one `warning:` line (`warn`), so that the learner,
  restoring this step, and the counts read here agree. CheckpointError if no
  checkpoint reads back.
  """
  checkpointer = open_checkpointer(workdir, num_hosts=num_hosts)
  try:
    checkpointer.remove_unfinished()
    return recovery.newest_loadable(
        checkpointer.all_steps(),
        lambda step: recovery.reading(checkpointer.read, step),
        directory=checkpointer.directory, set_aside=checkpointer.set_aside,
        warn=warn)
  finally:
    checkpointer.close()
