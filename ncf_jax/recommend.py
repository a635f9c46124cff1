"""Top-k recommendations and embedding export from a trained workdir.

  python -m ncf_jax.recommend --workdir=DIR --users=1,2,3 --k=10
  python -m ncf_jax.recommend --workdir=DIR --users=1,2,3 --k=10 --format=json
  python -m ncf_jax.recommend --workdir=DIR --export=/tmp/emb   # for an external ANN index

Users are given by their ORIGINAL ids (as in the raw data); items are printed by original
id and title where known. Items a user already interacted with (training rows and the
held-out test item) are never recommended.

The workdir holds what is needed to rebuild the model: `config.json` (written by the
trainer at start) and the orbax checkpoints. The dataset is reloaded through the same
config (TFDS prepares it once and caches it), and the latest checkpoint is restored into
the abstract state of a freshly created train state on the *current* mesh, as the trainer
resumes: a model trained on 8 devices serves from 1.

Scoring:
  two_tower  one matrix product of user vectors with all item vectors (item vectors row-
             sharded like the tables), top-k per shard with lax.top_k, then merged.
  others     every item scored pairwise, eval.item_block items at a time, with a running
             top-k (NeuMF has no dot-product structure to exploit).

Export writes, for dot-product models (two_tower, mf):
  user_embeddings.npy f32[U, D], item_embeddings.npy f32[I, D]  (row r = dense id r)
  user_ids.npy, item_ids.npy                                    (original id of each row)
  item_titles.npy (where known), context_embeddings.npy f32[168, D] (two_tower + context)
  export.json: how to score, sizes, scale/bias
so that argmax_i <user_embeddings[u] (+ context), item_embeddings[i]> is the model's ranking.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging

from ncf_jax import checkpoint, ranking, sharding, train, two_tower
from ncf_jax.data.dataset import Dataset

DOT_PRODUCT_MODELS = ("two_tower", "mf")


class RecommendError(ValueError):
  """A request recommend cannot serve (the message says why and what to do)."""


class UnknownUserError(RecommendError):
  """A user id that is not in the dataset the model was trained on."""


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The training config saved in `workdir/config.json` (lists back to tuples)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"{path} does not exist: is {workdir} a training workdir? The trainer writes "
      "config.json when it starts; train with `python -m ncf_jax.main` first."
    )
  with open(path) as f:
    raw = json.load(f)

  def tuples(x):
    if isinstance(x, dict):
      return {k: tuples(v) for k, v in x.items()}
    return tuple(tuples(v) for v in x) if isinstance(x, list) else x

  return ml_collections.ConfigDict(tuples(raw))


@dataclasses.dataclass
class Recommendation:
  """Top-k of one user: original ids, logits (best first) and titles where known."""

  user: Any
  items: list
  scores: list[float]
  titles: list[str] | None = None

  def to_json(self) -> str:
    out = {"user": _plain(self.user), "items": [_plain(i) for i in self.items],
           "scores": [round(float(s), 6) for s in self.scores]}
    if self.titles is not None:
      out["titles"] = self.titles
    return json.dumps(out)


def _plain(x):
  return x.item() if isinstance(x, np.generic) else x


class Recommender:
  """A trained model restored from a workdir, ready to score users against all items."""

  def __init__(self, workdir: str, dataset: Dataset | None = None,
               config: ml_collections.ConfigDict | None = None):
    """Loads config.json, the dataset (unless given) and the latest checkpoint of `workdir`."""
    self.workdir = workdir
    config = load_config(workdir) if config is None else config
    # Serve on whatever devices are here: all of them on the first axis.
    config.mesh.shape = (-1,) + (1,) * (len(config.mesh.axes) - 1)
    if config.embedding.item_hash_buckets:
      raise RecommendError("recommend ranks exact items; this model hashes item ids "
                       "(embedding.item_hash_buckets > 0), which it does not support.")
    self.config = config
    self.mesh = sharding.make_mesh(config.mesh)
    self.dataset = train.load_data(config) if dataset is None else dataset
    self.model = train.build_model(config, self.dataset)
    fresh = train.create_train_state(config, self.model, train.dense_optimizer(config),
                                     self.mesh, self.dataset)
    self.state = restore_latest(workdir, config, fresh)
    self.side = two_tower.side_inputs(config, self.dataset, self.mesh)
    self.user_rows = train.id_rows(config, self.dataset)["user"]
    self._index = None  # original user id -> dense id, built on first use

  # --- ids

  def dense_users(self, original: Sequence[Any]) -> np.ndarray:
    """int32 dense ids of original user ids (str or int); UnknownUserError names the unknown."""
    ids = self.dataset.user_ids
    if self._index is None:
      self._index = {_plain(u): d for d, u in enumerate(ids)}
    numeric = np.issubdtype(np.asarray(ids).dtype, np.integer)
    out = []
    for raw in original:
      key = raw
      if numeric and isinstance(raw, str):
        try:
          key = int(raw)
        except ValueError:
          key = None
      if key not in self._index:
        span = f"{_plain(ids[0])}..{_plain(ids[-1])}" if numeric and len(ids) else "see the data"
        raise UnknownUserError(
          f"user {raw!r} is not a user of dataset {self.dataset.name!r} "
          f"({self.dataset.num_users} users; original ids {span}): the model has no embedding "
          f"for it. Pass original user ids from the training data."
        )
      out.append(self._index[key])
    return np.array(out, np.int32)

  def seen_items(self, users: np.ndarray) -> np.ndarray:
    """int32[len(users), L] every item each dense user interacted with (train + test), -1 padded."""
    ds = self.dataset
    all_users = np.concatenate([ds.train_users, ds.test_users])
    all_items = np.concatenate([ds.train_items, ds.test_items])
    return ranking.padded_item_lists(all_users, all_items, users)

  # --- scoring

  def top_k(self, users: np.ndarray, k: int, timestamp: int | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """(logits f32[U, k], dense items int32[U, k]) of dense `users`, best first.

    Seen items are excluded; slots beyond the eligible items have logit -inf. `timestamp`
    (unix seconds) is the context of a context model (default: now).
    """
    n = self.mesh.devices.size
    count = len(users)
    padded = np.pad(users, (0, -count % n))
    rows = padded if self.user_rows is None else self.user_rows[padded]
    excluded = self.seen_items(padded)
    k = min(k, self.dataset.num_items)
    if self.config.model.name == "two_tower":
      ts = None
      if self.config.model.use_context:
        ts = np.full(len(padded), int(time.time() if timestamp is None else timestamp), np.int32)
      scores, items = self._two_tower_top_k(rows, padded, excluded, k, ts)
    else:
      scores, items = self._blockwise_top_k(rows, excluded, k)
    return np.asarray(scores)[:count], np.asarray(items)[:count]

  def _two_tower_top_k(self, rows, dense, excluded, k, ts):
    del dense  # side features are gathered by the (dense == row) user id
    model, mesh, num_items = self.model, self.mesh, self.dataset.num_items

    @jax.jit
    def run(state, side, users, excluded, ts):
      u = two_tower.encode_users(model, state, side, users, mesh, ts)
      u = jax.lax.with_sharding_constraint(u, sharding.replicated(mesh))
      v = self._item_vectors(state, side)
      dots, items = ranking.sharded_top_k(u, v, excluded, num_items, k, mesh)
      return model.module(state.params).logits(dots), items

    return run(self.state, self.side, jnp.asarray(rows), jnp.asarray(excluded),
               None if ts is None else jnp.asarray(ts))

  def _item_vectors(self, state, side) -> jax.Array:
    """f32[I_pad, D] every item's vector, rows split over the devices like a table."""
    n = self.mesh.devices.size
    padded = -(-self.dataset.num_items // n) * n
    items = jnp.minimum(jnp.arange(padded, dtype=jnp.int32), self.dataset.num_items - 1)
    items = jax.lax.with_sharding_constraint(items, sharding.batch_sharding(self.mesh))
    v = two_tower.encode_items(self.model, state, side, items, self.mesh)
    return jax.lax.with_sharding_constraint(v, sharding.table_sharding(self.mesh))

  def _blockwise_top_k(self, rows, excluded, k):
    block = train.make_block_score_fn(self.config, self.model, self.mesh)
    num_items, item_block = self.dataset.num_items, self.config.eval.item_block
    devices = self.mesh.devices.size

    @jax.jit
    def run(state, side, users, excluded):
      return ranking.top_k_in_blocks(block, (state, side), users, excluded, num_items, k,
                                     item_block, devices)

    return run(self.state, self.side, jnp.asarray(rows), jnp.asarray(excluded))

  def recommend(self, original_users: Sequence[Any], k: int = 10,
                timestamp: int | None = None) -> list[Recommendation]:
    """Top-k unseen items of each original user id, as original item ids (best first)."""
    dense = self.dense_users(original_users)
    untrained = np.bincount(self.dataset.train_users, minlength=self.dataset.num_users)[dense] == 0
    for raw in np.asarray(original_users, dtype=object)[untrained]:
      logging.warning("User %r has no training rows: its recommendations come from an "
                      "untrained embedding (side features only, if any).", raw)
    scores, items = self.top_k(dense, k, timestamp)
    titles = self.dataset.item_titles
    out = []
    for raw, s, i in zip(original_users, scores, items, strict=True):
      keep = np.isfinite(s)  # fewer eligible items than k
      s, i = s[keep], i[keep]
      out.append(Recommendation(
        user=_plain(self.dataset.user_ids[self.dense_users([raw])[0]]),
        items=[_plain(x) for x in self.dataset.item_ids[i]],
        scores=[float(x) for x in s],
        titles=None if titles is None else [str(titles[x]) for x in i],
      ))
    return out

  # --- export

  def export(self, path: str) -> dict:
    """Writes user/item embeddings and id maps to folder `path`; returns export.json's content."""
    name = self.config.model.name
    if name not in DOT_PRODUCT_MODELS:
      raise RecommendError(
        f"--export needs a dot-product model ({', '.join(DOT_PRODUCT_MODELS)}); "
        f"model.name={name!r} scores (user, item) pairs with an MLP, so its embeddings cannot "
        "be searched by inner product."
      )
    if self.user_rows is not None:
      raise RecommendError("--export writes one row per user; this model hashes user ids "
                       "(embedding.user_hash_buckets > 0): set it to 0 to export.")
    os.makedirs(path, exist_ok=True)
    ds = self.dataset
    meta: dict = {"model": name, "num_users": ds.num_users, "num_items": ds.num_items}
    if name == "two_tower":
      users, items, context, scale, bias = self._two_tower_embeddings()
      meta.update(
        score="logit = scale * dot(user_embeddings[u] (+ context_embeddings[c]), "
              "item_embeddings[i]) + bias",
        scale=scale, bias=bias, context=context is not None,
      )
      if context is not None:
        meta["context_index"] = "c = 24 * day_of_week + hour_of_day (UTC, Monday = 0)"
        np.save(os.path.join(path, "context_embeddings.npy"), context)
    else:  # mf: [p_u, 1] . [q_i, b_i] = p_u . q_i + b_i; user and global biases do not rank
      t = {k: np.asarray(jax.device_get(v)) for k, v in self.state.tables.items()}
      users = np.concatenate([t["user_mf"][: ds.num_users], np.ones((ds.num_users, 1))], 1)
      items = np.concatenate([t["item_mf"][: ds.num_items], t["item_bias"][: ds.num_items]], 1)
      meta.update(score="dot(user_embeddings[u], item_embeddings[i]) ranks as the model does "
                        "(the user and global biases, constant per user, are left out)")
    np.save(os.path.join(path, "user_embeddings.npy"), users.astype(np.float32))
    np.save(os.path.join(path, "item_embeddings.npy"), items.astype(np.float32))
    np.save(os.path.join(path, "user_ids.npy"), _saveable(ds.user_ids))
    np.save(os.path.join(path, "item_ids.npy"), _saveable(ds.item_ids))
    if ds.item_titles is not None:
      np.save(os.path.join(path, "item_titles.npy"), np.asarray(ds.item_titles, dtype=str))
    meta["dim"] = int(users.shape[1])
    with open(os.path.join(path, "export.json"), "w") as f:
      json.dump(meta, f, indent=2)
    return meta

  def _two_tower_embeddings(self):
    n, ds, model, mesh = self.mesh.devices.size, self.dataset, self.model, self.mesh
    users = np.pad(np.arange(ds.num_users, dtype=np.int32), (0, -ds.num_users % n))

    @jax.jit
    def run(state, side, users):
      u = two_tower.encode_users(model, state, side, users, mesh, with_context=False)
      v = self._item_vectors(state, side)
      module = model.module(state.params)
      c = module.context_vectors(jnp.arange(two_tower.NUM_CONTEXTS)) if module.use_context \
        else None
      return u, v, c, module.scale(), module.logits(jnp.zeros(()))

    u, v, c, scale, bias = jax.device_get(run(self.state, self.side, jnp.asarray(users)))
    c = None if c is None else np.asarray(c, np.float32)
    return (np.asarray(u)[: ds.num_users], np.asarray(v)[: ds.num_items], c, float(scale),
            float(bias))


def _saveable(ids: np.ndarray) -> np.ndarray:
  """Original ids as a numpy array np.load reads without pickle (strings as unicode)."""
  ids = np.asarray(ids)
  return ids.astype(str) if ids.dtype == object else ids


def restore_latest(workdir: str, config: ml_collections.ConfigDict, fresh):
  """The latest checkpoint of `workdir`, restored into `fresh`'s shapes and shardings."""
  folder = checkpoint.checkpoint_dir(workdir)
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"No checkpoints in {folder}: train with checkpoint.every_epochs "
                            "> 0 first.")
  ckpt = checkpoint.Checkpointer(workdir, config.checkpoint)
  try:
    if ckpt.latest_step() is None:
      raise FileNotFoundError(f"No finished checkpoint in {folder}: let training save one.")
    return ckpt.restore(checkpoint.abstract_like(fresh))
  finally:
    ckpt.close()


# ---------------------------------------------------------------------------- command line

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir (config.json + checkpoints).")
flags.DEFINE_list("users", [], "Original user ids, comma-separated.")
flags.DEFINE_integer("k", 10, "Items per user.")
flags.DEFINE_enum("format", "text", ["text", "json"], "text, or one JSON object per line.")
flags.DEFINE_string("export", None, "Folder to write user/item embeddings and id maps to.")
flags.DEFINE_integer("timestamp", None, "Unix seconds of the query (context models); default now.")


def format_text(rec: Recommendation) -> str:
  lines = [f"user {rec.user}: {len(rec.items)} items"]
  for rank, (item, score) in enumerate(zip(rec.items, rec.scores, strict=True)):
    title = f"  {rec.titles[rank]}" if rec.titles and rec.titles[rank] else ""
    lines.append(f"  {rank + 1:3d}. item {item}  score {score:.4f}{title}")
  return "\n".join(lines)


class _QuietLibraries(logging.logging.Filter):
  """Drops INFO chatter of orbax and tfds (as ncf_jax.main does): stdout is the answer."""

  def filter(self, record) -> bool:
    noisy = "/orbax/" in record.pathname or "/tensorflow_datasets/" in record.pathname
    return record.levelno >= logging.logging.WARNING or not noisy


def run(workdir: str, users: Sequence[str], k: int = 10, fmt: str = "text",
        export: str | None = None, timestamp: int | None = None) -> None:
  """What the command line does: print top-k of `users` and/or export; errors exit(1)."""
  try:
    rec = Recommender(workdir)
    if users:
      for r in rec.recommend(users, k, timestamp):
        print(r.to_json() if fmt == "json" else format_text(r), flush=True)
    if export:
      meta = rec.export(export)
      logging.info("Exported %d users and %d items (dim %d) to %s.", meta["num_users"],
                   meta["num_items"], meta["dim"], export)
  except (RecommendError, FileNotFoundError) as e:
    sys.exit(f"recommend: error: {e}")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.get_absl_logger().addFilter(_QuietLibraries())
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required.")
  if not FLAGS.users and not FLAGS.export:
    raise app.UsageError("Give --users=ID,ID,... and/or --export=PATH.")
  if FLAGS.k < 1:
    raise app.UsageError(f"--k={FLAGS.k}: must be >= 1.")
  run(FLAGS.workdir, FLAGS.users, FLAGS.k, FLAGS.format, FLAGS.export, FLAGS.timestamp)


if __name__ == "__main__":
  app.run(main)
