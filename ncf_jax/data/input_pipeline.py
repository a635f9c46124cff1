"""Loads a prepared interaction dataset into numpy: `load_dataset(config.data) -> Dataset`.

`load_dataset` handles `data.name` 'movielens' and 'ncf'; the caller dispatches
'synthetic' (generated on the device) elsewhere. The first call prepares the data with
a TFDS builder (`builders.py`) into `data.cache_dir`, in a folder named after a
fingerprint of the source files (absolute path, size, mtime) and of every parameter
that changes the result (variant, files, test negatives, seed, builder version); later
calls with the same fingerprint reuse it. TFDS writes into a temporary folder and renames
it when complete, so a failed or killed preparation never leaves a dataset that looks
ready; we also remove the empty folders a failure leaves behind.

Reading: both splits are read once, in bulk, through `builder.as_data_source()` (raw
records decoded here field by field, ~2x faster than TFDS's generic per-example
decoding, which matters for ML-20M's 138k users); id maps and side features come from
the builder's metadata.
"""

import dataclasses
import hashlib
import json
import os
import time

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from tensorflow_datasets.proto import tf_example_pb2

from ncf_jax.data import builders, parsing
from ncf_jax.data.dataset import Dataset
from ncf_jax.data.parsing import DataError

DEFAULT_CACHE_DIR = "~/.cache/ncf_jax/tfds"
_READ_CHUNK = 65536  # records per bulk read: bounds the memory of raw bytes in flight


def load_dataset(data_config: ml_collections.ConfigDict) -> Dataset:
  """Prepares (once, cached) and loads the dataset `data_config` names.

  Args:
    data_config: `config.data` with name 'movielens' or 'ncf' (see configs/default.py).
  Returns:
    A Dataset with dense ids: train arrays int32/int32/int64[N] sorted by user and time,
    one test row per evaluated user with int32[U, M] negatives, id maps, side features.
    For 'ncf', test users without any training row are left out (and counted in the log).
  Raises:
    DataError: missing or malformed input (the message names the file and line).
    ValueError: an unknown `data.name` or `data.variant`.
  """
  builder = make_builder(data_config)
  prepare(builder, download_dir=os.path.join(cache_root(data_config), "downloads"))
  t0 = time.time()
  ds = read_dataset(builder)
  if data_config.name == "ncf":
    ds = drop_untrained_test_users(ds)
  logging.info(
    "Loaded %s in %.1fs: %d users, %d items, %d train rows, %d test users x %d negatives",
    ds.name,
    time.time() - t0,
    ds.num_users,
    ds.num_items,
    ds.num_train,
    ds.num_test,
    ds.test_negatives.shape[1],
  )
  return ds


def cache_root(data_config: ml_collections.ConfigDict) -> str:
  """The folder that holds prepared datasets: `data.cache_dir` or ~/.cache/ncf_jax/tfds."""
  return os.path.abspath(os.path.expanduser(data_config.cache_dir or DEFAULT_CACHE_DIR))


def make_builder(data_config: ml_collections.ConfigDict) -> tfds.core.GeneratorBasedBuilder:
  """The TFDS builder for `data_config`, rooted in its fingerprinted cache folder.

  Resolves (and checks the existence of) every source file; does not prepare.
  """
  if data_config.name == "movielens":
    params = _movielens_params(data_config)
    cls, tag = builders.MovieLens, data_config.variant
  elif data_config.name == "ncf":
    params = _ncf_params(data_config)
    cls, tag = builders.NcfFiles, data_config.ncf_prefix or "files"
  else:
    raise ValueError(
      f"data.name={data_config.name!r}: load_dataset handles 'movielens' and 'ncf' "
      "('synthetic' is generated on the device by the caller)."
    )
  key = json.dumps(
    dict(builder=cls.name, version=str(cls.VERSION), params=params.fingerprint()),
    sort_keys=True,
  )
  digest = hashlib.sha256(key.encode()).hexdigest()[:16]
  tag = "".join(c if c.isalnum() or c in "-_." else "_" for c in tag)
  data_dir = os.path.join(cache_root(data_config), f"{cls.name}-{tag}-{digest}")
  return cls(params=params, data_dir=data_dir, file_format="array_record")


def is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
  """True when the builder's dataset is complete on disk (TFDS writes this file last)."""
  return (builder.data_path / "dataset_info.json").exists()


def prepare(builder: tfds.core.DatasetBuilder, download_dir: str | None = None) -> bool:
  """Prepares the builder's dataset unless it is already prepared; True if it prepared."""
  if is_prepared(builder):
    logging.info("Reusing prepared dataset %s", builder.data_path)
    return False
  logging.info("Preparing %s into %s", builder.name, builder.data_path)
  t0 = time.time()
  try:
    builder.download_and_prepare(file_format="array_record", download_dir=download_dir)
  except BaseException:
    if is_prepared(builder):  # another process prepared the same fingerprint first
      logging.info("Dataset %s was prepared concurrently; reusing it", builder.data_path)
      builder.info.read_from_directory(builder.data_path)
      return False
    # TFDS already removed its temporary folder; drop the empty parents it leaves.
    _remove_empty_dirs(os.path.dirname(os.path.dirname(os.fspath(builder.data_path))))
    raise
  logging.info("Prepared %s in %.1fs", builder.data_path, time.time() - t0)
  return True


def _remove_empty_dirs(root: str) -> None:
  for folder, _, _ in sorted(os.walk(root), key=lambda w: -len(w[0])):
    try:
      os.rmdir(folder)  # only succeeds when empty
    except OSError:
      pass


# ----------------------------------------------------------------------------- config


def _negative_count(data_config: ml_collections.ConfigDict) -> int:
  n = data_config.num_test_negatives
  if not isinstance(n, int) or n < 1:
    raise ValueError(f"data.num_test_negatives={n!r} must be a positive integer.")
  return n


def _movielens_params(data_config: ml_collections.ConfigDict) -> builders.MovieLensParams:
  variant = data_config.variant
  if variant not in builders.MOVIELENS_FILES:
    raise ValueError(
      f"data.variant={variant!r} is not a MovieLens variant; use one of "
      f"{sorted(builders.MOVIELENS_FILES)}."
    )
  common = dict(
    variant=variant,
    num_test_negatives=_negative_count(data_config),
    split_seed=int(data_config.split_seed),
  )
  if not data_config.dir:  # download the official archive
    return builders.MovieLensParams(**common, ratings_file=data_config.ratings_file)
  files = builders.movielens_files(data_config.dir, variant, data_config.ratings_file)
  return builders.MovieLensParams(**common, **files)


def _ncf_params(data_config: ml_collections.ConfigDict) -> builders.NcfParams:
  root = data_config.dir
  prefix = data_config.ncf_prefix

  def pick(explicit: str, suffix: str, field: str) -> parsing.SourceFile:
    if explicit:
      return parsing.resolve_file(root, explicit, field)
    if not root:
      raise DataError(
        f"`data.dir` is empty and `{field}` is not set: NCF files cannot be downloaded; "
        "set data.dir to their folder (and data.ncf_prefix) or give absolute file paths."
      )
    if not prefix:
      raise DataError(f"`data.ncf_prefix` is empty and `{field}` is not set: set one of them.")
    return parsing.find_file(root, f"{prefix}.{suffix}", field="data.dir")

  users = movies = item_map = None
  side_dir = data_config.get("side_dir", "")
  if side_dir:
    users = parsing.find_file(side_dir, "users.dat", field="data.side_dir", required=False)
    movies = parsing.find_file(side_dir, "movies.dat", field="data.side_dir", required=False)
    if users is None and movies is None:
      raise DataError(
        f"no users.dat or movies.dat in {side_dir} (config field `data.side_dir`): point it "
        "at the ML-1M folder, or set it to '' for no side features."
      )
  if data_config.get("ncf_item_map", ""):
    item_map = parsing.resolve_file(root, data_config.ncf_item_map, "data.ncf_item_map")
    if movies is None:
      raise DataError(
        "`data.ncf_item_map` is set but there is no movies.dat: set `data.side_dir` to the "
        "ML-1M folder that holds it."
      )
  return builders.NcfParams(
    train=pick(data_config.train_file, "train.rating", "data.train_file"),
    test=pick(data_config.test_file, "test.rating", "data.test_file"),
    negatives=pick(data_config.negative_file, "test.negative", "data.negative_file"),
    users=users,
    movies=movies,
    item_map=item_map,
  )


# ----------------------------------------------------------------------------- reading


def _read_split(
  builder: tfds.core.DatasetBuilder, split: str, scalars: tuple[str, ...], arrays: tuple[str, ...]
) -> dict:
  """Columns of a split: int64[R] per scalar field, a list of R arrays per array field."""
  source = builder.as_data_source(split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
  feats = builder.info.features
  dtypes = {k: feats[k].np_dtype for k in arrays}
  n = len(source)
  out: dict = {k: np.empty(n, np.int64) for k in scalars}
  out.update({k: [] for k in arrays})
  parse = tf_example_pb2.Example.FromString
  first = None
  for start in range(0, n, _READ_CHUNK):
    records = source.__getitems__(list(range(start, min(n, start + _READ_CHUNK))))
    first = records[0] if first is None else first
    for j, record in enumerate(records):
      f = parse(record).features.feature
      for k in scalars:
        out[k][start + j] = f[k].int64_list.value[0]
      for k in arrays:  # Encoding.BYTES: one bytes value holding the raw array
        out[k].append(np.frombuffer(f[k].bytes_list.value[0], dtypes[k]))
  if first is not None:
    _check_against_tfds(builder, split, first, {k: v[0] for k, v in out.items()})
  return out


def _check_against_tfds(builder, split: str, record: bytes, fast: dict) -> None:
  """Our decoding of one record must equal TFDS's own (guards against format changes)."""
  ref = builder.info.features.deserialize_example_np(record)
  for k, v in fast.items():
    if not np.array_equal(np.asarray(v), np.asarray(ref[k])):
      raise RuntimeError(
        f"{builder.data_path} split {split!r}: field {k!r} decodes to {v!r} here but "
        f"{ref[k]!r} in TFDS; the fast reader in input_pipeline.py needs updating."
      )


def _concat(arrays: list[np.ndarray], dtype) -> np.ndarray:
  return np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype)


def read_dataset(builder: tfds.core.DatasetBuilder) -> Dataset:
  """Reads a prepared builder's splits and metadata into a Dataset (see `load_dataset`)."""
  meta = builder.info.metadata
  needed = ("name", "num_users", "num_items", "users", "items", "user_features", "item_features")
  if any(k not in meta for k in needed) or set(builder.info.splits) != {"train", "test"}:
    raise DataError(
      f"{builder.data_path} was not written by this version of builders.py; delete it "
      "and load again (it will be prepared anew)."
    )
  num_users, num_items = int(meta["num_users"]), int(meta["num_items"])

  train = _read_split(builder, "train", ("user",), ("items", "timestamps"))
  order = np.argsort(train["user"], kind="stable")
  lengths = np.array([len(train["items"][i]) for i in order], np.int64)
  train_users = np.repeat(train["user"][order], lengths).astype(np.int32)
  train_items = _concat([train["items"][i] for i in order], np.int32)
  train_timestamps = _concat([train["timestamps"][i] for i in order], np.int64)

  test = _read_split(builder, "test", ("user", "item", "timestamp"), ("negatives",))
  order = np.argsort(test["user"], kind="stable")
  widths = {len(n) for n in test["negatives"]}
  if len(widths) > 1:
    raise DataError(
      f"{builder.data_path}: test rows have different negative counts {sorted(widths)}; "
      "the cache is corrupt: delete it (data.cache_dir) and load again."
    )
  negatives = np.stack([test["negatives"][i] for i in order]).astype(np.int32, copy=False)

  users, items = meta["users"], meta["items"]
  user_sizes = {k: int(v) for k, v in meta["user_features"].items()}
  item_sizes = {k: int(v) for k, v in meta["item_features"].items()}
  user_features = {k: np.array(users[k], np.int32) for k in user_sizes}
  item_features = {}
  if "year" in item_sizes:
    item_features["year"] = np.array(items["year"], np.int32)
  if "genres" in item_sizes:
    bags = np.zeros((num_items, item_sizes["genres"]), np.int32)  # int32[I, G] multi-hot
    counts = np.array([len(g) for g in items["genres"]], np.int64)
    flat = np.array([j for g in items["genres"] for j in g], np.int64)
    bags[np.repeat(np.arange(num_items), counts), flat] = 1
    item_features["genres"] = bags
  return Dataset(
    train_users=train_users,
    train_items=train_items,
    train_timestamps=train_timestamps,
    test_users=test["user"][order].astype(np.int32),
    test_items=test["item"][order].astype(np.int32),
    test_negatives=negatives,
    num_users=num_users,
    num_items=num_items,
    user_ids=np.array(users["original_id"], np.int64),
    item_ids=np.array(items["original_id"], np.int64),
    item_titles=np.array(items["title"], dtype=object) if "title" in items else None,
    user_features=user_features,
    item_features=item_features,
    user_feature_sizes=user_sizes,
    item_feature_sizes=item_sizes,
    test_timestamps=test["timestamp"][order],
    name=str(meta["name"]),
  )


def drop_untrained_test_users(ds: Dataset) -> Dataset:
  """Leaves test users without any training row out of evaluation, and logs how many.

  (The NCF ML-1M files here hold training rows for users 0..2998 only.)
  """
  has_train = np.bincount(ds.train_users, minlength=ds.num_users) > 0
  keep = has_train[ds.test_users]
  if keep.all():
    return ds
  dropped = ds.test_users[~keep]
  logging.warning(
    "%s: %d of %d test users have no training rows and are left out of evaluation "
    "(user ids %d..%d); %d test users remain.",
    ds.name,
    len(dropped),
    len(keep),
    dropped.min(),
    dropped.max(),
    int(keep.sum()),
  )
  return dataclasses.replace(
    ds,
    test_users=ds.test_users[keep],
    test_items=ds.test_items[keep],
    test_negatives=ds.test_negatives[keep],
    test_timestamps=None if ds.test_timestamps is None else ds.test_timestamps[keep],
  )
