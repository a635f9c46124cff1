"""Data layer: raw parsing, TFDS builders, leave-one-out split, negatives, cache, loading."""

import gzip
import os
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import default
from ncf_jax.data import builders, input_pipeline, parsing
from ncf_jax.data.parsing import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shared_data_dir() -> str:
  """`<repo>/../shared/data`: the real (non-redistributable) MovieLens files, if present."""
  return os.path.join(os.path.dirname(REPO), "shared", "data")


def _require_shared(*parts: str) -> str:
  path = os.path.join(shared_data_dir(), *parts)
  if not os.path.exists(path):
    pytest.skip(f"real data not found at {path} (the shared data folder is absent)")
  return path


def _config(tmp_path, **overrides):
  c = default.get_config().data
  c.cache_dir = str(tmp_path / "cache")
  c.num_test_negatives = 1  # toy data: every user has at least one unseen item
  for k, v in overrides.items():
    setattr(c, k, v)
  return c


def _write(path, text: str, encoding: str = "utf-8") -> str:
  path = str(path)
  data = text.encode(encoding)
  if path.endswith(".gz"):
    data = gzip.compress(data)
  with open(path, "wb") as f:
    f.write(data)
  return path


def _cache_contents(cache) -> list[str]:
  """Everything under the cache except TFDS's (empty) download folder."""
  if not os.path.exists(cache):
    return []
  return sorted(
    os.path.relpath(os.path.join(d, n), cache)
    for d, dirs, files in os.walk(cache)
    for n in dirs + files
    if not os.path.relpath(os.path.join(d, n), cache).startswith("downloads")
  )


def _orig(ds, users, items):
  return ds.user_ids[users].tolist(), ds.item_ids[items].tolist()


# ML-1M-format toy files, latin-1 like the originals.
_ML1M_USERS = "1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::20::55117\n4::F::18::0::02460\n"
_ML1M_MOVIES = (
  "10::Toy Story (1995)::Animation|Children's|Comedy\n"
  "20::Amélie (2001)::Comedy|Romance\n"
  "30::No Year Here::Drama\n"
  "40::Metropolis (1927)::Sci-Fi\n"
  "50::Never Rated (1999)::Western\n"
)


# Each user rated at most 3 of the 4 items, so one test negative can always be drawn.
_ML1M_RATINGS = (
  "1::10::5::1000\n1::20::3::1005\n1::30::4::1003\n2::10::1::1001\n2::40::2::1002\n"
  "3::20::5::1000\n3::30::4::1000\n4::10::3::999\n4::30::4::1010\n4::40::1::1004\n"
)


def _ml1m_folder(tmp_path, ratings: str) -> str:
  folder = tmp_path / "ml-1m"
  folder.mkdir()
  _write(folder / "ratings.dat", ratings)
  _write(folder / "users.dat", _ML1M_USERS, "latin-1")
  _write(folder / "movies.dat", _ML1M_MOVIES, "latin-1")
  return str(folder)


# ----------------------------------------------------------------------------- split


def test_leave_one_out_takes_latest_and_later_line_wins_ties(tmp_path):
  folder = tmp_path / "ml"
  folder.mkdir()
  _write(
    folder / "ratings.csv",
    "userId,movieId,rating,timestamp\n"
    "10,100,4.0,5\n10,200,3.5,9\n10,300,1.0,7\n"  # latest: 200
    "20,100,4.0,3\n20,300,4.0,8\n20,400,2.0,8\n"  # tie at 8: the later line (400) wins
    "30,100,5.0,1\n"  # one interaction: train only
    "40,100,1.0,1\n40,200,2.0,2\n40,100,5.0,6\n",  # (40,100) twice: latest kept, is test
  )
  ds = input_pipeline.load_dataset(
    _config(tmp_path, dir=str(folder), variant="latest-small", num_test_negatives=1)
  )
  assert ds.user_ids.tolist() == [10, 20, 30, 40]  # dense ids in sorted original order
  assert ds.item_ids.tolist() == [100, 200, 300, 400]
  assert _orig(ds, ds.test_users, ds.test_items) == ([10, 20, 40], [200, 400, 100])
  assert ds.test_timestamps.tolist() == [9, 8, 6]
  users, items = _orig(ds, ds.train_users, ds.train_items)
  rows = list(zip(users, items, ds.train_timestamps.tolist(), strict=True))
  # Sorted by user, then time; the duplicate's older row is gone, so 100 is not in train.
  assert rows == [
    (10, 100, 5),
    (10, 300, 7),
    (20, 100, 3),
    (20, 300, 8),
    (30, 100, 1),
    (40, 200, 2),
  ]
  # With 4 items, users 10 and 20 have exactly one item left for their negative.
  negs = ds.item_ids[ds.test_negatives[:, 0]].tolist()
  assert negs[:2] == [400, 200] and negs[2] in (300, 400)
  assert ds.train_users.dtype == np.int32 and ds.train_timestamps.dtype == np.int64


def test_negatives_are_unseen_distinct_seeded(tmp_path):
  rng = np.random.default_rng(1)
  rows = [f"{u}::{i}::3::{rng.integers(0, 50)}" for u in range(1, 41) for i in range(1, 61)]
  rows = [r for r in rows if rng.random() < 0.3]
  folder = tmp_path / "ml-1m"
  folder.mkdir()
  _write(folder / "ratings.dat.gz", "\n".join(rows) + "\n")  # gz beside the usual name
  cfg = _config(tmp_path, dir=str(folder), variant="1m", num_test_negatives=5)
  ds = input_pipeline.load_dataset(cfg)
  assert ds.test_negatives.shape == (ds.num_test, 5)
  seen = {}
  for u, i in zip(ds.train_users.tolist(), ds.train_items.tolist(), strict=True):
    seen.setdefault(u, set()).add(i)
  for r, u in enumerate(ds.test_users.tolist()):
    negs = set(ds.test_negatives[r].tolist())
    assert len(negs) == 5
    assert not negs & seen[u]
    assert ds.test_items[r] not in negs
  again = input_pipeline.load_dataset(cfg)
  np.testing.assert_array_equal(again.test_negatives, ds.test_negatives)
  cfg.split_seed = 1
  other = input_pipeline.load_dataset(cfg)
  np.testing.assert_array_equal(other.test_items, ds.test_items)
  assert not np.array_equal(other.test_negatives, ds.test_negatives)


@pytest.mark.parametrize("num_items,num_seen", [(50, 10), (500, 10)])  # complement, rejection
def test_negative_sampler_is_uniform(num_items, num_seen):
  users = np.arange(2000, dtype=np.int32)
  seen = (users[:, None].astype(np.int64) * num_items + np.arange(num_seen)).ravel()
  negs = builders.sample_test_negatives(users, seen, num_items, 20, seed=0)
  assert negs.min() >= num_seen  # the seen items 0..num_seen-1 are never drawn
  assert all(len(set(row)) == 20 for row in negs.tolist())
  counts = np.bincount(negs.ravel(), minlength=num_items)[num_seen:]
  expected = negs.size / (num_items - num_seen)
  assert np.all(np.abs(counts - expected) < 0.5 * expected), (counts.min(), counts.max())


def test_too_many_interactions_for_negatives_is_an_error(tmp_path):
  folder = tmp_path / "ml"
  folder.mkdir()
  _write(folder / "ratings.csv", "u,m,r,t\n1,1,1,1\n1,2,1,2\n1,3,1,3\n2,1,1,1\n2,4,1,2\n")
  cfg = _config(tmp_path, dir=str(folder), variant="latest-small", num_test_negatives=2)
  with pytest.raises(DataError, match=r"user 1 has interacted with 3 of 4.*num_test_negatives"):
    input_pipeline.load_dataset(cfg)
  assert _cache_contents(cfg.cache_dir) == []


# ----------------------------------------------------------------------------- formats


def test_zip_folder_and_gz_give_the_same_dataset(tmp_path):
  ratings = _ML1M_RATINGS
  folder = _ml1m_folder(tmp_path, ratings)
  _write(tmp_path / "ratings.custom.dat.gz", ratings)
  archive = tmp_path / "ml-1m.zip"
  with zipfile.ZipFile(archive, "w") as zf:
    for name in ("ratings.dat", "users.dat", "movies.dat"):
      zf.write(os.path.join(folder, name), f"ml-1m/{name}")
  a = input_pipeline.load_dataset(_config(tmp_path, dir=folder, variant="1m"))
  b = input_pipeline.load_dataset(_config(tmp_path, dir=str(archive), variant="1m"))
  c = input_pipeline.load_dataset(
    _config(
      tmp_path, dir=folder, variant="1m", ratings_file=str(tmp_path / "ratings.custom.dat.gz")
    )
  )
  for other in (b, c):
    for field in ("train_users", "train_items", "train_timestamps", "test_items", "user_ids"):
      np.testing.assert_array_equal(getattr(a, field), getattr(other, field))
    np.testing.assert_array_equal(a.test_negatives, other.test_negatives)
    np.testing.assert_array_equal(a.item_features["genres"], other.item_features["genres"])


def test_id_maps_round_trip_every_rating(tmp_path):
  folder = _ml1m_folder(tmp_path, _ML1M_RATINGS)
  ds = input_pipeline.load_dataset(_config(tmp_path, dir=folder, variant="1m"))
  raw = []  # (user, timestamp, item) of every line
  for line in _ML1M_RATINGS.split():
    u, i, _, t = map(int, line.split("::"))
    raw.append((u, t, i))
  users, items = _orig(ds, ds.train_users, ds.train_items)
  got = list(zip(users, ds.train_timestamps.tolist(), items, strict=True))
  users, items = _orig(ds, ds.test_users, ds.test_items)
  got += list(zip(users, ds.test_timestamps.tolist(), items, strict=True))
  assert sorted(got) == sorted(raw)  # each rating once, in train or test
  assert ds.user_ids.tolist() == [1, 2, 3, 4] and ds.item_ids.tolist() == [10, 20, 30, 40]
  # User 3's two ratings share a timestamp: the later line (item 30) is the test item.
  assert dict(zip(*_orig(ds, ds.test_users, ds.test_items), strict=True))[3] == 30


def test_ml1m_side_features(tmp_path):
  folder = _ml1m_folder(
    tmp_path, "1::10::5::1\n1::20::5::2\n2::30::1::3\n3::40::2::4\n4::10::1::1\n"
  )
  ds = input_pipeline.load_dataset(
    _config(tmp_path, dir=folder, variant="1m", num_test_negatives=1)
  )
  assert ds.user_feature_sizes == {"gender": 2, "age": 7, "occupation": 21}
  assert ds.user_features["gender"].tolist() == [0, 1, 1, 0]  # F, M, M, F
  assert ds.user_features["age"].tolist() == [0, 6, 2, 1]  # codes 1, 56, 25, 18
  assert ds.user_features["occupation"].tolist() == [10, 16, 20, 0]
  # Only rated movies (10, 20, 30, 40) get dense ids; 50 is never rated.
  assert ds.item_ids.tolist() == [10, 20, 30, 40]
  assert ds.item_titles.tolist() == [
    "Toy Story (1995)",
    "Amélie (2001)",
    "No Year Here",
    "Metropolis (1927)",
  ]
  genres = ["Animation", "Children's", "Comedy", "Drama", "Romance", "Sci-Fi", "Western"]
  assert ds.item_feature_sizes == {"genres": len(genres), "year": len(builders.YEAR_BUCKETS)}
  assert ds.item_features["genres"].dtype == np.int32
  assert ds.item_features["genres"].tolist() == [
    [1, 1, 1, 0, 0, 0, 0],
    [0, 0, 1, 0, 1, 0, 0],
    [0, 0, 0, 1, 0, 0, 0],
    [0, 0, 0, 0, 0, 1, 0],
  ]
  years = [builders.YEAR_BUCKETS[b] for b in ds.item_features["year"]]
  assert years == ["1990s", "2000s", "unknown", "<1930"]


def test_ml100k_side_features(tmp_path):
  folder = tmp_path / "ml-100k"
  folder.mkdir()
  _write(folder / "u.data", "1\t1\t5\t10\n1\t2\t3\t11\n2\t2\t4\t12\n3\t1\t1\t13\n3\t3\t1\t14\n")
  flags1 = "|".join(["0"] * 5 + ["1"] + ["0"] * 13)  # Comedy
  flags2 = "|".join(["1"] + ["0"] * 18)  # unknown
  _write(
    folder / "u.item",
    f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags1}\n2|unknown|||http://y|{flags2}\n"
    f"3|Heat (1995)|||http://z|{flags1}\n",
    "latin-1",
  )
  _write(folder / "u.user", "1|17|M|writer|1\n2|30|F|artist|2\n3|60|M|writer|3\n")
  _write(folder / "u.occupation", "writer\nartist\nother\n")
  ds = input_pipeline.load_dataset(
    _config(tmp_path, dir=str(folder), variant="100k", num_test_negatives=1)
  )
  assert ds.user_features["age"].tolist() == [0, 2, 6]  # <18, 25-34, 56+
  assert ds.user_features["gender"].tolist() == [1, 0, 1]
  assert ds.user_features["occupation"].tolist() == [0, 1, 0]  # u.occupation order
  assert ds.user_feature_sizes["occupation"] == 3
  assert ds.item_feature_sizes["genres"] == 19
  assert ds.item_features["genres"][0].tolist() == [0] * 5 + [1] + [0] * 13
  assert ds.item_features["genres"][1].tolist() == [1] + [0] * 18
  # The year comes from the release date, else from the title.
  years = [builders.YEAR_BUCKETS[b] for b in ds.item_features["year"]]
  assert years == ["1990s", "unknown", "1990s"]


def _ncf_files(tmp_path, negatives=None, test=None) -> dict:
  """Users 0..2 with training rows, user 3 with test rows only; item 9 only as a negative."""
  train_dir = tmp_path / "derived"
  test_dir = tmp_path / "ncf"
  train_dir.mkdir()
  test_dir.mkdir()
  train = _write(
    train_dir / "toy.train.rating.gz",
    "0\t1\t5\t100\n0\t2\t3\t101\n1\t2\t4\t100\n1\t3\t4\t99\n2\t0\t1\t50\n",
  )
  _write(
    test_dir / "toy.test.rating", test or "0\t3\t5\t200\n1\t4\t3\t200\n2\t5\t4\t60\n3\t1\t1\t7\n"
  )
  _write(
    test_dir / "toy.test.negative",
    negatives or "(0,3)\t4\t5\t3\n(1,4)\t0\t9\t1\n(2,5)\t1\t2\t3\n(3,1)\t2\t3\t4\n",
  )
  return dict(name="ncf", dir=str(test_dir), ncf_prefix="toy", train_file=train)


def test_ncf_files_are_kept_exactly(tmp_path, caplog):
  cfg = _config(tmp_path, **_ncf_files(tmp_path))
  with caplog.at_level("WARNING"):
    ds = input_pipeline.load_dataset(cfg)
  assert (ds.num_users, ds.num_items) == (4, 10)  # 1 + max id over the three files
  np.testing.assert_array_equal(ds.user_ids, np.arange(4))
  assert ds.train_users.tolist() == [0, 0, 1, 1, 2]
  assert ds.train_items.tolist() == [1, 2, 2, 3, 0]  # file order within a user
  assert ds.train_timestamps.tolist() == [100, 101, 100, 99, 50]
  # User 3 has no training rows: left out of evaluation, and the log says so.
  assert ds.test_users.tolist() == [0, 1, 2]
  assert ds.test_items.tolist() == [3, 4, 5]
  assert ds.test_timestamps.tolist() == [200, 200, 60]
  # The paper's negatives unchanged, including a test item among its own negatives.
  assert ds.test_negatives.tolist() == [[4, 5, 3], [0, 9, 1], [1, 2, 3]]
  assert "1 of 4 test users have no training rows" in caplog.text
  assert ds.user_features == {} and ds.item_titles is None


def test_ncf_side_features_from_users_dat_and_item_map(tmp_path):
  side = tmp_path / "side"
  side.mkdir()
  _write(side / "users.dat", _ML1M_USERS, "latin-1")
  _write(side / "movies.dat", _ML1M_MOVIES, "latin-1")
  item_map = _write(
    tmp_path / "map.tsv", "ncf_item_index\tmovielens_movie_id\n0\t20\n1\t10\n5\t77\n"
  )
  cfg = _config(tmp_path, **_ncf_files(tmp_path), side_dir=str(side), ncf_item_map=item_map)
  ds = input_pipeline.load_dataset(cfg)
  # NCF user u is UserID u + 1.
  assert ds.user_features["gender"].tolist() == [0, 1, 1, 0]
  assert ds.user_features["occupation"].tolist() == [10, 16, 20, 0]
  genres = ds.item_features["genres"]
  assert genres.shape == (10, 7)
  assert genres[0].tolist() == [0, 0, 1, 0, 1, 0, 0]  # movie 20: Comedy|Romance
  assert genres[1].tolist() == [1, 1, 1, 0, 0, 0, 0]  # movie 10
  assert genres[2:].sum() == 0  # unmapped, or mapped to a movie not in movies.dat (5 -> 77)
  assert ds.item_titles[:3].tolist() == ["Amélie (2001)", "Toy Story (1995)", ""]
  assert ds.item_features["year"][[0, 1, 2, 5]].tolist() == [9, 8, 0, 0]


# ----------------------------------------------------------------------------- bad input


def _bad_ratings(tmp_path, text, name="ratings.csv", variant="latest-small"):
  folder = tmp_path / "bad"
  folder.mkdir()
  _write(folder / name, text)
  return _config(tmp_path, dir=str(folder), variant=variant)


_BAD_CASES = {
  "wrong field count": (
    lambda p: _bad_ratings(p, "1::1::5::1\n1::2::5::2\n1::3::5\n", "ratings.dat", "1m"),
    r"ratings\.dat, line 3: expected 4 fields",
  ),
  "id not an integer": (
    lambda p: _bad_ratings(p, "userId,movieId,rating,timestamp\n1,1,4,1\n1,2,4,2\n2,x7,4,3\n"),
    r"ratings\.csv, line 4: item 'x7' is not an integer",
  ),
  "gz id not an integer": (
    lambda p: _bad_ratings(p, "1\t1\t5\t1\n1.5\t2\t5\t2\n", "u.data.gz", "100k"),
    r"u\.data\.gz, line 2: user '1\.5' is not an integer",
  ),
  "empty file": (
    lambda p: _bad_ratings(p, "userId,movieId,rating,timestamp\n"),
    r"ratings\.csv is empty",
  ),
  "missing data dir": (
    lambda p: _config(p, dir=str(p / "nowhere")),
    r"nowhere.*`data\.dir`",
  ),
  "missing ratings file": (
    lambda p: _bad_ratings(p, "1,1,1,1\n", "other.csv"),
    r"no ratings\.csv .*`data\.dir`",
  ),
  "negative row disagrees with test row": (
    lambda p: _config(
      p, **_ncf_files(p, negatives="(0,3)\t4\t5\n(1,7)\t0\t9\n(2,5)\t1\t2\n(3,1)\t2\t3\n")
    ),
    r"toy\.test\.negative, line 2: row \(1,7\) disagrees .*test item for user 1 is 4",
  ),
  "negatives row malformed": (
    lambda p: _config(p, **_ncf_files(p, negatives="(0,3)\t4\t5\n1,4\t0\t9\n")),
    r"toy\.test\.negative, line 2: expected '\(user,item\)'",
  ),
  "duplicate test rows": (
    lambda p: _config(p, **_ncf_files(p, test="0\t3\t5\t200\n1\t4\t3\t200\n0\t3\t5\t200\n")),
    r"toy\.test\.rating, line 3: duplicate test row for user 0 \(first at line 1\)",
  ),
  "bad gender": (
    lambda p: _with_users(p, "1::F::1::10::1\n2::X::56::16::2\n"),
    r"users\.dat, line 2: gender 'X' is not 'F' or 'M'",
  ),
  "users.dat lacks a rated user": (
    lambda p: _with_users(p, "1::F::1::10::1\n"),
    r"1 users of the ratings have no row in .*users\.dat \(first: user 2\)",
  ),
}


def _with_users(p, users: str):
  folder = _ml1m_folder(p, "1::10::5::1\n1::20::5::2\n2::10::5::1\n2::30::1::3\n")
  _write(os.path.join(folder, "users.dat"), users, "latin-1")
  return _config(p, dir=folder, variant="1m", num_test_negatives=1)


@pytest.mark.parametrize("case", sorted(_BAD_CASES))
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, case):
  make, message = _BAD_CASES[case]
  cfg = make(tmp_path)
  with pytest.raises(DataError, match=message):
    input_pipeline.load_dataset(cfg)
  assert _cache_contents(cfg.cache_dir) == []


def test_unknown_name_and_variant_name_the_field(tmp_path):
  with pytest.raises(ValueError, match="data.name"):
    input_pipeline.load_dataset(_config(tmp_path, name="criteo"))
  with pytest.raises(ValueError, match="data.variant"):
    input_pipeline.load_dataset(_config(tmp_path, variant="10m"))


def test_failed_preparation_leaves_no_dataset(tmp_path, monkeypatch):
  cfg = _config(tmp_path, dir=_ml1m_folder(tmp_path, _ML1M_RATINGS))
  cfg.variant = "1m"
  original = builders.MovieLens._generate_examples

  def crash_in_test_split(self, tables, split):
    if split == "test":
      raise OSError("disk full")
    yield from original(self, tables, split)

  monkeypatch.setattr(builders.MovieLens, "_generate_examples", crash_in_test_split)
  with pytest.raises(OSError, match="disk full"):
    input_pipeline.load_dataset(cfg)
  assert _cache_contents(cfg.cache_dir) == []  # the written train split went with the tmp dir
  monkeypatch.undo()
  assert input_pipeline.load_dataset(cfg).num_test == 4


# ----------------------------------------------------------------------------- cache


def test_cache_is_reused_and_invalidated(tmp_path, monkeypatch):
  folder = _ml1m_folder(tmp_path, _ML1M_RATINGS)
  cfg = _config(tmp_path, dir=folder, variant="1m")
  first = input_pipeline.load_dataset(cfg)
  prepared = input_pipeline.make_builder(cfg).data_path

  def no_prepare(self, dl_manager):
    raise AssertionError("prepared again")

  monkeypatch.setattr(builders.MovieLens, "_tables", no_prepare)
  second = input_pipeline.load_dataset(cfg)  # would raise if it re-prepared
  np.testing.assert_array_equal(first.test_negatives, second.test_negatives)
  monkeypatch.undo()

  cfg.num_test_negatives = 2  # a new parameter: a new folder
  assert input_pipeline.make_builder(cfg).data_path != prepared
  cfg.num_test_negatives = 1
  os.utime(os.path.join(folder, "ratings.dat"), ns=(1, 1))  # an edited source: a new folder
  assert input_pipeline.make_builder(cfg).data_path != prepared


def test_download_uses_the_grouplens_url(tmp_path, monkeypatch):
  folder = _ml1m_folder(tmp_path, _ML1M_RATINGS)
  archive = tmp_path / "ml-1m.zip"
  with zipfile.ZipFile(archive, "w") as zf:
    for name in ("ratings.dat", "users.dat", "movies.dat"):
      zf.write(os.path.join(folder, name), f"ml-1m/{name}")
  urls = []

  def fake_download(self, url):
    urls.append(url)
    return str(archive)

  monkeypatch.setattr(tfds.download.DownloadManager, "download", fake_download)
  ds = input_pipeline.load_dataset(_config(tmp_path, dir="", variant="1m"))
  assert urls == ["https://files.grouplens.org/datasets/movielens/ml-1m.zip"]
  assert ds.num_users == 4 and "gender" in ds.user_features


def test_fast_reader_matches_tfds_decoding(tmp_path):
  cfg = _config(tmp_path, dir=_ml1m_folder(tmp_path, _ML1M_RATINGS))
  cfg.variant = "1m"
  ds = input_pipeline.load_dataset(cfg)
  builder = input_pipeline.make_builder(cfg)
  train = builder.as_data_source("train")
  examples = sorted((train[i] for i in range(len(train))), key=lambda e: e["user"])
  np.testing.assert_array_equal(np.concatenate([e["items"] for e in examples]), ds.train_items)
  np.testing.assert_array_equal(
    np.concatenate([e["timestamps"] for e in examples]), ds.train_timestamps
  )
  test = builder.as_data_source("test")
  negs = {int(test[i]["user"]): test[i]["negatives"] for i in range(len(test))}
  np.testing.assert_array_equal(np.stack([negs[u] for u in ds.test_users]), ds.test_negatives)


def test_read_ratings_parses_all_formats(tmp_path):
  dat = parsing.read_ratings(parsing.SourceFile(_write(tmp_path / "r.dat", "7::8::3::9\n\n")))
  csv = parsing.read_ratings(parsing.SourceFile(_write(tmp_path / "r.csv", "a,b,c,d\n7,8,3.5,9\n")))
  tab = parsing.read_ratings(parsing.SourceFile(_write(tmp_path / "u.data.gz", "7\t8\t3\t9\r\n")))
  for r in (dat, csv, tab):
    assert (r.users.tolist(), r.items.tolist(), r.timestamps.tolist()) == ([7], [8], [9])


# ----------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory):
  return tmp_path_factory.mktemp("real_cache")


def test_bundled_ml_latest_small(real_cache):
  cfg = default.get_config().data  # the default config reads the bundled copy
  cfg.cache_dir = str(real_cache)
  ds = input_pipeline.load_dataset(cfg)
  assert (ds.num_users, ds.num_items, ds.num_test) == (610, 9724, 610)
  assert ds.num_train == 100836 - 610
  assert ds.test_negatives.shape == (610, 99)
  assert ds.item_titles[0] == "Toy Story (1995)" and ds.item_features["genres"].shape[0] == 9724


def _ncf_config(real_cache):
  cfg = default.get_config().data
  cfg.cache_dir = str(real_cache)
  cfg.name = "ncf"
  cfg.dir = _require_shared("ncf")
  cfg.train_file = _require_shared("derived", "ml-1m.train.rating.users0-2998.gz")
  return cfg


def test_real_ncf_ml1m(real_cache):
  cfg = _ncf_config(real_cache)
  cfg.side_dir = _require_shared("ml-1m")
  cfg.ncf_item_map = _require_shared("derived", "ml-1m.ncf_item_index_to_movieid.tsv")
  ds = input_pipeline.load_dataset(cfg)
  assert ds.num_test == 2999 and ds.test_users.tolist() == list(range(2999))
  assert (ds.num_users, ds.num_items, ds.num_train) == (6040, 3706, 484651)
  assert ds.test_negatives.shape == (2999, 99)
  assert ds.test_negatives[0, :5].tolist() == [1064, 174, 2791, 3373, 269]  # file row 1
  # The paper's quirk is kept: 77 of these users have their test item among the negatives.
  assert int((ds.test_negatives == ds.test_items[:, None]).any(axis=1).sum()) == 77
  assert ds.user_feature_sizes == {"gender": 2, "age": 7, "occupation": 21}
  assert ds.user_features["gender"][0] == 0  # UserID 1 is F
  assert ds.item_titles[0] == "One Flew Over the Cuckoo's Nest (1975)"  # NCF item 0 = movie 1193
  assert ds.item_features["genres"].shape == (3706, 18)
  assert ds.item_features["genres"][3615:].sum() == 0  # items the map does not cover


def test_real_ml1m_neumf_config_loads(real_cache):
  _require_shared("ncf")
  from configs import ml1m_neumf  # noqa: PLC0415  (its paths point into the shared data)

  cfg = ml1m_neumf.get_config().data
  cfg.cache_dir = str(real_cache)
  ds = input_pipeline.load_dataset(cfg)
  assert (ds.num_test, ds.num_items, ds.num_train) == (2999, 3706, 484651)


def test_real_ml1m_own_split_matches_ncf_latest(real_cache):
  cfg = default.get_config().data
  cfg.cache_dir = str(real_cache)
  cfg.variant = "1m"
  cfg.dir = _require_shared("ml-1m")
  cfg.ratings_file = "ratings.users0001-2999.dat.gz"
  ds = input_pipeline.load_dataset(cfg)
  assert (ds.num_users, ds.num_test, ds.num_train) == (2999, 2999, 484651)
  # Our held-out row is each user's latest, as in the NCF test file (ties may differ).
  ncf = np.loadtxt(_require_shared("ncf", "ml-1m.test.rating"), dtype=np.int64)[:2999]
  np.testing.assert_array_equal(ds.user_ids[ds.test_users], ncf[:, 0] + 1)
  np.testing.assert_array_equal(ds.test_timestamps, ncf[:, 3])
