"""Embedding tables: row-sharded over the mesh, looked up and updated without table-sized work.

A table `f32[V, D]` (or bf16) is split by rows over *all* devices (`sharding.table_sharding`):
device k (its linear index over the mesh axes) owns rows [k * V/n, (k + 1) * V/n). The batch
of ids is split over the same devices (`sharding.batch_sharding`). A train step is

    rows = lookup(table, ids, mesh)                  # f32[B, D], split like the batch
    g_rows = grad(loss)(rows, ...)                   # f32[B, D], split like the batch
    table, slots = apply_gradients(spec, table, slots, ids, g_rows, mesh)

and the caller's `jax.jit` donates `table` and `slots`, so the update is a scatter in place.

The exchange (explicit `jax.shard_map`, n devices, B ids per step, D dims, s bytes per stored
element: 4 for float32, 2 for bfloat16):

  lookup           all-gather ids (int32[B] on every device) -> each device gathers the rows it
                   owns, zeros elsewhere -> reduce-scatter (psum_scatter) of [B, D] back to the
                   batch shards. Per device per step about 4B + B*D*s bytes moved (ring
                   collectives move (n-1)/n of that).
  apply_gradients  all-gather ids and f32 row gradients -> each device sums the gradients per
                   unique id it owns (sort + segment_sum, static size B) and updates only those
                   rows of its shard. About 4B + 4*B*D bytes per device per step.

Neither step depends on V, and the largest temporary is [B, D], never a table-sized array
(except `dense_adam`, which by definition updates every row and so builds one shard-sized
gradient). We chose all-gather/reduce-scatter over an all-to-all exchange on purpose: an
all-to-all needs a static per-(source, owner) capacity C. A balanced batch needs only about
B*D*s/n bytes per device, but with Zipf-skewed ids one owner can receive most of a batch, so an
exact all-to-all needs C = B/n per pair, i.e. n*C = B rows per device: the same volume as the
all-gather, plus the bucketing work. A smaller C silently drops lookups on overflow. The
all-gather form is exact for any skew, needs no tuning, and uses the collectives that XLA
optimises best. At NCF sizes (B = 64k, D = 64) it is ~34 MB per device per step; a dedup-then-
all-to-all exchange is the upgrade path for hundreds of devices over a slow network.

docs/embeddings.md has the optimizers' math, bytes per row, and sizing plans.

Ids and out-of-vocabulary rows. Tables have `padded_vocab = round_up(vocab_size + 1,
pad_multiple)` rows; row `vocab_size` always exists and is the OOV row: `to_rows` maps ids
outside [0, vocab_size) to it. Padding rows, the OOV row included, start at zero, so an id never
seen in training looks up a zero vector. With hashing (`hash_ids`), every id has a bucket in
[0, num_buckets) and there is no OOV. Ids outside [0, padded_vocab) reaching `lookup` have no
owner: they read zeros and are never updated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ncf_jax import sharding

OPTIMIZERS = ("dense_adam", "adam", "adagrad", "sgd")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

Slots = dict[str, jax.Array]


# ---------------------------------------------------------------------------- table specs


@dataclasses.dataclass(frozen=True)
class TableSpec:
  """One embedding table: shape, storage, initialiser and optimizer. Hashable (jit-static).

  Attributes:
    name: used in errors and reports ('user', 'item', ...).
    vocab_size: real rows (ids 0..vocab_size-1, or the number of hash buckets).
    dim: D, the embedding width.
    optimizer: 'dense_adam' | 'adam' (sparse, per-row counts) | 'adagrad' (row-wise) | 'sgd'.
    learning_rate: default step size (apply_gradients can override it per step).
    dtype: storage of the table, 'float32' or 'bfloat16'; optimizer slots are always float32.
    init_std: std of the normal initialiser of real rows.
    pad_multiple: rows are padded up to a multiple of this (config.embedding.pad_multiple).
    b1, b2: Adam decay rates. eps: Adam and Adagrad epsilon (added to the root).
  """

  name: str
  vocab_size: int
  dim: int
  optimizer: str = "dense_adam"
  learning_rate: float = 1e-3
  dtype: str = "float32"
  init_std: float = 0.01
  pad_multiple: int = 256
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8

  def __post_init__(self):
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f"table '{self.name}': embedding.optimizer={self.optimizer!r} is not one "
                       f"of {OPTIMIZERS}.")
    if self.dtype not in DTYPES:
      raise ValueError(f"table '{self.name}': embedding.dtype={self.dtype!r} is not one of "
                       f"{tuple(DTYPES)}.")
    if self.vocab_size <= 0 or self.dim <= 0:
      raise ValueError(f"table '{self.name}': vocab_size={self.vocab_size} and dim={self.dim} "
                       "must be positive.")
    if self.pad_multiple <= 0:
      raise ValueError(f"embedding.pad_multiple={self.pad_multiple} must be positive.")

  @property
  def padded_vocab(self) -> int:
    """Rows stored: vocab_size + 1 (the OOV row), rounded up to a multiple of pad_multiple."""
    return -(-(self.vocab_size + 1) // self.pad_multiple) * self.pad_multiple

  @property
  def oov_row(self) -> int:
    """The row `to_rows` sends out-of-vocabulary ids to (the first padding row)."""
    return self.vocab_size

  @property
  def jnp_dtype(self) -> Any:
    return DTYPES[self.dtype]

  def rows_per_device(self, num_devices: int) -> int:
    """padded_vocab / num_devices; a ValueError naming embedding.pad_multiple if uneven."""
    if self.padded_vocab % num_devices:
      raise ValueError(
        f"table '{self.name}': {self.padded_vocab} rows (vocab {self.vocab_size} + OOV row, "
        f"padded to embedding.pad_multiple={self.pad_multiple}) do not split evenly over "
        f"{num_devices} devices; set embedding.pad_multiple to a multiple of {num_devices}.")
    return self.padded_vocab // num_devices


def spec_from_config(config: Any, name: str, vocab_size: int, dim: int) -> TableSpec:
  """The TableSpec that `config.embedding` (and the Adam/init fields it inherits) describes.

  `vocab_size` is the dense vocabulary, or the bucket count when the ids are hashed.
  """
  emb = config.embedding
  lr = emb.learning_rate if emb.learning_rate > 0 else config.train.learning_rate
  return TableSpec(name=name, vocab_size=int(vocab_size), dim=int(dim), optimizer=emb.optimizer,
                   learning_rate=float(lr), dtype=emb.dtype,
                   init_std=float(config.model.embedding_init_std),
                   pad_multiple=int(emb.pad_multiple), b1=float(config.train.adam_b1),
                   b2=float(config.train.adam_b2), eps=float(config.train.adam_eps))


# ---------------------------------------------------------------------------- state


def _slot_shapes(spec: TableSpec) -> dict[str, jax.ShapeDtypeStruct]:
  v, d, f32, i32 = spec.padded_vocab, spec.dim, jnp.float32, jnp.int32
  if spec.optimizer == "dense_adam":
    return {"m": jax.ShapeDtypeStruct((v, d), f32), "v": jax.ShapeDtypeStruct((v, d), f32),
            "count": jax.ShapeDtypeStruct((), i32)}
  if spec.optimizer == "adam":
    return {"m": jax.ShapeDtypeStruct((v, d), f32), "v": jax.ShapeDtypeStruct((v, d), f32),
            "count": jax.ShapeDtypeStruct((v,), i32)}
  if spec.optimizer == "adagrad":
    return {"accumulator": jax.ShapeDtypeStruct((v,), f32)}
  return {}


def _specs_like(shapes: Any, axes: tuple[str, ...]) -> Any:
  """Partition specs that split the leading (row) dim of every non-scalar leaf over `axes`."""
  return jax.tree.map(lambda s: P(axes, *(None,) * (len(s.shape) - 1)) if s.shape else P(),
                      shapes)


def slot_shardings(spec: TableSpec, mesh: Mesh) -> Slots:
  """Shardings of `init_slots(spec, mesh)`: rows split like the table, scalars replicated."""
  specs = _specs_like(_slot_shapes(spec), tuple(mesh.axis_names))
  return jax.tree.map(lambda p: NamedSharding(mesh, p), specs)


def abstract_state(spec: TableSpec, mesh: Mesh) -> tuple[jax.ShapeDtypeStruct, Any]:
  """(table, slots) as ShapeDtypeStructs carrying this mesh's shardings (for orbax restore)."""
  spec.rows_per_device(mesh.devices.size)
  table = jax.ShapeDtypeStruct((spec.padded_vocab, spec.dim), spec.jnp_dtype,
                               sharding=sharding.table_sharding(mesh))
  slots = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                       _slot_shapes(spec), slot_shardings(spec, mesh))
  return table, slots


def init_table(key: jax.Array, spec: TableSpec, mesh: Mesh) -> jax.Array:
  """A new table `dtype[padded_vocab, D]`, born row-sharded (`sharding.table_sharding`).

  Real rows ~ normal(0, init_std); padding rows (the OOV row included) are zero. The random
  bits are partitionable, so each device generates only its shard and the values do not
  depend on the mesh.
  """
  spec.rows_per_device(mesh.devices.size)

  def init(key):
    rows = spec.init_std * jax.random.normal(key, (spec.padded_vocab, spec.dim), jnp.float32)
    real = jnp.arange(spec.padded_vocab)[:, None] < spec.vocab_size
    return jnp.where(real, rows, 0.0).astype(spec.jnp_dtype)

  return jax.jit(init, out_shardings=sharding.table_sharding(mesh))(key)


def init_slots(spec: TableSpec, mesh: Mesh) -> Slots:
  """Zero optimizer state for `spec.optimizer`, born sharded like the table. All float32.

    dense_adam: m, v: f32[V, D]; count: int32[] (one step count, as optax.adam)
    adam:       m, v: f32[V, D]; count: int32[V] (each row's own step count)
    adagrad:    accumulator: f32[V] (running sum of the row's mean squared gradient)
    sgd:        {} (no state)
  """
  spec.rows_per_device(mesh.devices.size)
  shapes = _slot_shapes(spec)
  zeros = lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  return jax.jit(zeros, out_shardings=slot_shardings(spec, mesh))()


# ---------------------------------------------------------------------------- lookup


def _check_split(what: str, size: int, mesh: Mesh) -> None:
  n = mesh.devices.size
  if size % n:
    raise ValueError(f"{what} has leading size {size}, which does not split evenly over the "
                     f"{n} devices of the mesh; use a batch size that is a multiple of {n}.")


def lookup(table: jax.Array, ids: jax.Array, mesh: Mesh, dtype: Any = jnp.float32,
           dedup: bool = False) -> jax.Array:
  """Rows of a row-sharded table for a batch-sharded set of ids.

  Args:
    table: T[V, D], rows split over all devices (`sharding.table_sharding`), T = f32 or bf16.
    ids: int32[B, ...] row indices in [0, V), leading dim split over all devices. Ids outside
      [0, V) have no owner and read zeros (map them with `to_rows`/`hash_ids` first).
    mesh: the mesh the table is sharded over.
    dtype: dtype of the returned rows (the compute dtype).
    dedup: on one device, read each distinct row once, in ascending order, and expand. Pass
      it when the same step's `apply_gradients` updates this table with a sparse optimizer
      ('adam', 'adagrad', 'sgd'): that dedups the same ids and re-reads the same rows, and
      XLA merges the two, so a touched row comes from memory once per step instead of twice
      (10^7-row tables: -10% step time; see BENCHMARKS.md). Same result either way.

  Returns:
    dtype[B, ..., D] split like `ids`; equal to `jnp.take(table, ids, axis=0)`. Differentiable:
    the gradient w.r.t. `table` is a scatter-add into each device's own shard only.
  """
  axes = tuple(mesh.axis_names)
  _check_split("lookup ids", ids.shape[0], mesh)
  _check_split("table", table.shape[0], mesh)
  if mesh.devices.size == 1:
    # One device owns every row: a plain gather. shard_map's collectives are no-ops here
    # but still cost a thunk each on CPU (~15% of a batch-256 step).
    if not dedup:
      return table.at[ids.astype(jnp.int32)].get(
        mode="fill", fill_value=0, wrap_negative_indices=False).astype(dtype)
    # The same ops, in the same order, as apply_gradients' one-device path, so that XLA's
    # common-subexpression elimination shares the sort and the gather of distinct rows.
    vl = table.shape[0]
    rel = ids.astype(jnp.int32).reshape(-1)
    rel = jnp.where((rel >= 0) & (rel < vl), rel, vl)
    rows, inverse = _unique_rows(rel, vl)
    distinct = table.at[rows].get(mode="clip").astype(jnp.float32)
    out = jnp.where((rel < vl)[:, None], distinct[inverse], 0)
    return out.reshape(*ids.shape, table.shape[1]).astype(dtype)

  def local(shard, ids_local):
    # Every device sees every id (4 bytes each) and answers those it owns.
    ids_all = jax.lax.all_gather(ids_local, axes, tiled=True)  # int32[B, ...]
    vl = shard.shape[0]
    rel = ids_all - jax.lax.axis_index(axes) * vl
    owned = (rel >= 0) & (rel < vl)
    rows = jnp.where(owned[..., None], shard.at[rel].get(mode="clip"), 0)
    # Exactly one device contributes each row, so the sum is exact even in bf16.
    return jax.lax.psum_scatter(rows, axes, scatter_dimension=0, tiled=True)

  rows = jax.shard_map(local, mesh=mesh, in_specs=(P(axes, None), P(axes)),
                       out_specs=P(axes))(table, ids.astype(jnp.int32))
  return rows.astype(dtype)


# ---------------------------------------------------------------------------- optimizers


def _safe_increment(count: jax.Array) -> jax.Array:
  # As optax.safe_increment: saturate instead of wrapping to negative step counts.
  big = jnp.iinfo(jnp.int32).max
  return jnp.where(count < big, count + 1, big)


def _dense_adam(spec, shard, slots, grad, lr):
  """optax.adam on one shard: grad f32[Vl, D] is the full (mostly zero) gradient."""
  m = (1 - spec.b1) * grad + spec.b1 * slots["m"]
  v = (1 - spec.b2) * grad**2 + spec.b2 * slots["v"]
  count = _safe_increment(slots["count"])
  m_hat = m / (1 - spec.b1**count).astype(jnp.float32)
  v_hat = v / (1 - spec.b2**count).astype(jnp.float32)
  update = (-lr) * (m_hat / (jnp.sqrt(v_hat) + spec.eps))
  new = (shard.astype(jnp.float32) + update).astype(shard.dtype)
  return new, {"m": m, "v": v, "count": count}


def _sparse_rows(spec, w, slots, grad, lr):
  """Row-wise update of the touched rows. w, grad: f32[N, D]; slots: the rows' slot values."""
  if spec.optimizer == "sgd":
    return w - lr * grad, {}
  if spec.optimizer == "adagrad":
    # FBGEMM's row-wise Adagrad: one accumulator per row, fed the mean squared gradient.
    acc = slots["accumulator"] + jnp.mean(grad**2, axis=-1)
    return w - lr * grad / (jnp.sqrt(acc)[:, None] + spec.eps), {"accumulator": acc}
  # Lazy Adam: a row's moments decay only on steps that touch it, and its bias correction
  # uses its own step count, so a rarely seen row is not over-corrected.
  count = _safe_increment(slots["count"])
  m = (1 - spec.b1) * grad + spec.b1 * slots["m"]
  v = (1 - spec.b2) * grad**2 + spec.b2 * slots["v"]
  # 1 - b**c as -expm1(c log b): in float32, 1 - 0.999**1 is off by 1e-5 relative
  # (cancellation), which would shift every first update by 6e-6 relative.
  c = count.astype(jnp.float32)[:, None]
  m_hat = m / -jnp.expm1(c * math.log(spec.b1))
  v_hat = v / -jnp.expm1(c * math.log(spec.b2))
  return w - lr * m_hat / (jnp.sqrt(v_hat) + spec.eps), {"m": m, "v": v, "count": count}


def _unique_rows(rel: jax.Array, fill: int) -> tuple[jax.Array, jax.Array]:
  """jnp.unique(rel, size=N, fill_value=fill, return_inverse=True) for int32[N] `rel` <= fill.

  Returns (rows int32[N]: the distinct values ascending, then `fill`; inverse int32[N]: the
  index in `rows` of each entry of `rel`). jnp.unique sorts (value, index) pairs, and XLA's
  CPU sort of two operands is 5-10x slower than of one (12-28 ms against 2 ms for 65,536
  ids); here one single-operand sort, a compaction and a binary search give the same result
  3-7x faster (0.19 ms against 0.69 ms for 4,096 ids).
  """
  n = rel.shape[0]
  ordered = jnp.sort(rel)
  first = jnp.concatenate([jnp.ones((1,), bool), ordered[1:] != ordered[:-1]])
  slot = jnp.where(first, jnp.cumsum(first) - 1, n)  # n: not the first of its run, dropped
  rows = jnp.full((n,), fill, rel.dtype).at[slot].set(ordered, mode="drop")
  return rows, jnp.searchsorted(rows, rel, method="scan").astype(jnp.int32)


def apply_gradients(spec: TableSpec, table: jax.Array, slots: Slots, ids: jax.Array,
                    row_grads: jax.Array, mesh: Mesh,
                    learning_rate: float | jax.Array | None = None) -> tuple[jax.Array, Slots]:
  """One optimizer step on the rows a batch touched (every row for 'dense_adam').

  Args:
    spec: the table's spec (optimizer, hyperparameters).
    table: T[V, D] row-sharded; slots: `init_slots(spec, mesh)` state, sharded like it.
      Donate both in the caller's jit so the scatter happens in place.
    ids: int32[B, ...] the ids that were looked up, leading dim split over all devices.
    row_grads: f32[B, ..., D] the loss gradient w.r.t. `lookup(table, ids)`, split like ids.
      Duplicate ids are summed before the update, as autodiff through jnp.take would.
    mesh: the mesh of table and batch.
    learning_rate: overrides spec.learning_rate (a traced scalar for schedules).

  Returns:
    (table, slots), same shapes, dtypes and shardings. Work and temporaries are O(B * D) per
    device for 'sgd', 'adagrad' and 'adam', O(V/n * D) for 'dense_adam'.
  """
  axes = tuple(mesh.axis_names)
  if table.shape != (spec.padded_vocab, spec.dim):
    raise ValueError(f"table '{spec.name}' has shape {table.shape}, its spec says "
                     f"{(spec.padded_vocab, spec.dim)}.")
  if row_grads.shape != (*ids.shape, spec.dim):
    raise ValueError(f"table '{spec.name}': row_grads {row_grads.shape} must be ids.shape + "
                     f"(dim,) = {(*ids.shape, spec.dim)}.")
  _check_split("apply_gradients ids", ids.shape[0], mesh)
  lr = jnp.asarray(spec.learning_rate if learning_rate is None else learning_rate, jnp.float32)
  dim = spec.dim

  # On one device the collectives are no-ops that still cost a thunk each: skip shard_map.
  single = mesh.devices.size == 1

  def local(shard, slots, ids_local, grads_local, lr):
    ids_all = ids_local.reshape(-1)  # int32[N]
    grads_all = grads_local.reshape(-1, dim).astype(jnp.float32)  # f32[N, D]
    vl = shard.shape[0]
    rel = ids_all
    if not single:
      ids_all = jax.lax.all_gather(ids_all, axes, tiled=True)
      grads_all = jax.lax.all_gather(grads_all, axes, tiled=True)
      rel = ids_all - jax.lax.axis_index(axes) * vl
    # Rows this device does not own get index vl: out of range, so scatters drop them.
    rel = jnp.where((rel >= 0) & (rel < vl), rel, vl)
    if spec.optimizer == "dense_adam":
      grad = jnp.zeros((vl, dim), jnp.float32).at[rel].add(grads_all, mode="drop")
      return _dense_adam(spec, shard, slots, grad, lr)
    # Sum duplicate ids first: the optimizers are nonlinear in the row's total gradient.
    n = rel.shape[0]
    rows, inverse = _unique_rows(rel, vl)
    grad = jax.ops.segment_sum(grads_all, inverse.reshape(-1), num_segments=n)  # f32[N, D]
    w = shard.at[rows].get(mode="clip").astype(jnp.float32)
    old = jax.tree.map(lambda s: s.at[rows].get(mode="clip"), slots)
    w, new = _sparse_rows(spec, w, old, grad, lr)
    shard = shard.at[rows].set(w.astype(shard.dtype), mode="drop")
    slots = jax.tree.map(lambda s, x: s.at[rows].set(x, mode="drop"), slots, new)
    return shard, slots

  if single:
    return local(table, slots, ids.astype(jnp.int32), row_grads, lr)
  slot_specs = _specs_like(slots, axes)
  return jax.shard_map(
    local, mesh=mesh,
    in_specs=(P(axes, None), slot_specs, P(axes), P(axes), P()),
    out_specs=(P(axes, None), slot_specs),
  )(table, slots, ids.astype(jnp.int32), row_grads, lr)


# ---------------------------------------------------------------------------- ids

# splitmix64 (Steele, Lea & Flood 2014; Vigna's reference C): golden-ratio increment, then
# the Stafford "Mix13" finalizer. A bijection on 64-bit ints with full avalanche.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
  with np.errstate(over="ignore"):  # uint64 arithmetic is meant to wrap
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def _string_key(s: Any) -> int:
  if isinstance(s, str):
    s = s.encode("utf-8")
  if not isinstance(s, bytes | bytearray):
    raise TypeError(f"hash_ids: string ids must be str or bytes, got {type(s).__name__}.")
  return int.from_bytes(hashlib.blake2b(s, digest_size=8).digest(), "little")


def hash_ids(raw_ids: np.ndarray | Sequence[Any], num_buckets: int) -> np.ndarray:
  """Stable hash of raw ids into buckets [0, num_buckets): int32, same shape as the input.

  The formula, fixed forever (checkpoints depend on it):
    integer id x:  key = x mod 2**64 (two's complement for negatives)
    string id s:   key = little-endian uint64 of blake2b(utf8(s), digest_size=8)
                   (bytes ids are hashed as they are)
    bucket = splitmix64(key) mod num_buckets, where
    splitmix64(z): z += 0x9E3779B97F4A7C15
                   z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
                   z = (z ^ (z >> 27)) * 0x94D049BB133111EB
                   return z ^ (z >> 31)          (all mod 2**64)
  The int 5 and the string "5" hash differently. Vectorised for integer arrays; strings go
  through hashlib one by one (host-side data preparation, not the training loop).
  """
  if not 0 < num_buckets <= np.iinfo(np.int32).max:
    raise ValueError(f"num_buckets={num_buckets} must be in [1, 2**31 - 1] (hash_buckets).")
  arr = np.asarray(raw_ids)
  if arr.dtype.kind in "iu":
    keys = arr.astype(np.uint64)  # wraps negatives to two's complement
  elif arr.dtype.kind in "USO":
    keys = np.fromiter((_string_key(s) for s in arr.reshape(-1)), np.uint64,
                       count=arr.size).reshape(arr.shape)
  else:
    raise TypeError(f"hash_ids: ids must be integers or strings, got dtype {arr.dtype}.")
  return (_splitmix64(keys) % np.uint64(num_buckets)).astype(np.int32)


def to_rows(ids: Any, vocab_size: int) -> Any:
  """Dense ids -> table rows: ids outside [0, vocab_size) go to the OOV row `vocab_size`.

  Works on numpy (returns numpy) and jax arrays (returns jax); int32 result, same shape.
  """
  xp = jnp if isinstance(ids, jax.Array) else np
  ids = xp.asarray(ids)
  return xp.where((ids >= 0) & (ids < vocab_size), ids, vocab_size).astype(xp.int32)


# ---------------------------------------------------------------------------- memory


def bytes_per_row(dim: int, optimizer: str, dtype: str) -> int:
  """Bytes a stored row costs: the row in `dtype` plus its float32 optimizer slots."""
  table = dim * np.dtype(DTYPES[dtype]).itemsize
  slots = {"dense_adam": 8 * dim, "adam": 8 * dim + 4, "adagrad": 4, "sgd": 0}[optimizer]
  return table + slots


def memory_report(specs: Sequence[TableSpec], num_devices: int) -> list[dict[str, Any]]:
  """Per table: bytes of table + optimizer slots, in total and per device.

  Keys: name, optimizer, dtype, vocab_size, padded_vocab, dim, rows_per_device,
  table_bytes_per_row, slot_bytes_per_row, bytes_per_row, table_bytes, slot_bytes,
  total_bytes, per_device_bytes, and step_temp_bytes_per_device: the shard-sized f32
  gradient 'dense_adam' builds each step (0 for the sparse optimizers, whose temporaries are
  O(B * D), a function of the batch, not of the table).
  """
  out = []
  for s in specs:
    rows = s.rows_per_device(num_devices)
    per_row = bytes_per_row(s.dim, s.optimizer, s.dtype)
    table_row = bytes_per_row(s.dim, "sgd", s.dtype)
    scalars = 4 if s.optimizer == "dense_adam" else 0  # the replicated step count
    out.append(dict(
      name=s.name, optimizer=s.optimizer, dtype=s.dtype, vocab_size=s.vocab_size,
      padded_vocab=s.padded_vocab, dim=s.dim, rows_per_device=rows,
      table_bytes_per_row=table_row, slot_bytes_per_row=per_row - table_row,
      bytes_per_row=per_row, table_bytes=s.padded_vocab * table_row,
      slot_bytes=s.padded_vocab * (per_row - table_row) + scalars,
      total_bytes=s.padded_vocab * per_row + scalars,
      per_device_bytes=rows * per_row + scalars,
      step_temp_bytes_per_device=rows * s.dim * 4 if s.optimizer == "dense_adam" else 0,
    ))
  return out
