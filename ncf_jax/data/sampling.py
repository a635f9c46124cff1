"""Training input on the device: each epoch's negatives and shuffle, drawn with jax.random.

An epoch is every positive once plus `num_negatives` sampled negatives per positive,
shuffled together (the paper's and MLPerf's recipe). Sample j of the epoch's
N * (1 + k) slots is positive j % N; it is the positive itself when j < N and a
negative of the same user otherwise. A random permutation of the slots, cut to whole
batches, is the epoch; a negative's item is drawn uniformly from all items.

Negatives are not rejected when they happen to be one of the user's positives (as in
NVIDIA's and MLPerf's NCF); `negative_collision_rate` measures how often that happens.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


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
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One shuffled epoch, cut into batches.

  Args:
    key: the epoch's PRNG key.
    pos_users, pos_items: int32[N'] positives (N' >= num_positives; entries past
      num_positives are padding and never read).
    sharding: the sharding of a [num_steps, batch_size] array (batch axis over devices).
  Returns:
    users int32[S, B], items int32[S, B], labels f32[S, B] with S = num_steps.
  """
  key_perm, key_neg = jax.random.split(key)
  total = num_steps * batch_size
  slot = jax.random.permutation(key_perm, num_positives * (1 + num_negatives))[:total]
  source = slot % num_positives
  negative = slot >= num_positives
  users = pos_users[source]
  drawn = jax.random.randint(key_neg, (total,), 0, num_items, dtype=jnp.int32)
  items = jnp.where(negative, drawn, pos_items[source])
  labels = (~negative).astype(jnp.float32)
  shape = lambda a: jax.lax.with_sharding_constraint(a.reshape(num_steps, batch_size), sharding)
  return shape(users), shape(items), shape(labels)


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
