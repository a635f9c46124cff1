"""Two-tower retrieval model: a user tower and an item tower that meet in a dot product.

  user id row ─┐                                   context tower (optional)
  gender, age, ├─ concat ─ MLP ─ u ──── + ──── c = MLP(hour-of-day, day-of-week)
  occupation  ─┘                        │
                                        u' · v ─> logit = scale * (u' · v) + bias
  item id row ─┐                        │
  genres bag,  ├─ concat ─ MLP ─ v ─────┘
  year bucket ─┘

The id rows come from the row-sharded tables 'user_tt' / 'item_tt' (ncf_jax.embedding),
looked up by the trainer like every other model's. Side features are small categorical
vocabularies (2 genders, 7 age buckets, 21 occupations, ~12 year buckets, ~19 genres), so
their embeddings are ordinary dense parameters of this module.

Context enters its own tower whose output is *added* to the user vector, never the item
tower: item vectors then depend on the item alone, so they can be computed once and put in
an ANN index (recommend --export), and a query at time t is one dot product against them.
The context term c(t) · v is a time-dependent item preference; anything that mixed context
and item inside a non-linearity would force rescoring every item per query.

Model inputs. The module is called `module(rows, batch)` like the NCF models, with

  rows  = {'user_tt': f32[B, F], 'item_tt': f32[B, F]}
  batch = {'user': int32[B], 'item': int32[B],
           'user_features': {name: int32[B] or int32[B, K]},    # when side features are used
           'item_features': {name: int32[B] or int32[B, K]},
           'timestamp': int32[B]}                                # when context is used

The per-id feature matrices live on the device (replicated: `side_inputs`) and the trainer
gathers a batch's rows from them (`model_batch`); they are data, not parameters, so they get
no optimizer state and are not checkpointed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from ncf_jax import embedding, sharding
from ncf_jax.models import TableDecl, _dense

USER_TABLE = "user_tt"
ITEM_TABLE = "item_tt"
HOURS, DAYS = 24, 7
NUM_CONTEXTS = HOURS * DAYS  # every (day-of-week, hour-of-day) pair: context id = 24 * dow + hour


# ---------------------------------------------------------------------------- feature layout


@dataclasses.dataclass(frozen=True)
class Feature:
  """A side feature: `size` categories (int32[N], id per row) or a bag (int32[N, size] 0/1)."""

  name: str
  size: int
  bag: bool


def feature_layout(dataset: Any, side: str) -> tuple[Feature, ...]:
  """The side features of `side` ('user' or 'item') a Dataset carries, in a fixed order.

  Only the sizes and kinds are read, so this also runs inside jit (create_train_state).
  """
  sizes = getattr(dataset, f"{side}_feature_sizes", None) or {}
  values = getattr(dataset, f"{side}_features", None) or {}
  out = []
  for name in sorted(sizes):
    if name not in values:
      raise ValueError(f"{side} feature {name!r} has a size but no values in the dataset.")
    out.append(Feature(name, int(sizes[name]), np.ndim(values[name]) == 2))
  return tuple(out)


def context_ids(timestamps: jax.Array) -> jax.Array:
  """int32[...] context id 24 * day_of_week + hour_of_day (UTC; Monday = 0) of unix seconds."""
  ts = timestamps.astype(jnp.int32)
  hour = (ts // 3600) % HOURS
  dow = (ts // 86400 + 3) % DAYS  # 1970-01-01 was a Thursday
  return dow * HOURS + hour


# ---------------------------------------------------------------------------- module


class _Tower(nnx.Module):
  """in_dim -> widths[0] -> ... -> widths[-1]: ReLU hidden layers, a linear output.

  The output has no ReLU: a non-negative embedding could only express non-negative dot
  products (every user would like every item at least a little).
  """

  def __init__(self, in_dim: int, widths: tuple[int, ...], dtype, rngs: nnx.Rngs):
    self.num_layers = len(widths)
    dims = (in_dim, *widths)
    for i in range(self.num_layers):
      setattr(self, f"layer_{i}", _dense(dims[i], dims[i + 1], dtype, rngs))

  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(self.num_layers):
      x = getattr(self, f"layer_{i}")(x)
      if i + 1 < self.num_layers:
        x = nnx.relu(x)
    return x


class TwoTower(nnx.Module):
  """User tower (+ context tower) and item tower; logit = scale * (u · v) + bias."""

  def __init__(
    self,
    factors: int,
    tower_layers: tuple[int, ...],
    user_features: tuple[Feature, ...],
    item_features: tuple[Feature, ...],
    use_context: bool,
    learn_temperature: bool,
    init_std: float,
    dtype,
    rngs: nnx.Rngs,
  ):
    if not tower_layers:
      raise ValueError("model.tower_layers is empty: give at least the output width, e.g. (32,).")
    self.user_features = user_features
    self.item_features = item_features
    self.use_context = use_context
    self.learn_temperature = learn_temperature
    self.dtype = dtype
    init = nnx.initializers.normal(init_std)
    for side, feats in (("user", user_features), ("item", item_features)):
      for f in feats:
        # One extra row for unknown / out-of-range values (e.g. -1 from a sparse source).
        rows = f.size if f.bag else f.size + 1
        setattr(self, f"{side}_{f.name}", nnx.Param(init(rngs.params(), (rows, factors))))
    widths = tuple(int(w) for w in tower_layers)
    self.user_tower = _Tower(factors * (1 + len(user_features)), widths, dtype, rngs)
    self.item_tower = _Tower(factors * (1 + len(item_features)), widths, dtype, rngs)
    if use_context:
      self.hour = nnx.Param(init(rngs.params(), (HOURS, factors)))
      self.day = nnx.Param(init(rngs.params(), (DAYS, factors)))
      self.context_tower = _Tower(2 * factors, widths, dtype, rngs)
    if learn_temperature:
      # logit = exp(log_scale) * dot + bias: a learned inverse temperature (softmax) and,
      # for BCE, the base rate of positives among the sampled pairs.
      self.log_scale = nnx.Param(jnp.zeros((), jnp.float32))
      self.bias = nnx.Param(jnp.zeros((), jnp.float32))

  # --- construction from a config

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, dataset: Any, rngs: nnx.Rngs):
    """The model `config.model` describes; `dataset` supplies side-feature sizes (not values)."""
    from ncf_jax import models  # noqa: PLC0415  (models imports this module lazily)

    m = config.model
    user_feats = item_feats = ()
    if m.use_side_features:
      if dataset is None:
        raise ValueError(
          "model.use_side_features=True needs the dataset's side-feature sizes: pass the "
          "Dataset to create_model / create_train_state (or set model.use_side_features=False)."
        )
      user_feats, item_feats = feature_layout(dataset, "user"), feature_layout(dataset, "item")
    return cls(
      factors=int(m.factors),
      tower_layers=tuple(m.tower_layers),
      user_features=user_feats,
      item_features=item_feats,
      use_context=bool(m.use_context),
      learn_temperature=bool(m.learn_temperature),
      init_std=float(m.embedding_init_std),
      dtype=models._dtype(config),
      rngs=rngs,
    )

  @staticmethod
  def tables(config: ml_collections.ConfigDict, dataset: Any = None) -> list[TableDecl]:
    del dataset  # the id tables do not depend on side features
    f = int(config.model.factors)
    return [TableDecl(USER_TABLE, "user", f), TableDecl(ITEM_TABLE, "item", f)]

  # --- towers

  def _embed(self, side: str, feats: tuple[Feature, ...], values: dict) -> list[jax.Array]:
    out = []
    for f in feats:
      table = getattr(self, f"{side}_{f.name}")[...].astype(self.dtype)
      x = values[f.name]
      if f.bag:  # mean of the bag's embeddings; an empty bag is a zero vector
        bag = x.astype(self.dtype)
        count = jnp.maximum(jnp.sum(bag, axis=-1, keepdims=True), 1)
        out.append(bag @ table / count)
      else:
        out.append(table[jnp.where((x >= 0) & (x < f.size), x, f.size)])
    return out

  def user_vectors(self, rows: dict[str, jax.Array], batch: dict) -> jax.Array:
    """dtype[B, D] user vectors, plus the context vector of batch['timestamp'] if present."""
    parts = [rows[USER_TABLE].astype(self.dtype)]
    parts += self._embed("user", self.user_features, batch.get("user_features", {}))
    u = self.user_tower(jnp.concatenate(parts, axis=-1))
    # Without a timestamp the context term is left out: exported user vectors, to which a
    # query adds context_vectors of its own time. The trainer always passes timestamps.
    if self.use_context and "timestamp" in batch:
      u = u + self.context_vectors(context_ids(batch["timestamp"]))
    return u

  def item_vectors(self, rows: dict[str, jax.Array], batch: dict) -> jax.Array:
    """dtype[B, D] item vectors (no context: precomputable for retrieval)."""
    parts = [rows[ITEM_TABLE].astype(self.dtype)]
    parts += self._embed("item", self.item_features, batch.get("item_features", {}))
    return self.item_tower(jnp.concatenate(parts, axis=-1))

  def context_vectors(self, context: jax.Array) -> jax.Array:
    """dtype[B, D] context-tower output of context ids int32[B] (`context_ids`)."""
    hour = self.hour[...].astype(self.dtype)[context % HOURS]
    day = self.day[...].astype(self.dtype)[context // HOURS]
    return self.context_tower(jnp.concatenate([hour, day], axis=-1))

  def scale(self) -> jax.Array:
    """f32[] the inverse temperature multiplying the dot product (1 unless learned)."""
    return jnp.exp(self.log_scale[...]) if self.learn_temperature else jnp.ones((), jnp.float32)

  def logits(self, dots: jax.Array) -> jax.Array:
    """f32[...] logits of dot products: monotone, so rankings by dot and by logit agree."""
    out = self.scale() * dots.astype(jnp.float32)
    return out + self.bias[...] if self.learn_temperature else out

  def __call__(self, rows: dict[str, jax.Array], batch: dict) -> jax.Array:
    u, v = self.user_vectors(rows, batch), self.item_vectors(rows, batch)
    return self.logits(jnp.sum(u.astype(jnp.float32) * v.astype(jnp.float32), axis=-1))


def forward_flops(config: ml_collections.ConfigDict) -> float:
  """Forward FLOPs per (user, item) sample of the dense layers and the dot product.

  Side-feature sizes are not in the config, so the towers' inputs are counted as the id row
  plus 3 user / 2 item feature embeddings (MovieLens); lookups are memory traffic.
  """
  f, widths = int(config.model.factors), tuple(config.model.tower_layers)

  def tower(in_dim):
    dims = (in_dim, *widths)
    return sum(2 * a * b for a, b in zip(dims[:-1], dims[1:], strict=True))

  side = bool(config.model.use_side_features)
  flops = tower(f * (4 if side else 1)) + tower(f * (3 if side else 1)) + 2 * widths[-1]
  if config.model.use_context:
    flops += tower(2 * f) + widths[-1]
  return float(flops)


# ---------------------------------------------------------------------------- losses


def in_batch_softmax_loss(
  user_vecs: jax.Array, item_vecs: jax.Array, items: jax.Array, log_q: jax.Array, scale: jax.Array
) -> jax.Array:
  """In-batch sampled softmax with log-Q correction (Yi et al., RecSys 2019): f32[] mean loss.

  Row i's positive is item i; the other items of the batch are its negatives. They were
  drawn with probability ~ their popularity, so popular items are over-represented as
  negatives; subtracting log q(item) from every logit corrects the sampled softmax towards
  the full softmax over the catalogue. Other rows holding row i's own item are not its
  negatives and are masked out.

  Args:
    user_vecs: f[B, D]; item_vecs: f[B, D] (row i is the positive of user row i).
    items: int32[B] the items (to find repeats); log_q: f32[B] log sampling probability of
      each row's item; scale: f32[] inverse temperature.
  """
  logits = scale * (user_vecs.astype(jnp.float32) @ item_vecs.astype(jnp.float32).T)
  logits = logits - log_q[None, :]
  n = items.shape[0]
  repeat = (items[:, None] == items[None, :]) & ~jnp.eye(n, dtype=bool)
  logits = jnp.where(repeat, -1e9, logits)
  return -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=-1)))


def item_log_q(train_items: np.ndarray, num_rows: int) -> np.ndarray:
  """f32[num_rows] log of each item's share of the training positives (unseen: 1/2 count)."""
  counts = np.bincount(train_items, minlength=num_rows).astype(np.float64)
  counts = np.maximum(counts, 0.5)  # an item never drawn still needs a finite correction
  return np.log(counts / counts.sum()).astype(np.float32)


# ---------------------------------------------------------------------------- inputs


def side_inputs(config: ml_collections.ConfigDict, dataset: Any, mesh) -> dict:
  """Device-resident, replicated arrays the two-tower step and scoring read (else {}).

    user_features / item_features: {name: int32[U] or int32[U, K]} per dense id
    log_q: f32[I] log popularity of each item (train.loss == 'softmax')
    eval_timestamp: int32[U] each user's test timestamp, the context of evaluation (use_context)

  Side features are indexed by dense id, so they need exact (unhashed) ids.
  """
  if config.model.name != "two_tower":
    return {}
  m, hashed = config.model, config.embedding.user_hash_buckets or config.embedding.item_hash_buckets
  if hashed and (m.use_side_features or m.use_context):
    raise ValueError(
      "model.use_side_features / model.use_context need exact ids (features are looked up by "
      "dense id), but embedding.user_hash_buckets / item_hash_buckets are set; set them to 0 "
      "or turn the side features and context off."
    )
  out: dict = {}
  if m.use_side_features:
    for side in ("user", "item"):
      feats = getattr(dataset, f"{side}_features")
      out[f"{side}_features"] = {f.name: np.asarray(feats[f.name], np.int32)
                                 for f in feature_layout(dataset, side)}
  if config.train.loss == "softmax":
    num_rows = config.embedding.item_hash_buckets or dataset.num_items
    rows = dataset.train_items
    if config.embedding.item_hash_buckets:
      rows = embedding.hash_ids(dataset.item_ids, config.embedding.item_hash_buckets)[rows]
    out["log_q"] = item_log_q(rows, num_rows)
  if m.use_context:
    ts = np.zeros(dataset.num_users, np.int64)
    if dataset.test_timestamps is not None:
      ts[dataset.test_users] = dataset.test_timestamps
    out["eval_timestamp"] = to_int32_seconds(ts, "test timestamps")
  replicated = sharding.replicated(mesh)
  return jax.tree.map(lambda a: sharding.put_global(a, replicated), out)


def to_int32_seconds(ts: np.ndarray, what: str) -> np.ndarray:
  """Unix seconds as int32 (the device default); a clear error past 2038."""
  if ts.size and (ts.min() < 0 or ts.max() >= 2**31):
    raise ValueError(f"{what} fall outside 1970..2038 (int32 seconds); context needs them in it.")
  return ts.astype(np.int32)


def model_batch(
  side: dict, users: jax.Array | None, items: jax.Array | None,
  timestamps: jax.Array | None = None,
) -> dict:
  """The `batch` dict of ids (int32[B]) with their side features gathered from `side`.

  Either id array may be None (one tower only). Without `timestamps`, a context model is
  scored at each user's test time (`side['eval_timestamp']`).
  """
  batch: dict = {}
  if users is not None:
    batch["user"] = users
    if "user_features" in side:
      batch["user_features"] = {k: v[users] for k, v in side["user_features"].items()}
    if timestamps is None and "eval_timestamp" in side:
      timestamps = side["eval_timestamp"][users]
    if timestamps is not None:
      batch["timestamp"] = timestamps
  if items is not None:
    batch["item"] = items
    if "item_features" in side:
      batch["item_features"] = {k: v[items] for k, v in side["item_features"].items()}
  return batch


# ---------------------------------------------------------------------------- encoders


def encode_users(model: Any, state: Any, side: dict, users: jax.Array, mesh,
                 timestamps: jax.Array | None = None, with_context: bool = True) -> jax.Array:
  """f32[n, D] user(+context) vectors of dense users int32[n] (n a multiple of the devices).

  `model` is the trainer's static Model, `state` a TrainState (tables + params). Context
  (use_context) is that of `timestamps`, else each user's test time; `with_context=False`
  leaves it out (the vectors an ANN index is queried with, before adding context).
  """
  if not with_context:
    side, timestamps = {k: v for k, v in side.items() if k != "eval_timestamp"}, None
  rows = {USER_TABLE: embedding.lookup(state.tables[USER_TABLE], users, mesh, model.compute_dtype)}
  module = model.module(state.params)
  return module.user_vectors(rows, model_batch(side, users, None, timestamps)).astype(jnp.float32)


def encode_items(model: Any, state: Any, side: dict, items: jax.Array, mesh) -> jax.Array:
  """f32[n, D] item vectors of dense items int32[n] (n a multiple of the devices)."""
  rows = {ITEM_TABLE: embedding.lookup(state.tables[ITEM_TABLE], items, mesh, model.compute_dtype)}
  module = model.module(state.params)
  return module.item_vectors(rows, model_batch(side, None, items)).astype(jnp.float32)


def make_block_score_fn(model: Any, mesh):
  """score_block((state, side), users int32[U], items int32[Ib]) -> f32[U, Ib] logits.

  One matrix product of the towers' outputs: the item tower runs once per block, not once
  per (user, item) pair.
  """

  def score_block(inputs, users, items):
    state, side = inputs
    u = encode_users(model, state, side, users, mesh)
    v = encode_items(model, state, side, items, mesh)
    return model.module(state.params).logits(u @ v.T)

  return score_block
