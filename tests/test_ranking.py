"""Full-ranking Recall/NDCG, AUC and top-k retrieval (ncf_jax.ranking) on 8 simulated devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import test as test_config
from ncf_jax import ranking, sharding


@pytest.fixture(scope="module")
def mesh():
  return sharding.make_mesh(test_config.get_config().mesh)


def table_scores(matrix: np.ndarray):
  """score_pairs / score_block reading a fixed f32[users, items] matrix (inputs = matrix)."""
  pairs = lambda s, users, items: s[users, items]
  block = lambda s, users, items: s[users][:, items]
  return pairs, block


def test_recall_and_ndcg_hand_computed():
  recall, ndcg = ranking.recall_and_ndcg(jnp.array([0, 2, 4, 5]), k=5)
  np.testing.assert_allclose(recall, [1, 1, 1, 0])
  np.testing.assert_allclose(ndcg, [1.0, 0.5, 1 / np.log2(6), 0.0], rtol=1e-6)


def test_sampled_auc_counts_ties_half_and_skips_invalid():
  pos = jnp.array([0.5, 0.5, 0.5])
  neg = jnp.array([[0.1, 0.9, 0.5, 0.2], [0.9, 0.8, 0.1, 0.0], [0.9, 0.9, 0.9, 0.9]])
  valid = jnp.array([[True] * 4, [True, False, True, False], [False] * 4])
  # row 0: below {0.1, 0.2} + half a tie = 2.5 / 4; row 1: 0.1 below, 0.9 above -> 1/2;
  # row 2: no valid negative -> 0.5 by convention.
  np.testing.assert_allclose(ranking.sampled_auc(pos, neg, valid), [0.625, 0.5, 0.5])


def test_full_ranking_hand_computed_excludes_training_items(mesh):
  # 2 users, 6 items; score = the matrix. User 0: test item 2 (score 0.5), trained on 0 and 5,
  # which score higher but are excluded; item 4 (0.6) is the only other above -> rank 1.
  # User 1: test item 1 (0.3), trained on 3; items 0, 2, 4 score above -> rank 3.
  s = np.array([[0.9, 0.1, 0.5, 0.2, 0.6, 0.95],
                [0.4, 0.3, 0.35, 0.99, 0.31, 0.0]], np.float32)
  pairs, block = table_scores(s)
  ev = ranking.FullRankingEvaluator(
    pairs, block, test_users=np.array([0, 1]), test_items=np.array([2, 1]),
    train_users=np.array([0, 0, 1, 0]), train_items=np.array([0, 5, 3, 5]),
    num_items=6, top_k=2, batch_users=8, item_block=8, mesh=mesh)
  got = ev(jnp.asarray(s))
  assert got["recall@2_full"] == pytest.approx(0.5)  # user 0 at rank 1 < 2, user 1 at rank 3
  assert got["ndcg@2_full"] == pytest.approx((1 / np.log2(3)) / 2)


def numpy_full_ranks(s, test_users, test_items, train_users, train_items):
  ranks = []
  for u, t in zip(test_users, test_items, strict=True):
    ok = np.ones(s.shape[1], bool)
    ok[train_items[train_users == u]] = False
    ok[t] = False
    ranks.append(int(np.sum((s[u] > s[u, t]) & ok)))
  return np.array(ranks)


@pytest.mark.parametrize("item_block,batch_users", [(8, 8), (16, 24), (200, 200), (1, 8)])
def test_full_ranking_matches_numpy_for_any_block_and_chunk(mesh, item_block, batch_users):
  rng = np.random.default_rng(0)
  num_users, num_items = 37, 83  # neither divides the blocks nor the 8 devices
  s = rng.normal(size=(num_users, num_items)).astype(np.float32)
  train_users = rng.integers(0, num_users, 400)
  train_items = rng.integers(0, num_items, 400)
  test_users = np.arange(num_users)
  test_items = rng.integers(0, num_items, num_users)
  pairs, block = table_scores(s)
  ev = ranking.FullRankingEvaluator(pairs, block, test_users, test_items, train_users,
                                    train_items, num_items, 10, batch_users, item_block, mesh)
  ranks = numpy_full_ranks(s, test_users, test_items, train_users, train_items)
  got = ev(jnp.asarray(s))
  assert got["recall@10_full"] == pytest.approx(np.mean(ranks < 10), abs=1e-6)
  assert got["ndcg@10_full"] == pytest.approx(
    np.mean(np.where(ranks < 10, 1 / np.log2(ranks + 2), 0)), abs=1e-6)


def test_pairwise_block_equals_direct_block():
  s = jnp.arange(12.0).reshape(3, 4)
  pairs, block = table_scores(s)
  users, items = jnp.array([2, 0]), jnp.array([3, 1, 1])
  np.testing.assert_array_equal(ranking.pairwise_block(pairs)(s, users, items),
                                block(s, users, items))


def test_padded_item_lists_dedupes_and_pads():
  lists = ranking.padded_item_lists(np.array([1, 1, 1, 3, 0]), np.array([4, 2, 4, 7, 5]),
                                    for_users=np.array([1, 2, 3]))
  np.testing.assert_array_equal(lists, [[2, 4], [-1, -1], [7, -1]])


def numpy_top_k(s, excluded, k):
  s = s.astype(np.float64).copy()
  for row, ex in enumerate(excluded):
    s[row, ex[ex >= 0]] = -np.inf
  order = np.argsort(-s, axis=1, kind="stable")[:, :k]
  return order, np.take_along_axis(s, order, axis=1)


def test_top_k_in_blocks_matches_numpy_and_skips_excluded(mesh):
  rng = np.random.default_rng(1)
  s = rng.normal(size=(5, 50)).astype(np.float32)
  excluded = np.full((5, 10), -1, np.int32)
  best = np.argsort(-s, axis=1)[:, :10]
  excluded[:, :6] = best[:, :6]  # exclude each user's 6 best items
  excluded[4, :] = -1  # user 4 excludes nothing
  _, block = table_scores(s)
  for item_block in (7, 16, 64):
    scores, items = jax.jit(ranking.top_k_in_blocks, static_argnums=(0, 4, 5, 6))(
      block, jnp.asarray(s), jnp.arange(5), jnp.asarray(excluded), 50, 4, item_block)
    want_items, want_scores = numpy_top_k(s, excluded, 4)
    np.testing.assert_array_equal(items, want_items)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
    for row in range(5):
      assert not set(np.asarray(items[row]).tolist()) & set(excluded[row].tolist())


def test_sharded_top_k_matches_numpy_and_pads_with_minus_inf(mesh):
  rng = np.random.default_rng(2)
  num_items, pad_to, d = 45, 48, 3  # 48 rows over 8 devices: 3 padding rows
  users = rng.normal(size=(3, d)).astype(np.float32)
  items = np.zeros((pad_to, d), np.float32)
  items[:num_items] = rng.normal(size=(num_items, d))
  excluded = np.array([[0, 1, 2, -1], [-1, -1, -1, -1], [5, 44, -1, -1]], np.int32)
  v = jax.device_put(items, sharding.table_sharding(mesh))
  scores, got = ranking.sharded_top_k(jnp.asarray(users), v, jnp.asarray(excluded), num_items,
                                      5, mesh)
  want_items, want_scores = numpy_top_k(users @ items[:num_items].T, excluded, 5)
  np.testing.assert_array_equal(got, want_items)
  np.testing.assert_allclose(scores, want_scores, rtol=1e-5)
  # Asking for more than the eligible items leaves -inf slots, never a padding row.
  scores, got = ranking.sharded_top_k(jnp.asarray(users[:1]), v,
                                      jnp.asarray(np.arange(40, dtype=np.int32)[None]),
                                      num_items, 6, mesh)
  assert np.isinf(np.asarray(scores)[0, 5]) and set(np.asarray(got)[0, :5]) == set(range(40, 45))
