"""Sharded tables and their optimizer slots restore from a checkpoint onto other meshes: 8, 4, 1."""

import jax
import numpy as np
from test_mesh_equivalence import _dataset  # tests/ is on sys.path (pytest prepend mode)

from configs import test as test_config
from ncf_jax import checkpoint, sharding, train
from ncf_jax.data import sampling


def _setup(num_devices: int):
  config = test_config.get_config()
  config.embedding.optimizer = "adam"  # per-row moments and counts: slots worth checking
  config.embedding.pad_multiple = 8
  mesh = sharding.make_mesh(config.mesh, devices=jax.devices()[:num_devices])
  model = train.build_model(config, _dataset())
  tx = train.dense_optimizer(config)
  return config, mesh, model, tx, train.create_train_state(config, model, tx, mesh)


def test_checkpoint_restores_onto_4_then_1_device_with_identical_values(tmp_path):
  config, mesh, model, tx, state = _setup(8)
  rng = np.random.default_rng(0)
  batch = [rng.integers(0, n, (2, 64)).astype(np.int32) for n in (300, 200)]
  batch.append(rng.integers(0, 2, (2, 64)).astype(np.float32))
  put = lambda a: sharding.put_global(a, sampling.epoch_sharding(mesh))
  steps = train.make_train_steps(train.make_train_step(model, tx, mesh))
  state = steps(state, *map(put, batch), 0, 2)
  saved = jax.tree.map(lambda x: np.asarray(jax.device_get(x)), state)
  assert saved.slots["user_gmf"]["count"].max() > 0
  workdir = str(tmp_path)
  for step, num_devices in ((2, 4), (3, 1)):
    ckpt = checkpoint.Checkpointer(workdir, config.checkpoint)
    ckpt.save(step, state, wait=True)
    ckpt.close()
    _, mesh, _, _, fresh = _setup(num_devices)
    ckpt = checkpoint.Checkpointer(workdir, config.checkpoint)
    state = ckpt.restore(checkpoint.abstract_like(fresh))
    ckpt.close()
    assert state.tables["user_gmf"].sharding.mesh.devices.size == num_devices
    assert state.tables["user_gmf"].sharding == fresh.tables["user_gmf"].sharding
    restored = jax.tree.map(lambda x: np.asarray(jax.device_get(x)), state)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(saved),
                            jax.tree_util.tree_leaves(restored), strict=True):
      np.testing.assert_array_equal(a, b, err_msg=f"{jax.tree_util.keystr(path)} on {num_devices}")
