"""recommend: top-k from a workdir == brute force over the exported embeddings; no seen items."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_two_tower import fake_dataset, two_tower_config

from configs import test as test_config
from ncf_jax import checkpoint, recommend, train, two_tower

QUERY_TIME = 1_000_000_000 + 14 * 3600  # a Sunday, 14:00 UTC


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A two-tower workdir (side features + context), trained 2 epochs with full ranking."""
  tmp = tmp_path_factory.mktemp("recommend")
  ds = fake_dataset()
  config = two_tower_config(tmp, use_context=True, learn_temperature=True)
  config.train.num_epochs = 2
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(train, "load_data", lambda config: ds)
    train.train_and_evaluate(config, str(tmp / "wd"))
  rec = recommend.Recommender(str(tmp / "wd"), dataset=ds)
  meta = rec.export(str(tmp / "export"))
  return ds, rec, meta, tmp


def seen(ds, dense_user):
  train_items = ds.train_items[ds.train_users == dense_user]
  return set(train_items.tolist()) | {int(ds.test_items[dense_user])}


def brute_force(users, items, excluded, k):
  """Top-k rows of users @ items.T (numpy, float64), excluded items removed."""
  scores = users.astype(np.float64) @ items.astype(np.float64).T
  out = []
  for row, ex in zip(scores, excluded, strict=True):
    row = row.copy()
    row[list(ex)] = -np.inf
    out.append(np.argsort(-row, kind="stable")[:k])
  return np.array(out), scores


def test_two_tower_top_k_equals_brute_force_over_exported_embeddings(trained):
  ds, rec, meta, tmp = trained
  emb = {n: np.load(tmp / "export" / f"{n}.npy") for n in
         ("user_embeddings", "item_embeddings", "context_embeddings", "user_ids", "item_ids")}
  assert emb["user_embeddings"].shape == (ds.num_users, meta["dim"])
  assert emb["item_embeddings"].shape == (ds.num_items, meta["dim"])
  np.testing.assert_array_equal(emb["user_ids"], ds.user_ids)
  context = int(two_tower.context_ids(jnp.int32(QUERY_TIME)))
  original = [101, 117, 148]  # original ids = dense + 101
  dense = [u - 101 for u in original]
  queries = emb["user_embeddings"][dense] + emb["context_embeddings"][context]
  want, scores = brute_force(queries, emb["item_embeddings"], [seen(ds, u) for u in dense], 10)
  got = rec.recommend(original, k=10, timestamp=QUERY_TIME)
  for row, (r, u) in enumerate(zip(got, dense, strict=True)):
    assert r.user == original[row]
    assert r.items == ds.item_ids[want[row]].tolist()
    np.testing.assert_allclose(
      r.scores, meta["scale"] * scores[row, want[row]] + meta["bias"], rtol=1e-4, atol=1e-5)
    assert not set(want[row].tolist()) & seen(ds, u)
    assert r.titles == [f"Movie {i}" for i in want[row]]


def test_full_ranking_metric_matches_numpy_over_exported_embeddings(trained):
  ds, rec, meta, tmp = trained
  # Evaluation scores each user at its test time; rank its test item among all items except
  # its training items, in numpy, and compare with the trainer's last metrics line.
  users = np.load(tmp / "export" / "user_embeddings.npy")
  items = np.load(tmp / "export" / "item_embeddings.npy")
  context = np.load(tmp / "export" / "context_embeddings.npy")
  ctx = np.asarray(two_tower.context_ids(jnp.asarray(ds.test_timestamps.astype(np.int32))))
  scores = (users + context[ctx]) @ items.T
  ranks = []
  for u, t in zip(ds.test_users, ds.test_items, strict=True):
    ok = np.ones(ds.num_items, bool)
    ok[ds.train_items[ds.train_users == u]] = False
    ok[t] = False
    ranks.append(np.sum((scores[u] > scores[u, t]) & ok))
  with open(tmp / "wd" / "metrics.jsonl") as f:
    last = [json.loads(line) for line in f][-1]
  assert last["recall@10_full"] == pytest.approx(np.mean(np.array(ranks) < 10), abs=1e-6)


def test_never_recommends_a_seen_item_even_when_k_exceeds_the_rest(trained):
  ds, rec, _, _ = trained
  (r,) = rec.recommend([105], k=ds.num_items)  # more than the unseen items
  assert len(r.items) == ds.num_items - len(seen(ds, 4))
  assert not {int(i) for i in (np.array(r.items) - 7) // 10} & seen(ds, 4)
  assert r.scores == sorted(r.scores, reverse=True)


def test_unknown_user_is_a_clear_error(trained):
  _, rec, _, _ = trained
  with pytest.raises(recommend.UnknownUserError, match=r"user '?9999'? is not a user.*101..148"):
    rec.recommend([101, 9999])
  with pytest.raises(recommend.UnknownUserError, match="'abc' is not a user"):
    rec.recommend(["abc"])


def test_command_line_json_and_unknown_user(trained, monkeypatch, capsys):
  ds, _, _, tmp = trained
  monkeypatch.setattr(train, "load_data", lambda config: ds)
  # What `--workdir=... --users=101,102 --k=3 --format=json` runs (flags parsed by absl).
  recommend.run(str(tmp / "wd"), ["101", "102"], k=3, fmt="json", timestamp=QUERY_TIME)
  lines = capsys.readouterr().out.strip().splitlines()
  assert [json.loads(line)["user"] for line in lines] == [101, 102]
  assert all(len(json.loads(line)["items"]) == 3 for line in lines)
  assert set(json.loads(lines[0])) == {"user", "items", "scores", "titles"}
  with pytest.raises(SystemExit, match="recommend: error: user '4242' is not a user"):
    recommend.run(str(tmp / "wd"), ["101", "4242"])
  with pytest.raises(SystemExit, match="config.json does not exist"):
    recommend.run(str(tmp / "nowhere"), ["101"])


@pytest.mark.parametrize("name", ["neumf", "mf"])
def test_pairwise_models_score_all_items_in_blocks(tmp_path, name):
  """NeuMF / MF from a saved (untrained) state: blockwise top-k == scoring every pair."""
  ds = fake_dataset(num_users=16, num_items=40)
  config = test_config.get_config()
  config.model.name = name
  config.eval.item_block = 16  # 40 items: 3 blocks, the last one partial
  config.model.embedding_init_std = 0.5  # distinct scores even untrained
  mesh = train.sharding.make_mesh(config.mesh)
  model = train.build_model(config, ds)
  state = train.create_train_state(config, model, train.dense_optimizer(config), mesh, ds)
  workdir = tmp_path / "wd"
  workdir.mkdir()
  (workdir / "config.json").write_text(config.to_json())
  ckpt = checkpoint.Checkpointer(str(workdir), config.checkpoint)
  ckpt.save(0, state, wait=True)
  ckpt.close()

  rec = recommend.Recommender(str(workdir), dataset=ds)
  users = np.arange(16, dtype=np.int32)
  score = jax.jit(train.make_score_fn(model, mesh))
  all_scores = np.asarray(score(rec.state, jnp.repeat(users, 40), jnp.tile(jnp.arange(40), 16)))
  all_scores = all_scores.reshape(16, 40)
  got_scores, got_items = rec.top_k(users, 5)
  for u in range(16):
    row = all_scores[u].copy()
    row[list(seen(ds, u))] = -np.inf
    want = np.argsort(-row, kind="stable")[:5]
    np.testing.assert_array_equal(got_items[u], want)
    np.testing.assert_allclose(got_scores[u], row[want], rtol=1e-5)
  if name == "mf":  # the exported [p, 1] . [q, b_i] ranks as the model does
    rec.export(str(tmp_path / "export"))
    u_emb = np.load(tmp_path / "export" / "user_embeddings.npy")
    i_emb = np.load(tmp_path / "export" / "item_embeddings.npy")
    want, _ = brute_force(u_emb, i_emb, [seen(ds, u) for u in range(16)], 5)
    np.testing.assert_array_equal(got_items, want)
  else:
    with pytest.raises(recommend.RecommendError, match="needs a dot-product model"):
      rec.export(str(tmp_path / "export"))
