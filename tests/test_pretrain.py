"""NeuMF initialised from trained GMF and MLP checkpoints (the paper's pretraining)."""

import jax
import numpy as np
import pytest

from configs import test as test_config
from ncf_jax import checkpoint, pretrain, sharding, train
from ncf_jax.data.dataset import Dataset


def _dataset() -> Dataset:
  users = np.arange(40, dtype=np.int32) % 10
  return Dataset(
    train_users=users, train_items=np.arange(40, dtype=np.int32) % 13,
    train_timestamps=np.zeros(40, np.int64), test_users=np.arange(10, dtype=np.int32),
    test_items=np.zeros(10, np.int32), test_negatives=np.ones((10, 3), np.int32),
    num_users=10, num_items=13, user_ids=np.arange(10), item_ids=np.arange(13),
  )


def _saved_state(name: str, workdir, seed: int):
  config = test_config.get_config()
  config.model.name, config.train.seed = name, seed
  mesh = sharding.make_mesh(config.mesh)
  model = train.build_model(config, _dataset())
  state = train.create_train_state(config, model, train.dense_optimizer(config), mesh)
  ckpt = checkpoint.Checkpointer(str(workdir), config.checkpoint)
  ckpt.save(7, state, wait=True)
  ckpt.close()
  return state


def test_neumf_takes_gmf_and_mlp_weights_with_alpha(tmp_path):
  gmf = _saved_state("gmf", tmp_path / "gmf", seed=1)
  mlp = _saved_state("mlp", tmp_path / "mlp", seed=2)
  config = test_config.get_config()
  config.model.pretrained_gmf = str(tmp_path / "gmf")
  config.model.pretrained_mlp = str(tmp_path / "mlp")
  config.model.pretrain_alpha = 0.25
  mesh = sharding.make_mesh(config.mesh)
  model = train.build_model(config, _dataset())
  fresh = train.create_train_state(config, model, train.dense_optimizer(config), mesh)
  state = pretrain.load_into(config, fresh)
  get = lambda x: np.asarray(jax.device_get(x))
  for name, source in (("user_gmf", gmf), ("item_gmf", gmf), ("user_mlp", mlp), ("item_mlp", mlp)):
    np.testing.assert_array_equal(get(state.tables[name]), get(source.tables[name]))
    assert state.tables[name].sharding == fresh.tables[name].sharding
  np.testing.assert_array_equal(get(state.params["mlp"]["hidden_0"]["kernel"]),
                                get(mlp.params["mlp"]["hidden_0"]["kernel"]))
  kernel = get(state.params["out"]["kernel"])
  np.testing.assert_allclose(kernel[:4], 0.25 * get(gmf.params["out"]["kernel"]), rtol=1e-6)
  np.testing.assert_allclose(kernel[4:], 0.75 * get(mlp.params["out"]["kernel"]), rtol=1e-6)
  np.testing.assert_allclose(
    get(state.params["out"]["bias"]),
    0.25 * get(gmf.params["out"]["bias"]) + 0.75 * get(mlp.params["out"]["bias"]), rtol=1e-6)


def test_pretraining_needs_both_runs_and_neumf(tmp_path):
  config = test_config.get_config()
  config.model.pretrained_gmf = str(tmp_path / "gmf")
  with pytest.raises(ValueError, match="pretrained_mlp"):
    pretrain.load_into(config, None)
  config.model.name = "gmf"
  with pytest.raises(ValueError, match="model.name='neumf'"):
    pretrain.load_into(config, None)
