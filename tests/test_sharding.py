"""Mesh construction from config, the shared shardings, batch-size checks, global batches."""

import types

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from ncf_jax import sharding


def mesh_config(shape, axes=("data", "model")):
  return types.SimpleNamespace(shape=shape, axes=axes)


def test_eight_devices_are_simulated():
  assert jax.device_count() == 8, "tests/conftest.py must set XLA_FLAGS before jax is imported"


@pytest.mark.parametrize("shape,expected", [
  ((-1, 1), (8, 1)), ((4, -1), (4, 2)), ((2, 4), (2, 4)), ((1, -1), (1, 8)),
])
def test_make_mesh_fills_minus_one(shape, expected):
  mesh = sharding.make_mesh(mesh_config(shape))
  assert tuple(mesh.shape.values()) == expected
  assert mesh.axis_names == ("data", "model")
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def test_make_mesh_on_a_subset_of_devices():
  mesh = sharding.make_mesh(mesh_config((-1, 1)), devices=jax.devices()[:1])
  assert tuple(mesh.shape.values()) == (1, 1)


@pytest.mark.parametrize("shape,axes,match", [
  ((3, 1), ("data", "model"), r"mesh.shape=\(3, 1\) needs 3 devices"),
  ((-1, -1), ("data", "model"), r"mesh.shape=\(-1, -1\) has more than one -1"),
  ((3, -1), ("data", "model"), r"mesh.shape=\(3, -1\).*do not divide"),
  ((0, -1), ("data", "model"), r"mesh.shape=\(0, -1\)"),
  ((-1,), ("data", "model"), r"mesh.shape=\(-1,\) and mesh.axes"),
])
def test_make_mesh_errors_name_the_field(shape, axes, match):
  with pytest.raises(ValueError, match=match):
    sharding.make_mesh(mesh_config(shape, axes))


def test_shardings_split_over_all_axes():
  mesh = sharding.make_mesh(mesh_config((4, 2)))
  assert sharding.batch_sharding(mesh).spec == P(("data", "model"))
  assert sharding.table_sharding(mesh).spec == P(("data", "model"), None)
  assert sharding.replicated(mesh).spec == P()
  assert sharding.BATCH_AXES == mesh.axis_names


def test_check_batch_size():
  mesh = sharding.make_mesh(mesh_config((-1, 1)))
  sharding.check_batch_size(16, mesh)
  with pytest.raises(ValueError, match=r"train.batch_size=12 .* multiple of the device count 8"):
    sharding.check_batch_size(12, mesh)
  with pytest.raises(ValueError, match=r"eval.batch_users=4 "):
    sharding.check_batch_size(4, mesh, field="eval.batch_users")


def test_global_batch_is_split_over_devices():
  mesh = sharding.make_mesh(mesh_config((2, 4)))
  local = {"users": np.arange(16, dtype=np.int32), "x": np.ones((16, 3), np.float32)}
  batch = sharding.global_batch(local, mesh)
  assert batch["users"].sharding.spec == P(("data", "model"))
  assert batch["x"].shape == (16, 3)
  # Each device holds 2 consecutive rows: the batch really is split, not replicated.
  assert {s.data.shape for s in batch["users"].addressable_shards} == {(2,)}
  np.testing.assert_array_equal(batch["users"], local["users"])
