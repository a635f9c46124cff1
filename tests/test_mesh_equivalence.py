"""The real train step on meshes (8,1), (4,2), (2,4), (1,8) equals the single-device run.

Loss, dense parameters (which see the gradients), tables and optimizer slots after a few
steps, for every table optimizer, float32, within 1e-5 relative. The same holds for the
step that accumulates its gradient over microbatches (train.microbatch_size).
"""

import jax
import numpy as np
import pytest

from configs import test as test_config
from ncf_jax import sharding, train
from ncf_jax.data import sampling
from ncf_jax.data.dataset import Dataset

NUM_USERS, NUM_ITEMS, BATCH, STEPS = 300, 200, 64, 3


def _dataset() -> Dataset:
  rng = np.random.default_rng(0)
  users = rng.integers(0, NUM_USERS, 500).astype(np.int32)
  items = rng.integers(0, NUM_ITEMS, 500).astype(np.int32)
  return Dataset(
    train_users=users, train_items=items, train_timestamps=np.zeros(500, np.int64),
    test_users=np.arange(4, dtype=np.int32), test_items=np.zeros(4, np.int32),
    test_negatives=np.ones((4, 3), np.int32), num_users=NUM_USERS, num_items=NUM_ITEMS,
    user_ids=np.arange(NUM_USERS), item_ids=np.arange(NUM_ITEMS),
  )


def _run(optimizer: str, mesh_shape: tuple[int, int] | None, microbatch_size: int = 0):
  config = test_config.get_config()
  config.embedding.optimizer = optimizer
  # Dense layers by SGD: their values then move linearly with the gradients, so comparing
  # them compares the gradients. (Adam's m/sqrt(v) turns a 1e-7 reduction-order difference
  # in a near-zero gradient into a 1e-5 difference in the update.)
  config.train.optimizer = "sgd"
  config.train.learning_rate = 0.05
  config.embedding.pad_multiple = 8
  config.mesh.shape = mesh_shape or (1, 1)
  devices = None if mesh_shape else jax.devices()[:1]
  mesh = sharding.make_mesh(config.mesh, devices=devices)
  model = train.build_model(config, _dataset())
  tx = train.dense_optimizer(config)
  state = train.create_train_state(config, model, tx, mesh)
  rng = np.random.default_rng(1)
  # Ids repeat within and across steps, so per-row sums and per-row counts matter.
  users = rng.integers(0, 40, (STEPS, BATCH)).astype(np.int32)
  items = rng.integers(0, 30, (STEPS, BATCH)).astype(np.int32)
  labels = rng.integers(0, 2, (STEPS, BATCH)).astype(np.float32)
  put = lambda a: sharding.put_global(a, sampling.epoch_sharding(mesh))
  config.train.batch_size, config.train.microbatch_size = BATCH, microbatch_size
  train.validate_config(config, mesh)
  steps = train.make_train_steps(train.make_train_step(model, tx, mesh,
                                                       microbatch_size=microbatch_size))
  state = steps(state, put(users), put(items), put(labels), 0, STEPS)
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), state)


def _assert_same_state(state, reference, what: str):
  got = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(state)}
  for path, ref in jax.tree_util.tree_leaves_with_path(reference):
    np.testing.assert_allclose(got[jax.tree_util.keystr(path)], ref, rtol=1e-5, atol=1e-7,
                               err_msg=f"{what}: {jax.tree_util.keystr(path)}")


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "adam", "dense_adam"])
def test_train_step_matches_single_device_on_every_mesh(optimizer):
  reference = _run(optimizer, None)
  assert reference.step == STEPS and reference.loss_sum > 0
  for mesh_shape in ((8, 1), (4, 2), (2, 4), (1, 8)):
    _assert_same_state(_run(optimizer, mesh_shape), reference, f"{optimizer} on {mesh_shape}")


@pytest.mark.parametrize("optimizer", ["adam", "dense_adam"])
def test_microbatched_step_equals_the_whole_batch_step(optimizer):
  # 64 rows as 4 microbatches of 16: one device, and 8 devices with 2 rows each per chunk
  # (chunks are taken per device, so the row gradients must come back in the rows' order).
  reference = _run(optimizer, None)
  for mesh_shape in (None, (4, 2)):
    _assert_same_state(_run(optimizer, mesh_shape, microbatch_size=16), reference,
                       f"{optimizer}, microbatches of 16, mesh {mesh_shape}")


@pytest.mark.parametrize("microbatch_size, message", [
  (48, "must divide train.batch_size=64"),
  (4, "multiple of the 8 devices"),
])
def test_microbatch_size_is_validated(microbatch_size, message):
  with pytest.raises(ValueError, match=message):
    _run("adam", (4, 2), microbatch_size)


def test_microbatches_refuse_the_in_batch_softmax():
  config = test_config.get_config()
  config.model.name, config.train.loss, config.train.microbatch_size = "two_tower", "softmax", 256
  mesh = sharding.make_mesh(config.mesh, devices=jax.devices()[:1])
  with pytest.raises(ValueError, match="train.microbatch_size=256 with train.loss='softmax'"):
    train.validate_config(config, mesh)
