"""The two-tower model: towers, side features, context, losses, and training end to end."""

import datetime
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import test as test_config
from ncf_jax import models, train, two_tower
from ncf_jax.data.dataset import Dataset


def fake_dataset(num_users: int = 48, num_items: int = 64, seed: int = 0) -> Dataset:
  """Users like items of 'their' genre (genre = gender); side features say which is which."""
  rng = np.random.default_rng(seed)
  gender = np.arange(num_users, dtype=np.int32) % 2
  genres = np.zeros((num_items, 3), np.int32)
  genres[np.arange(num_items), np.arange(num_items) % 2] = 1  # genre 0 or 1 ...
  genres[::5, 2] = 1  # ... and some items also genre 2
  year = (np.arange(num_items) % 3).astype(np.int32)
  users, items, times = [], [], []
  test_items, negatives = [], []
  for u in range(num_users):
    liked = rng.permutation(np.flatnonzero(genres[:, gender[u]]))[:9]
    users += [u] * 8
    items += liked[:8].tolist()
    times += (1_000_000_000 + rng.integers(0, 10**7, 8)).tolist()
    test_items.append(liked[8])
    pool = np.flatnonzero(genres[:, gender[u]] == 0)  # negatives: items of the other genre
    negatives.append(rng.choice(pool, 20, replace=False))
  return Dataset(
    train_users=np.array(users, np.int32), train_items=np.array(items, np.int32),
    train_timestamps=np.array(times, np.int64), test_users=np.arange(num_users, dtype=np.int32),
    test_items=np.array(test_items, np.int32), test_negatives=np.array(negatives, np.int32),
    num_users=num_users, num_items=num_items,
    user_ids=np.arange(num_users, dtype=np.int64) + 101, item_ids=np.arange(num_items) * 10 + 7,
    item_titles=np.array([f"Movie {i}" for i in range(num_items)], dtype=object),
    user_features={"gender": gender, "age": (np.arange(num_users) % 7).astype(np.int32)},
    item_features={"genres": genres, "year": year},
    user_feature_sizes={"gender": 2, "age": 7}, item_feature_sizes={"genres": 3, "year": 3},
    test_timestamps=np.full(num_users, 1_020_000_000, np.int64), name="fake",
  )


def two_tower_config(tmp_path, **model):
  config = test_config.get_config()
  config.data.cache_dir = str(tmp_path / "tfds")
  config.model.name = "two_tower"
  config.model.factors = 8
  config.model.tower_layers = (16, 8)
  config.model.update(model)
  config.train.batch_size = 64
  config.train.learning_rate = 0.01
  config.eval.batch_users = 16
  config.eval.item_block = 24
  config.eval.full_ranking = True
  config.checkpoint.async_save = False
  return config


def batch_of(ds: Dataset, users, items, timestamps=None):
  side = {"user_features": ds.user_features, "item_features": ds.item_features}
  side = jax.tree.map(jnp.asarray, side)
  return two_tower.model_batch(side, jnp.asarray(users), jnp.asarray(items), timestamps)


# ---------------------------------------------------------------------------- module


def test_towers_shapes_tables_and_logit_is_the_dot_product(tmp_path):
  ds = fake_dataset()
  config = two_tower_config(tmp_path, learn_temperature=False)
  module = models.create_model(config, nnx.Rngs(0), ds)
  assert [(t.name, t.feature, t.dim) for t in models.model_tables(config, ds)] == [
    ("user_tt", "user", 8), ("item_tt", "item", 8)]
  rows = {"user_tt": jax.random.normal(jax.random.key(1), (5, 8)),
          "item_tt": jax.random.normal(jax.random.key(2), (5, 8))}
  batch = batch_of(ds, [0, 1, 2, 3, 4], [5, 6, 7, 8, 9])
  u, v = module.user_vectors(rows, batch), module.item_vectors(rows, batch)
  assert u.shape == v.shape == (5, 8)
  np.testing.assert_allclose(module(rows, batch), jnp.sum(u * v, axis=-1), rtol=1e-6)
  assert models.model_flops_per_sample(config) > 0


def test_side_features_enter_the_towers(tmp_path):
  ds = fake_dataset()
  module = models.create_model(two_tower_config(tmp_path), nnx.Rngs(0), ds)
  rows = {"user_tt": jnp.ones((2, 8)), "item_tt": jnp.ones((2, 8))}
  # Same id rows, different side features (users 0/1 differ in gender and age; items 0/1
  # in genre and year): different vectors.
  batch = batch_of(ds, [0, 1], [0, 1])
  u, v = module.user_vectors(rows, batch), module.item_vectors(rows, batch)
  assert not np.allclose(u[0], u[1]) and not np.allclose(v[0], v[1])
  # Genres are a bag: the mean of its genres' embeddings (item 0 has genres {0, 2}).
  bag = module._embed("item", module.item_features, batch["item_features"])[0]
  table = module.item_genres[...]
  np.testing.assert_allclose(bag[0], (table[0] + table[2]) / 2, rtol=1e-6)
  # Out-of-range categories (e.g. -1 for unknown) use the extra 'unknown' row.
  odd = module._embed("user", module.user_features, {"age": jnp.array([-1]),
                                                     "gender": jnp.array([5])})
  np.testing.assert_allclose(odd[0][0], module.user_age[...][7], rtol=1e-6)
  np.testing.assert_allclose(odd[1][0], module.user_gender[...][2], rtol=1e-6)


def test_ids_only_model_has_no_side_parameters(tmp_path):
  config = two_tower_config(tmp_path, use_side_features=False)
  module = models.create_model(config, nnx.Rngs(0), None)
  names = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(module, nnx.Param))}
  assert not any(n.startswith(("user_gender", "item_genres")) for n in names)
  assert module.user_tower.layer_0.kernel[...].shape == (8, 16)


def test_context_ids_hand_computed():
  stamps = [datetime.datetime(2000, 1, 3, 0, 30, tzinfo=datetime.UTC),  # a Monday, 00:30
            datetime.datetime(2000, 12, 31, 23, 59, tzinfo=datetime.UTC),  # a Sunday, 23:59
            datetime.datetime(1970, 1, 1, 5, 0, tzinfo=datetime.UTC)]  # a Thursday, 05:00
  ids = two_tower.context_ids(jnp.array([int(s.timestamp()) for s in stamps]))
  np.testing.assert_array_equal(ids, [0 * 24 + 0, 6 * 24 + 23, 3 * 24 + 5])


def test_context_changes_users_but_never_items(tmp_path):
  ds = fake_dataset()
  module = models.create_model(two_tower_config(tmp_path, use_context=True), nnx.Rngs(0), ds)
  rows = {"user_tt": jnp.ones((2, 8)), "item_tt": jnp.ones((2, 8))}
  morning = batch_of(ds, [0, 0], [3, 3], jnp.array([8 * 3600, 8 * 3600]))
  evening = batch_of(ds, [0, 0], [3, 3], jnp.array([20 * 3600, 20 * 3600]))
  assert not np.allclose(module.user_vectors(rows, morning), module.user_vectors(rows, evening))
  # Item vectors ignore context entirely (precomputable for retrieval).
  np.testing.assert_array_equal(module.item_vectors(rows, morning),
                                module.item_vectors(rows, evening))


def test_in_batch_softmax_loss_hand_computed():
  u = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  v = jnp.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
  items = jnp.array([4, 9, 4])  # rows 0 and 2 hold the same item
  log_q = jnp.log(jnp.array([0.5, 0.25, 0.5]))
  logits = np.array(u @ v.T) * 2.0 - np.log([0.5, 0.25, 0.5])[None, :]
  logits[0, 2] = logits[2, 0] = -np.inf  # the same item is not a negative of its twin
  want = -np.mean([logits[i, i] - np.log(np.sum(np.exp(logits[i]))) for i in range(3)])
  got = two_tower.in_batch_softmax_loss(u, v, items, log_q, jnp.float32(2.0))
  assert float(got) == pytest.approx(want, rel=1e-5)


def test_item_log_q_is_log_popularity():
  log_q = two_tower.item_log_q(np.array([0, 0, 0, 1]), 3)
  np.testing.assert_allclose(np.exp(log_q), [3 / 4.5, 1 / 4.5, 0.5 / 4.5], rtol=1e-6)


# ---------------------------------------------------------------------------- training


def run(monkeypatch, config, workdir, ds):
  monkeypatch.setattr(train, "load_data", lambda config: ds)
  return train.train_and_evaluate(config, str(workdir))


@pytest.mark.parametrize("loss,model", [
  ("bce", dict(use_context=True)),
  ("softmax", dict(learn_temperature=True)),
])
def test_two_tower_trains_and_reports_full_ranking(tmp_path, monkeypatch, loss, model):
  ds = fake_dataset()
  config = two_tower_config(tmp_path, **model)
  config.train.loss = loss
  config.train.num_epochs = 5
  config.eval.every_epochs = 5
  config.train.learning_rate = 0.03
  config.train.batch_size = 32 if loss == "softmax" else 64
  run(monkeypatch, config, tmp_path / "wd", ds)
  with open(tmp_path / "wd" / "metrics.jsonl") as f:
    record = [json.loads(line) for line in f][-1]
  k = config.eval.top_k
  for key in (f"recall@{k}_full", f"ndcg@{k}_full", "auc"):
    assert 0.0 <= record[key] <= 1.0
  # The preference is learnable from the side features: the positive (a liked-genre item)
  # beats the (other-genre) sampled negatives nearly always.
  assert record["auc"] > 0.9 and record[f"hr@{k}"] > 0.8
  saved = json.loads((tmp_path / "wd" / "config.json").read_text())
  assert saved["model"]["name"] == "two_tower" and saved["train"]["loss"] == loss


def test_softmax_loss_needs_two_towers(tmp_path):
  config = test_config.get_config()
  config.train.loss = "softmax"
  with pytest.raises(ValueError, match="train.loss='softmax'.*model.name='two_tower'"):
    train.train_and_evaluate(config, str(tmp_path / "wd"))


def test_side_features_need_exact_ids(tmp_path):
  config = two_tower_config(tmp_path)
  config.embedding.item_hash_buckets = 32
  with pytest.raises(ValueError, match="need exact ids"):
    two_tower.side_inputs(config, fake_dataset(), None)
