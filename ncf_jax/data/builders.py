"""TFDS builders that prepare interaction data for NCF: MovieLens archives and NCF-paper files.

Both write `array_record` files (readable without TensorFlow through
`builder.as_data_source()`) with two splits, one example per user:

  split   one example per       fields it fills
  ------  --------------------  ---------------------------------------------------
  train   user with train rows  user, items int32[n], timestamps int64[n] (time order)
  test    evaluated user        user, item, timestamp, negatives int32[M]

TFDS gives all splits one feature set, so a field a split does not use holds -1, 0 or
an empty array. Ids are dense: users 0..U-1, items 0..I-1. The id maps and side
features live in `info.metadata` (written to metadata.json beside the splits):

  metadata['users'] = {'original_id': [U], 'gender': [U], 'age': [U], 'occupation': [U]}
  metadata['items'] = {'original_id': [I], 'title': [I], 'year': [I], 'genres': [I][k]}

with only the features the source has; `metadata['user_features']` and
`metadata['item_features']` give each feature's number of categories (for `genres`, the
genre count G: each item lists its genre indices, a multi-hot bag of size G), and
`*_names` / `*_buckets` name the categories.

Examples are one per user, not one per rating: TFDS writes ~25k examples/s here, so
per-rating examples would take 13 minutes for ML-20M. The arrays are stored as raw
bytes (TFDS `Encoding.BYTES`), 2x faster to write and read than int64 lists.
"""

import dataclasses
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from ncf_jax.data import parsing
from ncf_jax.data.parsing import DataError, SourceFile

MOVIELENS_URL = "https://files.grouplens.org/datasets/movielens/ml-{variant}.zip"
_MOVIELENS_CITATION = """@article{harper2015movielens,
  title={The MovieLens Datasets: History and Context},
  author={Harper, F. Maxwell and Konstan, Joseph A.},
  journal={ACM Transactions on Interactive Intelligent Systems}, volume={5}, number={4},
  pages={19:1--19:19}, year={2015}, doi={10.1145/2827872}}"""
_NCF_CITATION = """@inproceedings{he2017neural,
  title={Neural Collaborative Filtering}, author={He, Xiangnan and Liao, Lizi and Zhang,
  Hanwang and Nie, Liqiang and Hu, Xia and Chua, Tat-Seng}, booktitle={WWW}, year={2017}}"""

# Raw file names of each MovieLens variant (a role it lacks: the variant has no such file).
MOVIELENS_FILES = {
  "latest-small": dict(ratings="ratings.csv", movies="movies.csv"),
  "100k": dict(
    ratings="u.data", movies="u.item", users="u.user", genres="u.genre", occupations="u.occupation"
  ),
  "1m": dict(ratings="ratings.dat", movies="movies.dat", users="users.dat"),
  "20m": dict(ratings="ratings.csv", movies="movies.csv"),
  "25m": dict(ratings="ratings.csv", movies="movies.csv"),
}

# Age buckets of the ML-1M README; ML-100K ages in years fall into the same buckets.
AGE_EDGES = (18, 25, 35, 45, 50, 56)
AGE_BUCKETS = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
# Release-year buckets by decade; bucket 0 is 'unknown' (no year in the title/date).
YEAR_EDGES = (1930, 1940, 1950, 1960, 1970, 1980, 1990, 2000, 2010, 2020)
YEAR_BUCKETS = ("unknown", "<1930") + tuple(f"{y}s" for y in YEAR_EDGES[:-1]) + ("2020+",)

TEST_RULE = (
  "each user's latest interaction (largest timestamp; among equal timestamps the later "
  "line of the ratings file) is the test item; users with one interaction are train-only"
)


def age_bucket(ages: np.ndarray) -> np.ndarray:
  """int32[U] bucket 0..6 of AGE_BUCKETS for ML-1M age codes or ages in years."""
  return np.searchsorted(np.array(AGE_EDGES), ages, side="right").astype(np.int32)


def year_bucket(years: np.ndarray) -> np.ndarray:
  """int32[I] bucket of YEAR_BUCKETS; years <= 0 (unknown) give bucket 0."""
  b = 1 + np.searchsorted(np.array(YEAR_EDGES), years, side="right")
  return np.where(years > 0, b, 0).astype(np.int32)


# ----------------------------------------------------------------------------- tables


@dataclasses.dataclass
class Tables:
  """A prepared dataset in dense ids, before it is written as examples."""

  user_ids: np.ndarray  # int64[U] original id of each dense user
  item_ids: np.ndarray  # int64[I] original id of each dense item
  train_users: np.ndarray  # int32[N], sorted by user
  train_items: np.ndarray  # int32[N]
  train_timestamps: np.ndarray  # int64[N]
  test_users: np.ndarray  # int32[T], sorted
  test_items: np.ndarray  # int32[T]
  test_timestamps: np.ndarray  # int64[T]
  test_negatives: np.ndarray  # int32[T, M]
  metadata: dict = dataclasses.field(default_factory=dict)  # JSON-able, see module doc


@dataclasses.dataclass(frozen=True)
class LeaveOneOut:
  """Interactions in dense ids split into train rows and one test row per user."""

  user_ids: np.ndarray  # int64[U] sorted original user ids
  item_ids: np.ndarray  # int64[I] sorted original item ids
  train_users: np.ndarray  # int32[N] sorted by (user, timestamp, line)
  train_items: np.ndarray  # int32[N]
  train_timestamps: np.ndarray  # int64[N]
  test_users: np.ndarray  # int32[T] sorted
  test_items: np.ndarray  # int32[T]
  test_timestamps: np.ndarray  # int64[T]
  seen_keys: np.ndarray  # int64[K] sorted unique user * I + item of every interaction
  num_duplicates: int  # repeated (user, item) rows dropped (the latest one is kept)


def leave_one_out(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray) -> LeaveOneOut:
  """Dense ids in sorted original-id order, and the leave-one-out split (see TEST_RULE).

  Args: users, items, timestamps: int64[N] in file order.
  A (user, item) pair rated twice keeps only its latest row, so a test item is never
  also a training item.
  """
  user_ids, u = np.unique(users, return_inverse=True)
  item_ids, i = np.unique(items, return_inverse=True)
  num_items = len(item_ids)
  u = u.astype(np.int64)
  i = i.astype(np.int64)
  # Sort by (user, timestamp); a stable sort keeps file order among equal timestamps,
  # so the later line comes last and wins the tie.
  span = int(timestamps.max() - timestamps.min()) if len(timestamps) else 0
  if span < 2**32 and len(user_ids) < 2**31:
    order = np.argsort((u << 32) | (timestamps - timestamps.min()), kind="stable")
  else:
    order = np.argsort(timestamps, kind="stable")
    order = order[np.argsort(u[order], kind="stable")]
  u, i, t = u[order], i[order], timestamps[order]
  # Keep the last (latest) row of each (user, item): first occurrence in reverse order.
  keys = u * num_items + i
  seen_keys, first_rev = np.unique(keys[::-1], return_index=True)
  keep = np.zeros(len(keys), bool)
  keep[len(keys) - 1 - first_rev] = True
  num_duplicates = int(len(keys) - keep.sum())
  if num_duplicates:
    u, i, t = u[keep], i[keep], t[keep]
  counts = np.bincount(u, minlength=len(user_ids))
  last = np.cumsum(counts) - 1
  test_rows = last[counts >= 2]
  is_test = np.zeros(len(u), bool)
  is_test[test_rows] = True
  return LeaveOneOut(
    user_ids=user_ids,
    item_ids=item_ids,
    train_users=u[~is_test].astype(np.int32),
    train_items=i[~is_test].astype(np.int32),
    train_timestamps=t[~is_test],
    test_users=u[test_rows].astype(np.int32),
    test_items=i[test_rows].astype(np.int32),
    test_timestamps=t[test_rows],
    seen_keys=seen_keys,
    num_duplicates=num_duplicates,
  )


def sample_test_negatives(
  test_users: np.ndarray,
  seen_keys: np.ndarray,
  num_items: int,
  num_negatives: int,
  seed: int,
  user_ids: np.ndarray | None = None,
) -> np.ndarray:
  """Samples each test user's negatives uniformly without replacement.

  Args:
    test_users: int32[T] dense users, in the order rows are returned.
    seen_keys: int64[K] sorted `user * num_items + item` of every interaction (train and
      test), so neither a training item nor the test item is ever drawn.
    num_items, num_negatives: I and M.
    seed: the same inputs and seed give the same negatives.
    user_ids: original ids, for error messages.
  Returns:
    int32[T, M]; row order is the (random) draw order.
  """
  rng = np.random.default_rng(seed)
  out = np.empty((len(test_users), num_negatives), np.int32)
  starts = np.searchsorted(seen_keys, test_users.astype(np.int64) * num_items)
  ends = np.searchsorted(seen_keys, (test_users.astype(np.int64) + 1) * num_items)
  # Scratch tables of size I, reset after each user: O(#seen + #draws) per user, no sorts.
  blocked = np.zeros(num_items, bool)
  first_at = np.zeros(num_items, np.int64)
  for r, u in enumerate(test_users):
    seen = seen_keys[starts[r] : ends[r]] - int(u) * num_items  # items of user u
    free = num_items - len(seen)
    if free < num_negatives:
      uid = user_ids[u] if user_ids is not None else u
      raise DataError(
        f"user {uid} has interacted with {len(seen)} of {num_items} items, so "
        f"{num_negatives} test negatives cannot be drawn from the rest: lower "
        "data.num_test_negatives."
      )
    if free < 4 * num_negatives:
      # Few items left: choose from the explicit complement.
      rest = np.setdiff1d(np.arange(num_items), seen, assume_unique=True)
      out[r] = rng.choice(rest, num_negatives, replace=False)
      continue
    # Rejection sampling: the first M distinct unseen items of an i.i.d. uniform stream
    # are a uniform M-subset of the unseen items.
    blocked[seen] = True
    k = int(1.5 * num_negatives * num_items / free) + 16
    while True:
      cand = rng.integers(0, num_items, size=k)
      cand = cand[~blocked[cand]]
      # Keep each value's first draw (ufunc.at is defined for repeated indices).
      pos = np.arange(len(cand))
      first_at[cand] = len(cand)
      np.minimum.at(first_at, cand, pos)
      cand = cand[first_at[cand] == pos]
      if len(cand) >= num_negatives:
        out[r] = cand[:num_negatives]
        break
      k *= 2
    blocked[seen] = False
  return out


def _group_starts(sorted_users: np.ndarray, num_users: int) -> np.ndarray:
  """int64[U+1] offsets of each user's rows in an array sorted by user."""
  return np.concatenate([[0], np.cumsum(np.bincount(sorted_users, minlength=num_users))])


def add_user_features(tables: Tables, users: parsing.Users, wanted: np.ndarray, what: str):
  """Puts gender/age/occupation of the original user ids `wanted` (int64[U]) in metadata."""
  order = np.argsort(users.ids)
  pos = np.minimum(np.searchsorted(users.ids[order], wanted), len(order) - 1)
  found = users.ids[order][pos] == wanted
  if not found.all():
    missing = wanted[~found]
    raise DataError(
      f"{len(missing)} {what} have no row in {users.source.name} (first: user "
      f"{missing[0]}); use the users file that belongs to these ratings."
    )
  row = order[pos]
  meta = tables.metadata
  meta.setdefault("users", {}).update(
    gender=users.genders[row].tolist(),
    age=age_bucket(users.ages[row]).tolist(),
    occupation=users.occupations[row].tolist(),
  )
  meta["user_features"] = {
    "gender": 2,
    "age": len(AGE_BUCKETS),
    "occupation": len(users.occupation_names),
  }
  meta["gender_names"] = ["F", "M"]
  meta["age_buckets"] = list(AGE_BUCKETS)
  meta["occupation_names"] = list(users.occupation_names)


def add_item_features(tables: Tables, movies: parsing.Movies, movie_ids: np.ndarray) -> int:
  """Puts title, year bucket and genres of `movie_ids` (int64[I], -1: unmapped) in metadata.

  Items missing from the movie file get title '', year bucket 0 ('unknown') and no
  genres. Returns how many there were.
  """
  index = {m: j for j, m in enumerate(movies.ids.tolist())}
  rows = [index.get(m, -1) for m in movie_ids.tolist()]
  years = np.array([movies.years[r] if r >= 0 else 0 for r in rows], np.int32)
  meta = tables.metadata
  meta.setdefault("items", {}).update(
    title=[movies.titles[r] if r >= 0 else "" for r in rows],
    year=year_bucket(years).tolist(),
    genres=[movies.genres[r] if r >= 0 else [] for r in rows],
  )
  meta["item_features"] = {"genres": len(movies.genre_names), "year": len(YEAR_BUCKETS)}
  meta["genre_names"] = list(movies.genre_names)
  meta["year_buckets"] = list(YEAR_BUCKETS)
  return sum(r < 0 for r in rows)


# ----------------------------------------------------------------------------- builders

_DEFAULTS = dict(
  user=-1,
  item=-1,
  timestamp=0,
  items=np.zeros(0, np.int32),
  timestamps=np.zeros(0, np.int64),
  negatives=np.zeros(0, np.int32),
)


def features() -> tfds.features.FeaturesDict:
  """The feature set shared by both splits (see the module docstring)."""

  def array(dtype) -> tfds.features.Tensor:
    return tfds.features.Tensor(shape=(None,), dtype=dtype, encoding=tfds.features.Encoding.BYTES)

  return tfds.features.FeaturesDict(
    {
      "user": np.int32,  # dense user id
      "items": array(np.int32),  # train: the user's items, oldest first
      "timestamps": array(np.int64),  # train: their timestamps
      "item": np.int32,  # test: the held-out positive
      "timestamp": np.int64,  # test: its timestamp
      "negatives": array(np.int32),  # test: the user's test negatives
    }
  )


class _InteractionBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared schema and example writing; subclasses implement `_tables`."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "One example per user; id maps and side features in metadata."}
  _DESCRIPTION = ""
  _HOMEPAGE = ""
  _CITATION = ""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS's own lookup imports the `importlib_resources` backport, which this project
    # does not install; the answer (this file) is the same.
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=self._DESCRIPTION,
      features=features(),
      homepage=self._HOMEPAGE,
      citation=self._CITATION,
      metadata=tfds.core.MetadataDict(),
      # Examples are keyed by dense id and written in key order: no shuffle buckets.
      disable_shuffling=True,
    )

  def _tables(self, dl_manager: tfds.download.DownloadManager) -> Tables:
    raise NotImplementedError

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    # Everything is parsed and validated here, before any split is written, so bad
    # input fails fast; TFDS then writes into a temporary folder that is renamed only
    # when all splits are complete.
    tables = self._tables(dl_manager)
    meta = tables.metadata
    meta.setdefault("user_features", {})
    meta.setdefault("item_features", {})
    meta.setdefault("users", {})
    meta.setdefault("items", {})
    meta["users"]["original_id"] = tables.user_ids.tolist()
    meta["items"]["original_id"] = tables.item_ids.tolist()
    meta["num_users"] = len(tables.user_ids)
    meta["num_items"] = len(tables.item_ids)
    meta["num_test_negatives"] = int(tables.test_negatives.shape[1])
    self.info.metadata.update(meta)
    return {
      "train": self._generate_examples(tables, "train"),
      "test": self._generate_examples(tables, "test"),
    }

  def _generate_examples(self, tables: Tables, split: str) -> Iterator[tuple[int, dict]]:
    if split == "train":
      starts = _group_starts(tables.train_users, len(tables.user_ids))
      for u in np.flatnonzero(np.diff(starts)):
        a, b = starts[u], starts[u + 1]
        yield (
          int(u),
          dict(
            _DEFAULTS,
            user=u,
            items=tables.train_items[a:b],
            timestamps=tables.train_timestamps[a:b],
          ),
        )
    else:
      for r, u in enumerate(tables.test_users):
        yield (
          int(u),
          dict(
            _DEFAULTS,
            user=u,
            item=tables.test_items[r],
            timestamp=tables.test_timestamps[r],
            negatives=tables.test_negatives[r],
          ),
        )


@dataclasses.dataclass(frozen=True)
class MovieLensParams:
  """What the MovieLens builder reads and how it splits.

  ratings/movies/users/genres/occupations: local files; ratings=None means "download
  MOVIELENS_URL and read the variant's files from the archive".
  """

  variant: str
  num_test_negatives: int
  split_seed: int
  ratings: SourceFile | None = None
  movies: SourceFile | None = None
  users: SourceFile | None = None
  genres: SourceFile | None = None
  occupations: SourceFile | None = None
  ratings_file: str = ""  # download mode: the ratings member to read ('' = variant's default)

  def fingerprint(self) -> dict:
    """Everything that changes the prepared data, as JSON-able values."""
    files = {
      k: getattr(self, k).fingerprint() if getattr(self, k) else None
      for k in ("ratings", "movies", "users", "genres", "occupations")
    }
    if self.ratings is None:
      files["url"] = MOVIELENS_URL.format(variant=self.variant)
    return dict(
      variant=self.variant,
      num_test_negatives=self.num_test_negatives,
      split_seed=self.split_seed,
      ratings_file=self.ratings_file,
      files=files,
    )


def movielens_files(
  root: str, variant: str, ratings_file: str = ""
) -> dict[str, SourceFile | None]:
  """Locates a variant's raw files in the folder or .zip `root` (config field `data.dir`).

  Files are looked for in `root` and in `root/ml-<variant>/` (see `parsing.find_file`).
  The ratings file is required (`ratings_file` overrides its name: relative to root, or
  absolute); the side files are optional and None when absent.
  """
  names = MOVIELENS_FILES[variant]
  if ratings_file:
    ratings = parsing.resolve_file(root, ratings_file, "data.ratings_file")
  else:
    ratings = parsing.find_file(root, names["ratings"], subdir=f"ml-{variant}")
  out = {"ratings": ratings}
  for role in ("movies", "users", "genres", "occupations"):
    name = names.get(role)
    found = name and parsing.find_file(root, name, subdir=f"ml-{variant}", required=False)
    out[role] = found or None
  return out


class MovieLens(_InteractionBuilder, skip_registration=True):
  """MovieLens ratings with the project's own leave-one-out split and sampled negatives."""

  name = "movielens"
  _DESCRIPTION = (
    "MovieLens ratings as implicit feedback. " + TEST_RULE + ". Test negatives are drawn "
    "uniformly without replacement from the items the user never interacted with."
  )
  _HOMEPAGE = "https://grouplens.org/datasets/movielens/"
  _CITATION = _MOVIELENS_CITATION

  def __init__(self, *, params: MovieLensParams, **kwargs):
    if params.variant not in MOVIELENS_FILES:
      raise ValueError(
        f"data.variant={params.variant!r} is not a MovieLens variant; use one of "
        f"{sorted(MOVIELENS_FILES)}."
      )
    self._params = params  # before super(): TFDS builds the info in __init__
    super().__init__(**kwargs)

  def _tables(self, dl_manager: tfds.download.DownloadManager) -> Tables:
    p = self._params
    files = dict(ratings=p.ratings, movies=p.movies, users=p.users, genres=p.genres)
    files["occupations"] = p.occupations
    if p.ratings is None:
      url = MOVIELENS_URL.format(variant=p.variant)
      logging.info("Downloading %s", url)
      archive = str(dl_manager.download(url))
      files = movielens_files(archive, p.variant, p.ratings_file)
    ratings = parsing.read_ratings(files["ratings"])
    logging.info("Read %d ratings from %s", len(ratings.users), files["ratings"].name)
    # Side files are small: read (and validate) them before the costly split.
    users = movies = None
    if files["users"] is not None:
      users = parsing.read_users(files["users"], files["occupations"])
    if files["movies"] is not None:
      movies = parsing.read_movies(files["movies"], files["genres"])
    loo = leave_one_out(ratings.users, ratings.items, ratings.timestamps)
    if not len(loo.test_users):
      raise DataError(
        f"{files['ratings'].name}: no user has 2 or more interactions, so there is "
        "nothing to evaluate; check the ratings file."
      )
    negatives = sample_test_negatives(
      loo.test_users,
      loo.seen_keys,
      len(loo.item_ids),
      p.num_test_negatives,
      p.split_seed,
      loo.user_ids,
    )
    tables = Tables(
      user_ids=loo.user_ids,
      item_ids=loo.item_ids,
      train_users=loo.train_users,
      train_items=loo.train_items,
      train_timestamps=loo.train_timestamps,
      test_users=loo.test_users,
      test_items=loo.test_items,
      test_timestamps=loo.test_timestamps,
      test_negatives=negatives,
      metadata=dict(
        name=f"movielens-{p.variant}",
        test_rule=TEST_RULE,
        split_seed=p.split_seed,
        duplicates_dropped=loo.num_duplicates,
        sources=[f.name for f in files.values() if f is not None],
      ),
    )
    if loo.num_duplicates:
      logging.warning(
        "%s: %d repeated (user, item) ratings dropped (the latest is kept).",
        files["ratings"].name,
        loo.num_duplicates,
      )
    if users is not None:
      add_user_features(tables, users, loo.user_ids, "users of the ratings")
    if movies is not None:
      missing = add_item_features(tables, movies, loo.item_ids)
      if missing:
        logging.warning(
          "%d rated items are not in %s: no title, year or genres.", missing, files["movies"].name
        )
    return tables


@dataclasses.dataclass(frozen=True)
class NcfParams:
  """The NCF paper's files and optional ML-1M side files (users.dat, movies.dat, item map)."""

  train: SourceFile
  test: SourceFile
  negatives: SourceFile
  users: SourceFile | None = None
  movies: SourceFile | None = None
  item_map: SourceFile | None = None

  def fingerprint(self) -> dict:
    """Everything that changes the prepared data, as JSON-able values."""
    return {
      k: getattr(self, k).fingerprint() if getattr(self, k) else None
      for k in ("train", "test", "negatives", "users", "movies", "item_map")
    }


class NcfFiles(_InteractionBuilder, skip_registration=True):
  """The NCF paper's `*.train.rating`, `*.test.rating` and `*.test.negative`, kept exactly.

  Ids are already dense: num_users / num_items = 1 + the largest id in the three files.
  All test rows are written, including users without training rows (`load_dataset`
  leaves those out of evaluation). NCF user u is ML-1M UserID u + 1; NCF item i is the
  MovieID the item map gives (items it lacks have no title, genres or year).
  """

  name = "ncf_files"
  _DESCRIPTION = "The NCF paper's leave-one-out files with its 99 sampled test negatives."
  _HOMEPAGE = "https://github.com/hexiangnan/neural_collaborative_filtering"
  _CITATION = _NCF_CITATION

  def __init__(self, *, params: NcfParams, **kwargs):
    self._params = params
    super().__init__(**kwargs)

  def _tables(self, dl_manager: tfds.download.DownloadManager) -> Tables:
    del dl_manager  # NCF files are local only
    p = self._params
    train = parsing.read_ratings(p.train)
    test = parsing.read_ratings(p.test)
    for r in (train, test):
      parsing.check_dense_ids(r)
    parsing.check_one_row_per_user(test)
    neg = parsing.read_negatives(p.negatives)
    parsing.check_negatives_match_test(neg, test)
    num_users = 1 + int(max(train.users.max(), test.users.max(), neg.users.max()))
    num_items = 1 + int(
      max(train.items.max(), test.items.max(), neg.items.max(), neg.negatives.max())
    )
    order = np.argsort(train.users, kind="stable")  # keeps file order within a user
    t_order = np.argsort(test.users)
    n_order = np.argsort(neg.users)
    tables = Tables(
      user_ids=np.arange(num_users, dtype=np.int64),
      item_ids=np.arange(num_items, dtype=np.int64),
      train_users=train.users[order].astype(np.int32),
      train_items=train.items[order].astype(np.int32),
      train_timestamps=train.timestamps[order],
      test_users=test.users[t_order].astype(np.int32),
      test_items=test.items[t_order].astype(np.int32),
      test_timestamps=test.timestamps[t_order],
      test_negatives=neg.negatives[n_order].astype(np.int32),
      metadata=dict(
        name="ncf",
        test_rule="the NCF paper's test.rating rows and test.negative negatives, unchanged",
        sources=[
          f.name for f in (p.train, p.test, p.negatives, p.users, p.movies, p.item_map) if f
        ],
      ),
    )
    if p.users is not None:
      users = parsing.read_users(p.users)
      add_user_features(tables, users, tables.user_ids + 1, "NCF users (as UserID = user + 1)")
    if p.item_map is not None:
      if p.movies is None:
        raise DataError("data.ncf_item_map needs movies.dat in data.side_dir for item features.")
      ncf_items, movie_ids = parsing.read_item_map(p.item_map)
      if ncf_items.max() >= num_items:
        raise DataError(
          f"{p.item_map.name}: maps NCF item {ncf_items.max()}, but the NCF files have "
          f"only {num_items} items; use the map that belongs to these files."
        )
      mapped = np.full(num_items, -1, np.int64)
      mapped[ncf_items] = movie_ids
      missing = add_item_features(tables, parsing.read_movies(p.movies), mapped)
      logging.info("NCF items without movie features (unmapped or unknown): %d", missing)
    return tables
