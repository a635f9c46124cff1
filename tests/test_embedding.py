"""Sharded embedding tables: lookup, the four optimizers, memory, hashing, OOV rows.

Every sharded result is compared with a one-device run and with a plain reference, on the four
2-axis layouts of 8 simulated devices.
"""

import functools
import hashlib
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ncf_jax import embedding, sharding

AUTO = (jax.sharding.AxisType.Auto,) * 2
MESH_SHAPES = [(8, 1), (4, 2), (2, 4), (1, 8)]
VOCAB, DIM, BATCH, STEPS = 37, 4, 16, 3


@functools.cache
def get_mesh(shape):
  devices = jax.devices()[: shape[0] * shape[1]]
  return jax.make_mesh(shape, ("data", "model"), axis_types=AUTO, devices=devices)


def small_spec(optimizer, dtype="float32", **kw):
  # pad_multiple 8: 37 ids + OOV -> 40 rows, 5 per device, so a batch spans every shard.
  return embedding.TableSpec("user", VOCAB, DIM, optimizer, learning_rate=0.05, dtype=dtype,
                             init_std=0.1, pad_multiple=8, **kw)


def batches():
  """STEPS batches of rows with duplicates inside and across device shards, and the OOV row."""
  rng = np.random.RandomState(0)
  raw = rng.randint(-3, VOCAB + 3, size=(STEPS, BATCH))
  raw[:, [0, 7, 15]] = 5  # one id on three different devices' batch shards
  raw[0, 3] = -1  # out of vocabulary -> OOV row
  ids = embedding.to_rows(raw, VOCAB)
  ys = rng.randn(STEPS, BATCH).astype(np.float32)
  return ids, ys


W = np.array([0.5, -1.0, 2.0, 0.25], np.float32)


def loss_of_rows(rows, y):
  return jnp.sum((rows @ W - y) ** 2)


def train(spec, shape):
  """STEPS steps of lookup -> grad w.r.t. rows -> apply_gradients on a mesh; numpy results."""
  mesh = get_mesh(shape)
  table = embedding.init_table(jax.random.key(0), spec, mesh)
  slots = embedding.init_slots(spec, mesh)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(table, slots, ids, y):
    rows = embedding.lookup(table, ids, mesh)
    g = jax.grad(loss_of_rows)(rows, y)
    return embedding.apply_gradients(spec, table, slots, ids, g, mesh)

  bs = sharding.batch_sharding(mesh)
  for ids, y in zip(*batches(), strict=True):
    table, slots = step(table, slots, jax.device_put(ids, bs), jax.device_put(y, bs))
  assert table.sharding.spec == sharding.table_sharding(mesh).spec
  return np.asarray(table.astype(jnp.float32)), jax.tree.map(np.asarray, slots)


def reference(spec, table):
  """The same steps on the full table in float64 numpy, the optimizer math written out."""
  table = table.astype(np.float64)
  v_rows = table.shape[0]
  m, v = np.zeros_like(table), np.zeros_like(table)
  acc, count = np.zeros(v_rows), np.zeros(v_rows, np.int64)
  lr, b1, b2, eps = spec.learning_rate, spec.b1, spec.b2, spec.eps
  for ids, y in zip(*batches(), strict=True):
    rows = table[ids]
    g_rows = 2 * (rows @ W - y)[:, None] * W[None, :]
    grad = np.zeros_like(table)
    np.add.at(grad, ids, g_rows)  # duplicates sum, as autodiff through jnp.take
    t = np.unique(ids)
    g = grad[t]
    if spec.optimizer == "sgd":
      table[t] -= lr * g
    elif spec.optimizer == "adagrad":
      acc[t] += np.mean(g**2, axis=1)
      table[t] -= lr * g / (np.sqrt(acc[t])[:, None] + eps)
    elif spec.optimizer == "adam":
      count[t] += 1
      m[t] = b1 * m[t] + (1 - b1) * g
      v[t] = b2 * v[t] + (1 - b2) * g**2
      c = count[t][:, None]
      table[t] -= lr * (m[t] / (1 - b1**c)) / (np.sqrt(v[t] / (1 - b2**c)) + eps)
  slots = {"sgd": {}, "adagrad": {"accumulator": acc}, "adam": {"m": m, "v": v, "count": count}}
  return table, slots[spec.optimizer]


def optax_reference(spec, table):
  """dense_adam must be exactly optax.adam on the whole table."""
  opt = optax.adam(spec.learning_rate, b1=spec.b1, b2=spec.b2, eps=spec.eps)
  state = opt.init(table)
  loss = lambda t, ids, y: loss_of_rows(jnp.take(t, ids, axis=0), y)
  for ids, y in zip(*batches(), strict=True):
    updates, state = opt.update(jax.grad(loss)(table, ids, y), state)
    table = optax.apply_updates(table, updates)
  return np.asarray(table), {"m": state[0].mu, "v": state[0].nu, "count": state[0].count}


def assert_close(actual, expected, what):
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  scale = max(np.abs(expected).max(), 1e-30)
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6 * scale, err_msg=what)


# ---------------------------------------------------------------------------- specs


def test_padded_vocab_always_reserves_the_oov_row():
  assert small_spec("sgd").padded_vocab == 40
  exact = embedding.TableSpec("item", 256, 8, pad_multiple=256)
  assert exact.padded_vocab == 512 and exact.oov_row == 256


def test_spec_errors_name_the_config_field():
  spec = embedding.TableSpec("user", 37, 4, pad_multiple=6)  # 42 rows
  with pytest.raises(ValueError, match=r"pad_multiple=6\) do not split evenly over 8 devices"):
    embedding.init_table(jax.random.key(0), spec, get_mesh((8, 1)))
  with pytest.raises(ValueError, match=r"embedding.optimizer='lazy'"):
    embedding.TableSpec("user", 37, 4, optimizer="lazy")
  with pytest.raises(ValueError, match=r"embedding.dtype='float16'"):
    embedding.TableSpec("user", 37, 4, dtype="float16")


def test_spec_from_default_config():
  path = os.path.join(os.path.dirname(__file__), "..", "configs", "default.py")
  module_spec = importlib.util.spec_from_file_location("default_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config()
  config.embedding.learning_rate = -1.0
  spec = embedding.spec_from_config(config, "user", 1000, 16)
  assert spec.learning_rate == config.train.learning_rate  # <= 0 falls back
  assert spec.optimizer == config.embedding.optimizer
  assert spec.pad_multiple == config.embedding.pad_multiple


# ---------------------------------------------------------------------------- init and lookup


def test_init_is_sharded_and_independent_of_the_mesh():
  spec = small_spec("adam")
  one = embedding.init_table(jax.random.key(1), spec, get_mesh((1, 1)))
  for shape in MESH_SHAPES:
    table = embedding.init_table(jax.random.key(1), spec, get_mesh(shape))
    assert {s.data.shape for s in table.addressable_shards} == {(5, DIM)}
    np.testing.assert_array_equal(table, one)
  one = np.asarray(one)
  assert np.all(one[VOCAB:] == 0)  # padding and OOV rows start at zero
  assert 0.05 < one[:VOCAB].std() < 0.2
  slots = embedding.init_slots(spec, get_mesh((4, 2)))
  assert slots["count"].dtype == jnp.int32 and slots["m"].dtype == jnp.float32
  assert slots["m"].sharding.spec == sharding.table_sharding(get_mesh((4, 2))).spec


@pytest.mark.parametrize("shape", MESH_SHAPES)
def test_lookup_equals_take(shape):
  mesh = get_mesh(shape)
  table = embedding.init_table(jax.random.key(0), small_spec("sgd"), mesh)
  ids, _ = batches()
  rows = jax.jit(lambda t, i: embedding.lookup(t, i, mesh))(table, ids[0])
  np.testing.assert_array_equal(rows, jnp.take(np.asarray(table), ids[0], axis=0))
  assert rows.sharding.spec[0] == ("data", "model")
  # [B, K] ids (e.g. a user's candidate items) keep their shape.
  rows2 = jax.jit(lambda t, i: embedding.lookup(t, i, mesh))(table, ids[:2].T.copy())
  np.testing.assert_array_equal(rows2, np.asarray(table)[ids[:2].T])


def test_lookup_gradient_wrt_table_is_a_sharded_scatter():
  mesh = get_mesh((4, 2))
  table = embedding.init_table(jax.random.key(0), small_spec("dense_adam"), mesh)
  ids, ys = batches()
  loss = lambda t, lookup: loss_of_rows(lookup(t, ids[0]), ys[0])
  grad = jax.jit(jax.grad(lambda t: loss(t, lambda t, i: embedding.lookup(t, i, mesh))))(table)
  expected = jax.grad(lambda t: loss(t, lambda t, i: jnp.take(t, i, axis=0)))(np.asarray(table))
  assert grad.sharding.spec == sharding.table_sharding(mesh).spec
  assert_close(grad, expected, "d loss / d table")


# ---------------------------------------------------------------------------- optimizers


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "adam", "dense_adam"])
def test_optimizer_matches_single_device_and_reference(optimizer):
  spec = small_spec(optimizer)
  table0 = np.asarray(embedding.init_table(jax.random.key(0), spec, get_mesh((1, 1))))
  if optimizer == "dense_adam":
    want_table, want_slots = optax_reference(spec, table0)
  else:
    want_table, want_slots = reference(spec, table0)
  one_table, one_slots = train(spec, (1, 1))
  assert_close(one_table, want_table, f"{optimizer} table vs reference")
  for k in want_slots:
    assert_close(one_slots[k], want_slots[k], f"{optimizer} slot {k} vs reference")
  for shape in MESH_SHAPES:
    table, slots = train(spec, shape)
    assert_close(table, one_table, f"{optimizer} table on {shape}")
    for k in one_slots:
      assert_close(slots[k], one_slots[k], f"{optimizer} slot {k} on {shape}")


def test_sparse_adam_counts_per_row_and_leaves_untouched_rows_alone():
  spec = small_spec("adam")
  table0 = np.asarray(embedding.init_table(jax.random.key(0), spec, get_mesh((1, 1))))
  table, slots = train(spec, (4, 2))
  ids, _ = batches()
  touched_per_step = np.stack([np.bincount(i, minlength=40) > 0 for i in ids])
  np.testing.assert_array_equal(slots["count"], touched_per_step.sum(0))
  never = ~touched_per_step.any(0)
  assert never.sum() > 3, "the test batches should leave some rows untouched"
  np.testing.assert_array_equal(table[never], table0[never])
  assert np.all(slots["m"][never] == 0) and np.all(slots["v"][never] == 0)
  assert not np.allclose(table[~never], table0[~never])


def test_learning_rate_override():
  spec = small_spec("sgd")
  mesh = get_mesh((2, 4))
  table = embedding.init_table(jax.random.key(0), spec, mesh)
  ids = jnp.arange(8, dtype=jnp.int32)
  grads = jnp.ones((8, DIM), jnp.float32)
  new, _ = jax.jit(lambda t, lr: embedding.apply_gradients(spec, t, {}, ids, grads, mesh, lr))(
    table, jnp.float32(0.5))
  np.testing.assert_allclose(new[:8], np.asarray(table)[:8] - 0.5, rtol=1e-6)
  np.testing.assert_array_equal(new[8:], np.asarray(table)[8:])


def test_bfloat16_storage_round_trip():
  mesh = get_mesh((4, 2))
  spec, f32_spec = small_spec("adam", dtype="bfloat16"), small_spec("adam")
  table = embedding.init_table(jax.random.key(0), spec, mesh)
  f32 = embedding.init_table(jax.random.key(0), f32_spec, mesh)
  assert table.dtype == jnp.bfloat16
  np.testing.assert_array_equal(table, f32.astype(jnp.bfloat16))  # same draw, rounded once
  ids, ys = batches()

  @jax.jit
  def step(table, ids, y):
    rows = embedding.lookup(table, ids, mesh)
    g = jax.grad(loss_of_rows)(rows, y)
    new, slots = embedding.apply_gradients(spec, table, embedding.init_slots(spec, mesh), ids,
                                           g, mesh)
    # The same step on an f32 copy: bf16 storage must only round the result, once.
    want, _ = embedding.apply_gradients(f32_spec, table.astype(jnp.float32),
                                        embedding.init_slots(f32_spec, mesh), ids, g, mesh)
    return rows, embedding.lookup(table, ids, mesh, dtype=jnp.bfloat16), new, slots, want

  rows, rows_bf16, new, slots, want = step(table, ids[0], ys[0])
  assert rows.dtype == jnp.float32 and rows_bf16.dtype == jnp.bfloat16
  np.testing.assert_array_equal(rows, np.asarray(table.astype(jnp.float32))[ids[0]])
  assert new.dtype == jnp.bfloat16 and slots["m"].dtype == jnp.float32
  np.testing.assert_array_equal(new, want.astype(jnp.bfloat16))
  assert not np.array_equal(new, table)


# ---------------------------------------------------------------------------- cost at scale


def compiled_step(optimizer, vocab, mesh, batch=1024, dim=16):
  spec = embedding.TableSpec("big", vocab - 1, dim, optimizer)  # padded to exactly `vocab`
  assert spec.padded_vocab == vocab
  table, slots = embedding.abstract_state(spec, mesh)  # shapes only: nothing is allocated
  bs = sharding.batch_sharding(mesh)
  ids = jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=bs)
  y = jax.ShapeDtypeStruct((batch,), jnp.float32, sharding=bs)

  def step(table, slots, ids, y):
    rows = embedding.lookup(table, ids, mesh)
    g = jax.grad(lambda r: jnp.sum((r.sum(-1) - y) ** 2))(rows)
    return embedding.apply_gradients(spec, table, slots, ids, g, mesh)

  return jax.jit(step, donate_argnums=(0, 1)).lower(table, slots, ids, y).compile()


def test_sparse_step_has_no_table_sized_temporary():
  mesh = get_mesh((8, 1))
  vocab, dim = 2**20, 16
  shard_bytes = vocab // 8 * dim * 4  # 8 MiB of table per device
  flops = {}
  for optimizer in ["sgd", "adagrad", "adam"]:
    compiled = compiled_step(optimizer, vocab, mesh)
    mem = compiled.memory_analysis()
    assert mem.temp_size_in_bytes < shard_bytes / 16, (optimizer, mem.temp_size_in_bytes)
    assert mem.alias_size_in_bytes >= shard_bytes  # table donated: updated in place
    flops[optimizer] = compiled.cost_analysis()["flops"]
    # The work does not grow with the vocabulary.
    small = compiled_step(optimizer, 2**16, mesh).cost_analysis()["flops"]
    assert flops[optimizer] == small, optimizer
  # The check can see a shard-sized temporary: dense Adam builds a shard-sized gradient.
  dense = compiled_step("dense_adam", vocab, mesh).memory_analysis()
  assert dense.temp_size_in_bytes >= shard_bytes


def test_init_never_materialises_the_whole_table():
  mesh = get_mesh((8, 1))
  spec = embedding.TableSpec("big", 2**20 - 1, 16, "sgd")
  compiled = jax.jit(lambda k: embedding.init_table(k, spec, mesh)).lower(
    jax.random.key(0)).compile()
  mem = compiled.memory_analysis()
  assert mem.output_size_in_bytes == 2**20 * 16 * 4 // 8
  assert mem.temp_size_in_bytes + mem.output_size_in_bytes < 2**20 * 16 * 4


# ---------------------------------------------------------------------------- ids

MASK = 2**64 - 1


def py_hash(raw, num_buckets):
  """The documented formula, independently in plain Python ints."""
  if isinstance(raw, str):
    raw = raw.encode("utf-8")
  if isinstance(raw, bytes):
    z = int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little")
  else:
    z = raw & MASK
  z = (z + 0x9E3779B97F4A7C15) & MASK
  z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
  z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
  return (z ^ (z >> 31)) % num_buckets


def test_hash_matches_published_splitmix64():
  # Vigna's splitmix64 seeded with 0 outputs 0xe220a8397b1dcdaf, then 0x6e789e6aa1b965f4.
  n = 2**31 - 1
  got = embedding.hash_ids(np.array([0, 0x9E3779B97F4A7C15], np.uint64), n)
  np.testing.assert_array_equal(got, [0xE220A8397B1DCDAF % n, 0x6E789E6AA1B965F4 % n])


def test_hash_ints_is_stable_and_in_range():
  raw = np.array([0, 1, 2, -1, -(2**63), 2**63 - 1, 123456789012345, 42], np.int64)
  for n in [1, 7, 1000, 2**31 - 1]:
    got = embedding.hash_ids(raw, n)
    assert got.dtype == np.int32 and got.shape == raw.shape
    np.testing.assert_array_equal(got, [py_hash(int(x), n) for x in raw])
  many = np.random.RandomState(0).randint(-(2**62), 2**62, size=(100, 50), dtype=np.int64)
  got = embedding.hash_ids(many, 1000)
  assert got.shape == (100, 50) and got.min() >= 0 and got.max() < 1000
  # Sequential ids spread evenly over the buckets.
  counts = np.bincount(embedding.hash_ids(np.arange(100_000), 100), minlength=100)
  assert counts.min() > 850 and counts.max() < 1150


def test_hash_strings():
  raw = ["alice", "bob", "", "Zoë", "12345"]
  got = embedding.hash_ids(raw, 1009)
  assert got.dtype == np.int32
  np.testing.assert_array_equal(got, [py_hash(s, 1009) for s in raw])
  np.testing.assert_array_equal(embedding.hash_ids(np.array(raw), 1009), got)
  np.testing.assert_array_equal(embedding.hash_ids([s.encode() for s in raw], 1009), got)
  assert embedding.hash_ids(["12345"], 2**31 - 1) != embedding.hash_ids([12345], 2**31 - 1)
  with pytest.raises(ValueError, match="num_buckets"):
    embedding.hash_ids([1], 0)
  with pytest.raises(TypeError):
    embedding.hash_ids(np.array([1.5]), 10)


def test_to_rows_maps_out_of_vocabulary_to_the_reserved_row():
  raw = np.array([0, 36, 37, -1, 10**12], np.int64)
  np.testing.assert_array_equal(embedding.to_rows(raw, 37), [0, 36, 37, 37, 37])
  got = embedding.to_rows(jnp.array([3, -5, 40]), 37)
  assert isinstance(got, jax.Array) and got.dtype == jnp.int32
  np.testing.assert_array_equal(got, [3, 37, 37])
  assert small_spec("sgd").oov_row == 37 < small_spec("sgd").padded_vocab


# ---------------------------------------------------------------------------- memory report


@pytest.mark.parametrize("optimizer,dtype,per_row", [
  ("sgd", "float32", 256), ("adagrad", "float32", 260), ("adam", "float32", 772),
  ("dense_adam", "float32", 768), ("sgd", "bfloat16", 128), ("adagrad", "bfloat16", 132),
  ("adam", "bfloat16", 644), ("dense_adam", "bfloat16", 640),
])
def test_memory_report(optimizer, dtype, per_row):
  spec = embedding.TableSpec("user", 10**9, 64, optimizer, dtype=dtype)
  (r,) = embedding.memory_report([spec], num_devices=8)
  assert r["bytes_per_row"] == per_row == embedding.bytes_per_row(64, optimizer, dtype)
  assert r["padded_vocab"] == 1_000_000_256 and r["rows_per_device"] == 125_000_032
  assert r["total_bytes"] == r["table_bytes"] + r["slot_bytes"]
  scalars = 4 if optimizer == "dense_adam" else 0
  assert r["total_bytes"] == 1_000_000_256 * per_row + scalars
  assert r["per_device_bytes"] == 125_000_032 * per_row + scalars
  assert r["step_temp_bytes_per_device"] == (125_000_032 * 256 if optimizer == "dense_adam"
                                             else 0)
