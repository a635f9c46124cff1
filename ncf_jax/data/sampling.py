"""Training input on the device: each epoch's negatives and shuffle, drawn from its PRNG key.

An epoch is every positive once plus `num_negatives` sampled negatives per positive,
shuffled together (the paper's and MLPerf's recipe). Sample j of the epoch's
N * (1 + k) slots is positive j % N; it is the positive itself when j < N and a
negative of the same user otherwise. A random permutation of the slots, cut to whole
batches, is the epoch; a negative's item is drawn uniformly from all items.

The permutation is a keyed bijection (`permutation_prefix`: a 4-round Feistel network
with cycle walking), not `jax.random.permutation`, which sorts random keys; negatives are
drawn by a keyed counter hash (`uniform_ints`), not threefry. An ML-1M epoch (2.4M slots)
costs ~1.3 s of a 2-core CPU with jax.random and ~0.02 s here (BENCHMARKS.md), and needs
no sort on any device. Both are pure functions of the epoch's key: epochs are reproducible.

Negatives are not rejected when they happen to be one of the user's positives (as in
NVIDIA's and MLPerf's NCF); `negative_collision_rate` measures how often that happens.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def _fmix32(x: jax.Array) -> jax.Array:
  """MurmurHash3's 32-bit finalizer: full avalanche, a bijection of uint32."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x85EBCA6B)
  x = x ^ (x >> 13)
  x = x * jnp.uint32(0xC2B2AE35)
  return x ^ (x >> 16)


def _feistel(x: jax.Array, keys: jax.Array, a: int, b: int) -> jax.Array:
  """A keyed bijection of [0, a * b) on uint32 `x`: a mixed-radix Feistel network.

  x = L * b + R with L in [0, a) and R in [0, b). Each round maps (L, R) to
  (R, (L + F(R)) mod a), F = fmix32(R ^ round key), and the radices swap, so every round
  is invertible ((L = R' - F(L')) mod a) and the network is a permutation (the FE1
  construction of format-preserving encryption). An even number of rounds ends in the
  original radices.
  """
  left, right = x // jnp.uint32(b), x % jnp.uint32(b)
  for r in range(keys.shape[0]):
    f = _fmix32(right ^ keys[r]) % jnp.uint32(a)
    left, right = right, (left + f) % jnp.uint32(a)
    a, b = b, a
  return left * jnp.uint32(b) + right


@functools.partial(jax.jit, static_argnames=("n", "size", "rounds"))
def permutation_prefix(key: jax.Array, n: int, size: int, rounds: int = 4) -> jax.Array:
  """int32[size]: the first `size` entries of a pseudo-random permutation of [0, n).

  Distinct values in [0, n), a pure function of (key, n). Entry j is P(j) for a keyed
  Feistel permutation P of [0, a * b), a = ceil(sqrt(n)), b = ceil(n / a), "cycle-walked"
  into [0, n): while the value is >= n, apply P again. Since j < n lies on its own cycle,
  the walk ends, and the result is a bijection of [0, n). At most a - 1 of the a * b
  values (~1/sqrt(n) of them) are out of range, so the loop ends after a few passes.
  """
  if not 0 < size <= n < 2**31:
    raise ValueError(f"permutation_prefix: need 0 < size={size} <= n={n} < 2^31.")
  if rounds % 2:
    raise ValueError(f"permutation_prefix: rounds={rounds} must be even.")
  a = max(1, math.isqrt(n - 1) + 1)
  b = -(-n // a)
  keys = jax.random.bits(key, (rounds,), jnp.uint32)
  limit = jnp.uint32(n)
  x = _feistel(jnp.arange(size, dtype=jnp.uint32), keys, a, b)
  x = jax.lax.while_loop(
    lambda x: jnp.any(x >= limit), lambda x: jnp.where(x >= limit, _feistel(x, keys, a, b), x), x
  )
  return x.astype(jnp.int32)


def uniform_ints(key: jax.Array, size: int, high: int) -> jax.Array:
  """int32[size] draws uniform over [0, high), a pure function of (key, size, high).

  Counter-based: draw j is fmix32(fmix32(j ^ k0) ^ k1) mod high, two keyed rounds of a
  bijective full-avalanche hash. The modulo's bias is below high / 2^32 (1e-6 for 4,000
  items). jax.random.randint's threefry costs as much as the whole permutation here.
  """
  k0, k1 = jax.random.bits(key, (2,), jnp.uint32)
  x = _fmix32(_fmix32(jnp.arange(size, dtype=jnp.uint32) ^ k0) ^ k1)
  return (x % jnp.uint32(high)).astype(jnp.int32)


def steps_per_epoch(num_positives: int, num_negatives: int, batch_size: int) -> int:
  """Whole batches in one epoch (the remainder, a different random cut each epoch, is dropped)."""
  return num_positives * (1 + num_negatives) // batch_size


@functools.partial(jax.jit, static_argnames=("num_positives", "num_items", "num_negatives",
                                             "num_steps", "batch_size", "sharding"))
def make_epoch(
  key: jax.Array,
  pos_users: jax.Array,
  pos_items: jax.Array,
  *,
  num_positives: int,
  num_items: int,
  num_negatives: int,
  num_steps: int,
  batch_size: int,
  sharding: NamedSharding,
  pos_timestamps: jax.Array | None = None,
) -> tuple[jax.Array, ...]:
  """One shuffled epoch, cut into batches.

  Args:
    key: the epoch's PRNG key.
    pos_users, pos_items: int32[N'] positives (N' >= num_positives; entries past
      num_positives are padding and never read).
    sharding: the sharding of a [num_steps, batch_size] array (batch axis over devices).
    pos_timestamps: optional int32[N'] time of each positive (context features).
  Returns:
    users int32[S, B], items int32[S, B], labels f32[S, B] with S = num_steps, and
    timestamps int32[S, B] when `pos_timestamps` is given: a negative gets its positive's
    time, so context says when a user chose, not what.
  """
  key_perm, key_neg = jax.random.split(key)
  total = num_steps * batch_size
  slot = permutation_prefix(key_perm, num_positives * (1 + num_negatives), total)
  source = slot % num_positives
  negative = slot >= num_positives
  users = pos_users[source]
  drawn = uniform_ints(key_neg, total, num_items)
  items = jnp.where(negative, drawn, pos_items[source])
  labels = (~negative).astype(jnp.float32)
  shape = lambda a: jax.lax.with_sharding_constraint(a.reshape(num_steps, batch_size), sharding)
  if pos_timestamps is None:
    return shape(users), shape(items), shape(labels)
  return shape(users), shape(items), shape(labels), shape(pos_timestamps[source])


def epoch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """[steps, batch] arrays: every step's batch split over all devices."""
  return NamedSharding(mesh, P(None, tuple(mesh.axis_names)))


def negative_collision_rate(
  users: np.ndarray, items: np.ndarray, num_items: int, num_samples: int = 200_000, seed: int = 0
) -> float:
  """Fraction of uniformly drawn negatives that are in fact one of the user's positives.

  Negatives are drawn the way `make_epoch` draws them: the user of a random positive,
  an item uniform over all items. Measured on the host with numpy.
  """
  rng = np.random.default_rng(seed)
  pick = rng.integers(0, users.shape[0], num_samples)
  drawn = rng.integers(0, num_items, num_samples)
  known = users.astype(np.int64) * num_items + items
  probe = users[pick].astype(np.int64) * num_items + drawn
  return float(np.isin(probe, known).mean())
