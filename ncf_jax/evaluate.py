"""Leave-one-out evaluation on the device: HR@K and NDCG@K against sampled negatives.

Each test user's held-out item is scored together with its sampled negatives; the
positive's rank is the number of negatives that score strictly higher. A negative
equal to the test item itself (the NCF paper's files have 156 such rows on ML-1M) is
not counted: the test item must not compete with itself. With `with_auc`, the AUC over
the same candidates is reported too; full-ranking metrics live in ncf_jax/ranking.py.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ncf_jax import ranking, sharding

# score_fn(state, users: int32[n], items: int32[n]) -> f32[n] logits.
ScoreFn = Callable[..., jax.Array]


def positive_rank(pos: jax.Array, neg: jax.Array, valid: jax.Array) -> jax.Array:
  """0-based rank of the positive among its negatives.

  Args:
    pos: f32[U] score of each user's test item.
    neg: f32[U, M] scores of the negatives.
    valid: bool[U, M] False for negatives that must not count (padding, or the test
      item repeated among its own negatives).
  Returns:
    int32[U], the number of valid negatives scoring strictly above the positive.
  """
  return jnp.sum((neg > pos[:, None]) & valid, axis=-1).astype(jnp.int32)


def hit_and_ndcg(rank: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """HR@K and NDCG@K of one relevant item at 0-based `rank` (int32[U]) -> (f32[U], f32[U])."""
  hit = rank < k
  ndcg = jnp.where(hit, jnp.log(2.0) / jnp.log(rank.astype(jnp.float32) + 2.0), 0.0)
  return hit.astype(jnp.float32), ndcg


class SampledEvaluator:
  """Scores every test user's positive against its negatives, in chunks, on the device.

  The test arrays are padded to whole chunks once and put on the device; each call
  then costs one jitted call per chunk and a single small transfer of the sums.
  """

  def __init__(
    self,
    score_fn: ScoreFn,
    test_users: np.ndarray,
    test_items: np.ndarray,
    test_negatives: np.ndarray,
    top_k: int,
    batch_users: int,
    mesh: jax.sharding.Mesh,
    with_auc: bool = False,
  ):
    self.num_users = int(test_users.shape[0])
    if self.num_users == 0:
      raise ValueError("The dataset has no test users to evaluate.")
    devices = mesh.devices.size
    chunk = max(devices, min(batch_users, self.num_users))
    chunk = -(-chunk // devices) * devices  # a whole number of users per device
    num_chunks = -(-self.num_users // chunk)
    pad = num_chunks * chunk - self.num_users
    candidates = np.concatenate([test_items[:, None], test_negatives], axis=1).astype(np.int32)
    valid = np.ones(candidates.shape, bool)
    valid[:, 1:] = test_negatives != test_items[:, None]  # the test item is no negative of itself
    users = np.pad(test_users.astype(np.int32), (0, pad))
    candidates = np.pad(candidates, ((0, pad), (0, 0)))
    valid = np.pad(valid, ((0, pad), (0, 0)))
    real = np.pad(np.ones(self.num_users, bool), (0, pad))
    spec = sharding.batch_sharding(mesh)
    shape = lambda a: a.reshape(num_chunks, chunk, *a.shape[1:])
    put = lambda a: [sharding.put_global(c, spec) for c in shape(a)]
    self._chunks = list(zip(put(users), put(candidates), put(valid), put(real), strict=True))
    self.top_k = top_k
    self.with_auc = with_auc

    def chunk_sums(state, users, candidates, valid, real):
      num, width = candidates.shape
      scores = score_fn(state, jnp.repeat(users, width), candidates.reshape(-1))
      scores = scores.reshape(num, width).astype(jnp.float32)
      rank = positive_rank(scores[:, 0], scores[:, 1:], valid[:, 1:])
      hit, ndcg = hit_and_ndcg(rank, top_k)
      sums = [jnp.sum(hit * real), jnp.sum(ndcg * real)]
      if with_auc:  # over the same candidates: the positive against its valid negatives
        sums.append(jnp.sum(ranking.sampled_auc(scores[:, 0], scores[:, 1:], valid[:, 1:]) * real))
      return jnp.stack(sums)

    self._chunk_sums = jax.jit(chunk_sums)

  def __call__(self, state) -> dict[str, float]:
    """Returns {'hr@K': float, 'ndcg@K': float} (and 'auc') averaged over all test users."""
    total = sum(self._chunk_sums(state, *chunk) for chunk in self._chunks)
    sums = np.asarray(jax.device_get(total)) / self.num_users
    metrics = {f"hr@{self.top_k}": float(sums[0]), f"ndcg@{self.top_k}": float(sums[1])}
    if self.with_auc:
      metrics["auc"] = float(sums[2])
    return metrics
