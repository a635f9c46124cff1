"""Synthetic interactions for any vocabulary: Zipf-like popularity, generated on the device.

Ids are drawn by inverting the continuous Zipf CDF over ranks 1..V (exponent s; s = 0 is
uniform), then the rank is sent through a fixed affine bijection of [0, V) so that popular
ids are spread over every table shard instead of piling up in the first rows. Everything
is a pure function of (seed, chunk index): chunk c of any run is the same array, so a
billion-interaction stream never needs a billion-row file.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ncf_jax.data.dataset import Dataset


def _coprime_multiplier(vocab: int) -> int:
  """A multiplier near 0.618 * vocab that is coprime to vocab (an affine bijection of ranks)."""
  a = max(1, int(vocab * 0.6180339887)) | 1
  while math.gcd(a, vocab) != 1:
    a += 2
  return a % vocab or 1


def zipf_ids(key: jax.Array, shape: tuple[int, ...], vocab: int, exponent: float) -> jax.Array:
  """int32[shape] ids in [0, vocab) whose rank r (1-based) has probability ~ r^-exponent."""
  u = jax.random.uniform(key, shape, jnp.float32)
  if exponent == 0.0:
    rank = jnp.floor(u * vocab)
  elif abs(exponent - 1.0) < 1e-6:
    rank = jnp.floor(jnp.exp(u * jnp.log(vocab + 1.0))) - 1.0
  else:
    e = 1.0 - exponent
    rank = jnp.floor((1.0 + u * ((vocab + 1.0) ** e - 1.0)) ** (1.0 / e)) - 1.0
  rank = jnp.clip(rank, 0, vocab - 1).astype(jnp.uint32)
  spread = _mulmod(rank, _coprime_multiplier(vocab), vocab)  # a bijection of [0, vocab)
  return ((spread + 1) % jnp.uint32(vocab)).astype(jnp.int32)


def _mulmod(x: jax.Array, c: int, vocab: int) -> jax.Array:
  """x * c mod vocab for x, c < vocab < 2^31, by doubling (31 rounds, all below 2^32)."""
  out = jnp.zeros_like(x)
  base = x
  for bit in range(31):
    if (c >> bit) & 1:
      out = (out + base) % jnp.uint32(vocab)
    base = (base * jnp.uint32(2)) % jnp.uint32(vocab)
  return out


def interaction_chunk(
  seed: int, chunk: int, size: int, num_users: int, num_items: int, exponent: float
) -> tuple[jax.Array, jax.Array]:
  """Chunk `chunk` of the stream: users int32[size], items int32[size] (a pure function)."""
  key = jax.random.fold_in(jax.random.key(seed), chunk)
  key_u, key_i = jax.random.split(key)
  return (
    zipf_ids(key_u, (size,), num_users, exponent),
    zipf_ids(key_i, (size,), num_items, exponent),
  )


def make_dataset(data: ml_collections.ConfigDict) -> Dataset:
  """A Dataset of `data.synthetic.num_interactions` Zipf interactions and random test rows.

  Test users 0..num_test_users-1 get a random held-out item and `data.num_test_negatives`
  random negatives (collisions with their training items are possible: synthetic metrics
  measure plumbing, not quality).
  """
  s = data.synthetic
  for field in ("num_users", "num_items", "num_interactions", "num_test_users"):
    if s[field] <= 0 or s[field] >= 2**31:
      raise ValueError(f"data.synthetic.{field}={s[field]} must be in [1, 2^31).")
  chunk = 1 << 22
  # seed and chunk are traced: one compilation serves every chunk of the stream.
  chunk_fn = jax.jit(interaction_chunk, static_argnums=(2, 3, 4, 5))
  users, items = [], []
  for c in range(-(-s.num_interactions // chunk)):
    size = min(chunk, s.num_interactions - c * chunk)
    u, i = chunk_fn(s.seed, c, size, s.num_users, s.num_items, s.zipf_exponent)
    users.append(np.asarray(u))
    items.append(np.asarray(i))
  rng = np.random.default_rng(s.seed)
  num_test = min(s.num_test_users, s.num_users)
  test_users = np.arange(num_test, dtype=np.int32)
  return Dataset(
    train_users=np.concatenate(users),
    train_items=np.concatenate(items),
    train_timestamps=np.zeros(s.num_interactions, np.int64),
    test_users=test_users,
    test_items=rng.integers(0, s.num_items, num_test).astype(np.int32),
    test_negatives=rng.integers(0, s.num_items, (num_test, data.num_test_negatives)).astype(
      np.int32
    ),
    num_users=s.num_users,
    num_items=s.num_items,
    user_ids=np.arange(s.num_users, dtype=np.int64),
    item_ids=np.arange(s.num_items, dtype=np.int64),
    name=f"synthetic-zipf{s.zipf_exponent}",
  )


# ML-1M's side features and their sizes: users.dat (gender, age bucket, occupation) and
# movies.dat (release-year bucket, multi-hot genres), as input_pipeline loads them.
USER_FEATURE_SIZES = {"gender": 2, "age": 7, "occupation": 21}
ITEM_FEATURE_SIZES = {"year": 12, "genres": 18}


def side_features(num_users: int, num_items: int, seed: int = 0) -> dict:
  """Random side features shaped like ML-1M's, for any vocabulary (Dataset fields).

  Returns user_features {name: int32[U]}, item_features {'year': int32[I], 'genres':
  int32[I, 18] multi-hot with 1-3 genres}, and their `*_feature_sizes`.
  """
  rng = np.random.default_rng(seed)
  users = {k: rng.integers(0, n, num_users).astype(np.int32) for k, n in USER_FEATURE_SIZES.items()}
  genres = np.zeros((num_items, ITEM_FEATURE_SIZES["genres"]), np.int32)
  for _ in range(3):  # 1 to 3 distinct genres per item
    genres[np.arange(num_items), rng.integers(0, ITEM_FEATURE_SIZES["genres"], num_items)] = 1
  items = {"year": rng.integers(0, ITEM_FEATURE_SIZES["year"], num_items).astype(np.int32),
           "genres": genres}
  return dict(user_features=users, item_features=items,
              user_feature_sizes=dict(USER_FEATURE_SIZES),
              item_feature_sizes=dict(ITEM_FEATURE_SIZES))
