"""Orbax checkpoints of the learner's TrainingState plus JSON metadata.

A checkpoint holds everything needed to continue a run: the full TrainingState
(params, targets, optimiser and dual states, SGD step count, PRNG key) and a
JSON dict of counters (actor steps, episodes, inserts, ...) and the actor's RNG
state. Saves are synchronous so that a save issued on SIGTERM is complete
before the process exits. The replay buffer has its own reverb checkpoint
(replay.make_checkpointer), written just before each of these.
"""

import os
from typing import Any, Dict, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:
  """Keeps the newest `max_to_keep` checkpoints under `<workdir>/checkpoints`."""

  def __init__(self, workdir: str, max_to_keep: int = 2):
    self._directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
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

  def save(self, step: int, state: Any, metadata: Dict[str, Any]) -> None:
    """Saves `state` (a pytree of arrays) and JSON-able `metadata` at `step`."""
    if step in self._manager.all_steps():
      return  # already saved at this step (e.g. periodic save then SIGTERM)
    state = jax.tree.map(np.asarray, jax.device_get(state))
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        metadata=ocp.args.JsonSave(metadata)))
    self._manager.wait_until_finished()

  def restore(self, like: Any,
              step: Optional[int] = None) -> Optional[Tuple[Any, Dict[str, Any]]]:
    """Restores the pytree (structured like `like`) and metadata, or None."""
    step = self._manager.latest_step() if step is None else step
    if step is None:
      return None
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype),
        jax.device_get(like))
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract),
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
