"""Device mesh from the config, the few shardings the trainer uses, and global batches.

One rule covers the whole project: the batch is split over *all* devices (every mesh axis),
embedding-table rows are split over all devices the same way, and everything else (dense
layers, optimizer scalars) is replicated. `mesh.axes` names the axes only so that a later
model-parallel layout can tell them apart; today both axes shard the same things.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

# The mesh axes the batch (and the embedding rows) are split over: all of them, in config
# order. Partition specs elsewhere use this as P(BATCH_AXES) for "split over all devices".
BATCH_AXES: tuple[str, ...] = ("data", "model")


def make_mesh(mesh_config: Any, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds the device mesh described by `config.mesh`.

  Args:
    mesh_config: has `shape` (ints, at most one -1 = "the remaining devices") and `axes`
      (axis names, same length), e.g. shape=(-1, 1), axes=('data', 'model').
    devices: the devices to use; default all of `jax.devices()` (every process's).

  Returns:
    A `Mesh` with Auto axis types (jit propagates shardings; shard_map is explicit).

  Raises:
    ValueError: naming `mesh.shape` / `mesh.axes` when they do not fit the device count.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = tuple(int(s) for s in mesh_config.shape)
  axes = tuple(str(a) for a in mesh_config.axes)
  n = len(devices)
  if len(shape) != len(axes):
    raise ValueError(f"mesh.shape={shape} and mesh.axes={axes} must have the same length.")
  if shape.count(-1) > 1:
    raise ValueError(f"mesh.shape={shape} has more than one -1; at most one axis can take "
                     "the remaining devices.")
  if any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"mesh.shape={shape}: every entry must be a positive int or -1.")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if n % known:
      raise ValueError(f"mesh.shape={shape}: the fixed axes ({known} devices) do not divide "
                       f"jax.device_count()={n}.")
    shape = tuple(n // known if s == -1 else s for s in shape)
  elif known != n:
    raise ValueError(f"mesh.shape={shape} needs {known} devices but jax.device_count()={n}; "
                     "set one axis to -1 to take the remaining devices.")
  return jax.make_mesh(shape, axes, axis_types=(jax.sharding.AxisType.Auto,) * len(axes),
                       devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over all mesh axes; trailing dimensions replicated."""
  return NamedSharding(mesh, P(tuple(mesh.axis_names)))


def replicated(mesh: Mesh) -> NamedSharding:
  """A full copy on every device (dense parameters, scalars)."""
  return NamedSharding(mesh, P())


def table_sharding(mesh: Mesh) -> NamedSharding:
  """Embedding table f32[V, D]: rows split over all mesh axes, the D columns kept whole."""
  return NamedSharding(mesh, P(tuple(mesh.axis_names), None))


def check_batch_size(batch_size: int, mesh: Mesh, field: str = "train.batch_size") -> None:
  """Raises a ValueError naming `field` unless `batch_size` splits evenly over the devices."""
  n = mesh.devices.size
  if batch_size <= 0 or batch_size % n:
    raise ValueError(f"{field}={batch_size} must be a positive multiple of the device count "
                     f"{n} (mesh {dict(mesh.shape)}), because the batch is split over all "
                     f"devices; e.g. {field}={max(n, batch_size // n * n)}.")


def global_batch(local: Any, mesh: Mesh) -> Any:
  """Assembles this process's slice of a batch into global arrays split over all devices.

  Args:
    local: a pytree of numpy arrays `[B_local, ...]`, this process's rows (on one host this
      is the whole batch). Every process passes the same tree structure and B_local.
  Returns:
    The same tree of `jax.Array[B_local * process_count, ...]` with `batch_sharding(mesh)`.
  """
  sharding = batch_sharding(mesh)
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local)


def put_global(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A global array from a host array that every process holds in full.

  Each process hands over only the shards its own devices hold, so this is the same
  call on one host and on many (where `jax.device_put` would need the data on every
  device's host anyway).
  """
  array = np.asarray(array)
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])
