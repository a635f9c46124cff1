"""Checkpoints with orbax's CheckpointManager: async saves, keep-N, restore onto any mesh.

A checkpoint holds the whole train state (dense parameters, optimizer state, tables
and their optimizer slots, step, epoch, running loss), so a resumed run continues
exactly. Restoring always goes through an abstract state that carries the *current*
mesh's shardings, so a checkpoint saved on 8 devices restores onto 4, 1 or 256.
orbax writes each checkpoint to a temporary folder and renames it when complete, so a
crash mid-save never leaves a checkpoint that looks finished.
"""

import os

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, "checkpoints")


class Checkpointer:
  """The trainer's view of orbax: latest step, save, restore, wait."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict):
    options = ocp.CheckpointManagerOptions(
      max_to_keep=max(1, config.keep),
      enable_async_checkpointing=config.async_save,
      create=True,
    )
    path = checkpoint_dir(workdir)
    if "://" not in path:  # gs:// and friends are handled by orbax itself
      path = os.path.abspath(path)
    self._manager = ocp.CheckpointManager(path, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, *, wait: bool = False) -> None:
    """Saves `state` (a pytree of jax arrays) as `step`; async unless `wait`."""
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
    if wait:
      self._manager.wait_until_finished()
    logging.info("Checkpoint of step %d %s.", step, "written" if wait else "started")

  def restore(self, abstract_state, step: int | None = None):
    """Restores `step` (default: latest) into the shapes and shardings of `abstract_state`."""
    step = self.latest_step() if step is None else step
    state = self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
    logging.info("Restored checkpoint of step %d.", step)
    return state

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def restore_raw(workdir: str, step: int | None = None):
  """Restores a checkpoint as a tree of whole numpy arrays, e.g. for pretraining.

  Every process gets every array in full, whatever mesh, device count or number of
  processes saved it (orbax's target-less restore would rebuild the saved shardings, which
  fails on another topology and gives arrays a process cannot read whole on several hosts).
  """
  path = checkpoint_dir(workdir)
  manager = ocp.CheckpointManager(path if "://" in path else os.path.abspath(path),
                                  item_handlers=ocp.StandardCheckpointHandler())
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"No checkpoint in {checkpoint_dir(workdir)}: train that run first.")
  # numpy targets (np.empty allocates lazily) make orbax read plain host arrays.
  saved = manager.item_metadata(step).tree
  target = jax.tree.map(lambda m: np.empty(m.shape, m.dtype), saved)
  return manager.restore(step, args=ocp.args.StandardRestore(target))


def abstract_like(state):
  """ShapeDtypeStructs (with shardings) of a pytree of arrays."""
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
  )
