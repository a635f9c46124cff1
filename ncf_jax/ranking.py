"""Full-ranking metrics, AUC and top-k retrieval, computed on the device in item blocks.

Sampled metrics rank the test item against ~100 random items and can order models
differently from a ranking against the whole catalogue (Krichene & Rendle, KDD 2020).
`FullRankingEvaluator` ranks each test user's held-out item against *every* item except
the user's training items: rank = number of other, non-excluded items scoring strictly
higher (ties favour the test item, as in the sampled evaluator), then

  Recall@K = [rank < K]   (one relevant item per user in leave-one-out)
  NDCG@K   = [rank < K] / log2(rank + 2)

Scores are produced for `item_block` items at a time (`lax.fori_loop` over blocks), so a
chunk of users never holds more than a f32[users, item_block] matrix: a large catalogue
never materialises users x items at once. Excluded items are marked per block by a
scatter of the users' padded training lists (int32[U, L]), never by a dense mask.

Score functions (traced inside jit):
  score_pairs(inputs, users int32[n], items int32[n]) -> f32[n]
  score_block(inputs, users int32[U], items int32[Ib]) -> f32[U, Ib]
`pairwise_block` makes the second from the first (NeuMF and friends); the two-tower model
has a direct one (ncf_jax.two_tower.make_block_score_fn: one matrix product).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from ncf_jax import sharding

ScorePairs = Callable[..., jax.Array]
ScoreBlock = Callable[..., jax.Array]
NEG_INF = -jnp.inf


# ---------------------------------------------------------------------------- metrics


def recall_and_ndcg(rank: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """Recall@K and NDCG@K (f32[U] each) of one relevant item at 0-based rank int32[U]."""
  hit = rank < k
  ndcg = jnp.where(hit, 1.0 / jnp.log2(rank.astype(jnp.float32) + 2.0), 0.0)
  return hit.astype(jnp.float32), ndcg


def sampled_auc(pos: jax.Array, neg: jax.Array, valid: jax.Array) -> jax.Array:
  """Per-user AUC of the positive against its sampled negatives: f32[U].

  The fraction of valid negatives scoring below the positive, ties counting one half.
  Args: pos f32[U]; neg f32[U, M]; valid bool[U, M] (padding and repeats of the test item
  excluded). A user without any valid negative gets 0.5.
  """
  below = jnp.sum((neg < pos[:, None]) & valid, axis=-1).astype(jnp.float32)
  ties = jnp.sum((neg == pos[:, None]) & valid, axis=-1).astype(jnp.float32)
  count = jnp.sum(valid, axis=-1).astype(jnp.float32)
  return jnp.where(count > 0, (below + 0.5 * ties) / jnp.maximum(count, 1.0), 0.5)


def pairwise_block(score_pairs: ScorePairs) -> ScoreBlock:
  """score_block from score_pairs: every (user, item) pair of the block, scored pairwise.

  Memory is O(U * Ib * widest layer): pick eval.item_block accordingly for MLP models.
  """

  def score_block(inputs, users, items):
    u, b = users.shape[0], items.shape[0]
    scores = score_pairs(inputs, jnp.repeat(users, b), jnp.tile(items, u))
    return scores.reshape(u, b).astype(jnp.float32)

  return score_block


# ---------------------------------------------------------------------------- excluded items


def padded_item_lists(
  users: np.ndarray, items: np.ndarray, for_users: np.ndarray, multiple: int = 1
) -> np.ndarray:
  """int32[len(for_users), L]: each listed user's distinct items, padded with -1.

  L is the longest list among `for_users`, rounded up to `multiple` (at least 1).
  """
  order = np.lexsort((items, users))
  u, i = users[order].astype(np.int64), items[order].astype(np.int64)
  keep = np.ones(u.shape[0], bool)
  keep[1:] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
  u, i = u[keep], i[keep]
  starts = np.searchsorted(u, for_users, side="left")
  ends = np.searchsorted(u, for_users, side="right")
  counts = ends - starts
  width = max(1, int(counts.max(initial=0)))
  width = -(-width // multiple) * multiple
  out = np.full((len(for_users), width), -1, np.int32)
  for row, (s, e) in enumerate(zip(starts, ends, strict=True)):
    out[row, : e - s] = i[s:e]
  return out


def block_mask(excluded: jax.Array, start: jax.Array, size: int) -> jax.Array:
  """bool[U, size]: True where item start + j is in the user's `excluded` list (int32[U, L]).

  A scatter of the lists into the block (-1 padding and items outside the block dropped).
  """
  col = excluded - start
  col = jnp.where((excluded >= 0) & (col >= 0) & (col < size), col, size)  # size: dropped
  mark = lambda c: jnp.zeros(size, bool).at[c].set(True, mode="drop")
  return jax.vmap(mark)(col)


def _round_up(x: int, multiple: int) -> int:
  return -(-x // multiple) * multiple


def block_size(item_block: int, num_items: int, devices: int) -> int:
  """Items per block: at most the catalogue, a multiple of the device count."""
  if item_block < 1:
    raise ValueError(f"eval.item_block={item_block}: must be >= 1.")
  return _round_up(min(item_block, num_items), devices)


# ---------------------------------------------------------------------------- evaluator


class FullRankingEvaluator:
  """Recall@K / NDCG@K of each test item against all items minus the user's training items.

  Like `evaluate.SampledEvaluator`: test users are split into chunks of `batch_users`
  (padded, split over the devices); each call costs one jitted call per chunk, which loops
  over the item blocks on the device, and one small transfer of the sums.
  """

  def __init__(
    self,
    score_pairs: ScorePairs,
    score_block: ScoreBlock,
    test_users: np.ndarray,
    test_items: np.ndarray,
    train_users: np.ndarray,
    train_items: np.ndarray,
    num_items: int,
    top_k: int,
    batch_users: int,
    item_block: int,
    mesh: jax.sharding.Mesh,
  ):
    self.num_users = int(test_users.shape[0])
    if self.num_users == 0:
      raise ValueError("The dataset has no test users to evaluate.")
    devices = mesh.devices.size
    chunk = _round_up(max(devices, min(batch_users, self.num_users)), devices)
    num_chunks = -(-self.num_users // chunk)
    pad = num_chunks * chunk - self.num_users
    excluded = padded_item_lists(train_users, train_items, test_users)
    size = block_size(item_block, num_items, devices)
    num_blocks = -(-num_items // size)
    self.top_k = top_k

    spec = sharding.batch_sharding(mesh)
    shape = lambda a: a.reshape(num_chunks, chunk, *a.shape[1:])
    padded = lambda a: np.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1))
    put = lambda a: [sharding.put_global(c, spec) for c in shape(padded(a))]
    real = np.ones(self.num_users, bool)
    self._chunks = list(zip(put(test_users.astype(np.int32)), put(test_items.astype(np.int32)),
                            put(excluded), put(real), strict=True))

    def chunk_sums(inputs, users, items, excluded, real):
      pos = score_pairs(inputs, users, items).astype(jnp.float32)  # f32[U]

      def body(b, above):
        start = b * size
        block = start + jnp.arange(size, dtype=jnp.int32)
        scores = score_block(inputs, users, jnp.minimum(block, num_items - 1))
        other = (block < num_items)[None, :] & (block[None, :] != items[:, None])
        other &= ~block_mask(excluded, start, size)
        return above + jnp.sum((scores > pos[:, None]) & other, axis=-1, dtype=jnp.int32)

      rank = jax.lax.fori_loop(0, num_blocks, body, jnp.zeros(users.shape, jnp.int32))
      recall, ndcg = recall_and_ndcg(rank, top_k)
      return jnp.stack([jnp.sum(recall * real), jnp.sum(ndcg * real)])

    self._chunk_sums = jax.jit(chunk_sums)

  def __call__(self, inputs) -> dict[str, float]:
    """{'recall@K_full': float, 'ndcg@K_full': float} averaged over all test users."""
    total = sum(self._chunk_sums(inputs, *chunk) for chunk in self._chunks)
    recall, ndcg = np.asarray(jax.device_get(total)) / self.num_users
    return {f"recall@{self.top_k}_full": float(recall), f"ndcg@{self.top_k}_full": float(ndcg)}


# ---------------------------------------------------------------------------- top-k


def top_k_in_blocks(
  score_block: ScoreBlock, inputs, users: jax.Array, excluded: jax.Array, num_items: int,
  k: int, item_block: int, devices: int = 1,
) -> tuple[jax.Array, jax.Array]:
  """Top-k items of every user over the whole catalogue, scoring `item_block` items at a time.

  A running top-k is merged with each block's (lax.top_k), so memory is O(U * (k + Ib)).
  Args: users int32[U]; excluded int32[U, L] items never to return (-1 padding).
  Returns: (scores f32[U, k], items int32[U, k]), best first; slots with no eligible item
  left have score -inf (and an arbitrary item).
  """
  size = block_size(item_block, num_items, devices)
  num_blocks = -(-num_items // size)
  n = users.shape[0]

  def body(b, carry):
    best_s, best_i = carry
    start = b * size
    block = start + jnp.arange(size, dtype=jnp.int32)
    scores = score_block(inputs, users, jnp.minimum(block, num_items - 1)).astype(jnp.float32)
    ok = (block < num_items)[None, :] & ~block_mask(excluded, start, size)
    scores = jnp.where(ok, scores, NEG_INF)
    s = jnp.concatenate([best_s, scores], axis=1)
    i = jnp.concatenate([best_i, jnp.broadcast_to(block, (n, size))], axis=1)
    s, pick = jax.lax.top_k(s, k)
    return s, jnp.take_along_axis(i, pick, axis=1)

  init = (jnp.full((n, k), NEG_INF, jnp.float32), jnp.zeros((n, k), jnp.int32))
  return jax.lax.fori_loop(0, num_blocks, body, init)


def sharded_top_k(
  user_vecs: jax.Array, item_vecs: jax.Array, excluded: jax.Array, num_items: int, k: int,
  mesh: jax.sharding.Mesh,
) -> tuple[jax.Array, jax.Array]:
  """Top-k items by dot product, item vectors row-sharded: per shard, then merged.

  Each device scores the users against the items it holds (one matrix product), masks
  excluded and padding items, keeps its own top-k (lax.top_k); the n * k candidates are
  all-gathered and the global top-k taken. Traffic is O(n * U * k), never O(items).

  Args:
    user_vecs: f32[U, D] (replicated); item_vecs: f32[I_pad, D], rows split over all devices
      (I_pad a multiple of the device count, rows >= num_items are padding).
    excluded: int32[U, L] dense item ids never to return (-1 padding).
  Returns: (scores f32[U, k], items int32[U, k]) replicated, best first; -inf where fewer
    than k items are eligible.
  """
  axes = tuple(mesh.axis_names)
  local_k = min(k, item_vecs.shape[0] // mesh.devices.size)

  def local(u, v, excluded):
    rows = v.shape[0]
    start = jax.lax.axis_index(axes) * rows
    ids = start + jnp.arange(rows, dtype=jnp.int32)
    scores = u.astype(jnp.float32) @ v.astype(jnp.float32).T  # f32[U, rows]
    ok = (ids < num_items)[None, :] & ~block_mask(excluded, start, rows)
    s, pick = jax.lax.top_k(jnp.where(ok, scores, NEG_INF), local_k)
    s = jax.lax.all_gather(s, axes, axis=1, tiled=True)  # f32[U, n * local_k]
    i = jax.lax.all_gather(ids[pick], axes, axis=1, tiled=True)
    s, pick = jax.lax.top_k(s, min(k, s.shape[1]))
    return s, jnp.take_along_axis(i, pick, axis=1)

  return jax.shard_map(
    local, mesh=mesh, in_specs=(P(), P(axes, None), P()), out_specs=(P(), P()),
    check_vma=False,
  )(user_vecs, item_vecs, excluded)
