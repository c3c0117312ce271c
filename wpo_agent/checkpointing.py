"""Orbax checkpoints of the learner's TrainingState plus JSON metadata.

A checkpoint holds everything needed to continue a run: the full TrainingState
(params, targets, optimiser and dual states, SGD step count, PRNG key) and a
JSON dict of counters (actor steps, episodes, inserts, ...) and the actor's RNG
state. Saves are synchronous so that a save issued on SIGTERM is complete
before the process exits. A reverb replay table has its own reverb checkpoint
(replay.make_checkpointer), written just before each of these; the device
replay's buffer (device_replay.py) is saved inside it, as the item 'replay'.
"""

import json
import os
import shutil
from typing import Any, Dict, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from wpo_agent import workdir as workdir_lib


class Checkpointer:
  """Keeps the newest `max_to_keep` checkpoints under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, max_to_keep: int = 2):
    self._directory = workdir_lib.Workdir(workdir).checkpoints
    self._manager = ocp.CheckpointManager(
        self._directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True,
            enable_async_checkpointing=False))

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
    given, the device replay's host copy at `step`."""
    if step in self._manager.all_steps():
      return  # already saved at this step (e.g. periodic save then SIGTERM)
    items = dict(state=ocp.args.StandardSave(
                     jax.tree.map(np.asarray, jax.device_get(state))),
                 metadata=ocp.args.JsonSave(metadata))
    if replay is not None:
      items['replay'] = ocp.args.StandardSave(replay)
    self._manager.save(step, args=ocp.args.Composite(**items))
    self._manager.wait_until_finished()

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

  def latest_metadata(self) -> Optional[Dict[str, Any]]:
    """The newest checkpoint's JSON metadata alone (no arrays), or None."""
    step = self._manager.latest_step()
    if step is None:
      return None
    restored = self._manager.restore(step, args=ocp.args.Composite(
        metadata=ocp.args.JsonRestore()))
    return dict(restored['metadata'])

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
  metadata.json, written under a temporary name and renamed when complete.
  """

  def __init__(self, workdir: str, max_to_keep: int = 2):
    self._directory = workdir_lib.Workdir(workdir).checkpoints
    self._max_to_keep = max_to_keep
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
    final = os.path.join(self._directory, str(step))
    if os.path.exists(final):
      return
    tmp = f'{final}.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name, tree in (('state', state), ('replay', replay)):
      if tree is not None:
        leaves = jax.tree.leaves(jax.device_get(tree))
        np.savez(os.path.join(tmp, f'{name}.npz'),
                 *[np.asarray(x) for x in leaves])
    with open(os.path.join(tmp, 'metadata.json'), 'w') as f:
      json.dump(metadata, f)
    os.replace(tmp, final)
    for old in self.all_steps()[:-self._max_to_keep]:
      shutil.rmtree(os.path.join(self._directory, str(old)))

  def _load(self, step: Optional[int], name: str, like: Any) -> Any:
    step = self.latest_step() if step is None else step
    with np.load(os.path.join(self._directory, str(step), f'{name}.npz')) as z:
      leaves = [z[f'arr_{i}'] for i in range(len(z.files))]
    return jax.tree.unflatten(jax.tree.structure(like), leaves)

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
_REPLAY_FILLED = 'device_replay_filled_per_shard'


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
  checkpointer.save(step, state, dict(metadata, **{_REPLAY_FILLED: filled}),
                    replay=replay)


def restore_learner(checkpointer: Checkpointer, learner, *,
                    with_replay: bool,
                    step: Optional[int] = None) -> Optional[Dict[str, Any]]:
  """Restores the checkpoint at `step` (default: the newest) into `learner`
  (and its device replay when saved and `with_replay`); returns its
  metadata, or None if there is none."""
  restored = checkpointer.restore(learner.save(), step)
  if restored is None:
    return None
  state, metadata = restored
  learner.restore(state)
  if with_replay:
    restore_replay(checkpointer, learner, metadata, step)
  return metadata


def restore_replay(checkpointer: Checkpointer, learner,
                   metadata: Dict[str, Any], step: Optional[int]) -> None:
  """The device replay saved at `step` (if it was) into `learner`."""
  if _REPLAY_FILLED in metadata:
    learner.restore_replay(metadata[_REPLAY_FILLED],
                           lambda like: checkpointer.restore_replay(like, step))
