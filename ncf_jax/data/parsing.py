"""Raw MovieLens and NCF-paper file readers, and the validation of what they read.

Every reader takes a `SourceFile` (a plain file, a `.gz` file, or a member of a `.zip`
archive) and returns numpy arrays with the file's own ids; turning them into dense ids,
splits and examples is the job of `builders.py`.

Big interaction files (MovieLens ratings, NCF `*.rating` / `*.test.negative`) are parsed
by numpy's C `loadtxt` (20M rows in ~5 s on one core). Only when that fails do we scan
the file line by line, so that the `DataError` can name the first bad line. Blank lines
are skipped everywhere; line numbers in messages count every line from 1.
"""

import csv
import dataclasses
import gzip
import io
import os
import re
import zipfile
from collections.abc import Sequence

import numpy as np


class DataError(ValueError):
  """Bad or missing input data; the message names the file, line and what to do."""


# ----------------------------------------------------------------------------- files


@dataclasses.dataclass(frozen=True)
class SourceFile:
  """A raw input file: a plain file, or `member` inside the zip archive `path`.

  Files whose name ends in `.gz` are decompressed transparently.
  """

  path: str  # absolute path of the file, or of the .zip archive
  member: str = ""  # path inside the archive; '' for a plain file

  @property
  def name(self) -> str:
    """The name used in messages, e.g. '/data/ml-1m.zip:ml-1m/ratings.dat'."""
    return f"{self.path}:{self.member}" if self.member else self.path

  @property
  def basename(self) -> str:
    """The file name without folders and without a trailing '.gz'."""
    base = os.path.basename(self.member or self.path)
    return base[:-3] if base.endswith(".gz") else base

  def read_bytes(self) -> bytes:
    """The whole (decompressed) content."""
    if self.member:
      with zipfile.ZipFile(self.path) as zf:
        data = zf.read(self.member)
    else:
      with open(self.path, "rb") as f:
        data = f.read()
    if (self.member or self.path).endswith(".gz"):
      try:
        data = gzip.decompress(data)
      except (OSError, EOFError) as e:
        raise DataError(
          f"{self.name} is not a valid gzip file ({e}); re-download or re-compress it."
        ) from e
    return data

  def fingerprint(self) -> list:
    """[path, member, size, mtime_ns]: changes whenever the file is replaced or edited."""
    st = os.stat(self.path)
    return [self.path, self.member, st.st_size, st.st_mtime_ns]


def check_dir(path: str, field: str = "data.dir") -> str:
  """Returns `path` made absolute; raises DataError if it is neither a folder nor a .zip."""
  if not path:
    raise DataError(f"`{field}` is empty: set it to the folder (or .zip) with the raw files.")
  path = os.path.abspath(os.path.expanduser(path))
  if not (os.path.isdir(path) or (os.path.isfile(path) and zipfile.is_zipfile(path))):
    raise DataError(
      f"{path} (config field `{field}`) is neither a folder nor a .zip archive: set "
      f"--config.{field} to the folder or archive with the raw files."
    )
  return path


def find_file(
  root: str, name: str, *, subdir: str = "", field: str = "data.dir", required: bool = True
) -> SourceFile | None:
  """Finds `name` (or `name.gz`) in the folder or .zip `root`.

  A folder is searched at its top, then in `root/subdir` (e.g. the `ml-1m/` an archive
  extracts to). In an archive, a member `name`, `subdir/name` or else the only member
  with that file name, wherever it is (two are ambiguous: an error). Returns None for a
  missing optional file; a missing required file raises DataError naming `field`.
  """
  root = check_dir(root, field)
  candidates = [name, name + ".gz"]
  places = [""] + ([subdir] if subdir else [])
  if os.path.isdir(root):
    for place in places:
      for cand in candidates:
        path = os.path.join(root, place, cand)
        if os.path.isfile(path):
          return SourceFile(path)
  else:
    with zipfile.ZipFile(root) as zf:
      members = [m for m in zf.namelist() if not m.endswith("/")]
    for place in places:
      for cand in candidates:
        if f"{place}/{cand}".lstrip("/") in members:
          return SourceFile(root, f"{place}/{cand}".lstrip("/"))
    for cand in candidates:
      found = [m for m in members if m.endswith("/" + cand)]
      if len(found) > 1:
        raise DataError(
          f"{root} (config field `{field}`) holds several {cand}: {found[:3]}; extract the "
          "one you want, or name it with its path inside the archive."
        )
      if found:
        return SourceFile(root, found[0])
  if required:
    where = f"{root} or {os.path.join(root, subdir)}" if subdir else root
    raise DataError(
      f"no {name} (or {name}.gz) in {where} (config field `{field}`): point `{field}` "
      "at the folder or .zip that holds it, or fix the file name in the config."
    )
  return None


def resolve_file(root: str, path: str, field: str) -> SourceFile:
  """An explicitly named file: absolute, or relative to the folder/.zip `root`.

  `path.gz` is taken when `path` itself is absent.
  """
  path = os.path.expanduser(path)
  if os.path.isabs(path):
    for full in (path, path + ".gz"):
      if os.path.isfile(full):
        return SourceFile(full)
    raise DataError(f"{path} (config field `{field}`) does not exist: fix `{field}`.")
  if not root:
    raise DataError(
      f"`{field}`={path!r} is relative but `data.dir` is empty: set `data.dir` or make "
      f"`{field}` an absolute path."
    )
  root = check_dir(root)
  if os.path.isdir(root):
    for full in (os.path.join(root, path), os.path.join(root, path + ".gz")):
      if os.path.isfile(full):
        return SourceFile(full)
    raise DataError(
      f"{os.path.join(root, path)} (config field `{field}`, relative to `data.dir`) does "
      f"not exist: fix `{field}` or `data.dir`."
    )
  with zipfile.ZipFile(root) as zf:
    members = set(zf.namelist())
  for member in (path, path + ".gz"):
    if member in members:
      return SourceFile(root, member)
  found = find_file(root, os.path.basename(path), field=field, required=False)
  if found is None:
    raise DataError(f"{path!r} (config field `{field}`) is not in the archive {root} (`data.dir`).")
  return found


# ----------------------------------------------------------------------------- line scans


def _lines(data: bytes, encoding: str = "utf-8") -> list[str]:
  return data.decode(encoding, errors="replace").splitlines()


def _first_bad_line(
  src: SourceFile,
  data: bytes,
  sep: str,
  fields: Sequence[str],
  kinds: str,
  skip: int,
) -> DataError:
  """Scans line by line for the first row the fast parser rejected.

  kinds[j] is 'i' (integer), 'f' (number) or 's' (any text) for field j.
  """
  expect = sep.join(fields)
  for n, line in enumerate(_lines(data), start=1):
    if n <= skip or not line.strip():
      continue
    parts = line.split(sep)
    if len(parts) != len(fields):
      return DataError(
        f"{src.name}, line {n}: expected {len(fields)} fields '{expect}', found "
        f"{len(parts)}: {line[:120]!r}. Fix or delete this line."
      )
    for part, field, kind in zip(parts, fields, kinds, strict=True):
      tok = part.strip()
      try:
        if kind == "i":
          int(tok)
        elif kind == "f":
          float(tok)
      except ValueError:
        what = "an integer" if kind == "i" else "a number"
        return DataError(
          f"{src.name}, line {n}: {field} {tok!r} is not {what}: {line[:120]!r}. "
          "Fix or delete this line."
        )
  return DataError(f"{src.name}: could not be parsed as '{expect}'; check the file format.")


def _line_numbers(data: bytes, skip: int) -> np.ndarray:
  """int64[R]: the 1-based line number of each non-blank data row (error paths only)."""
  return np.array(
    [n for n, line in enumerate(_lines(data), 1) if n > skip and line.strip()], np.int64
  )


def _has_rows(data: bytes, skip: int) -> int:
  """1 if anything but blank space follows the first `skip` lines, else 0."""
  body = data.split(b"\n", skip)[-1] if skip else data
  return int(bool(body.strip()))


def _check_not_empty(src: SourceFile, rows: int, what: str) -> None:
  if rows == 0:
    raise DataError(
      f"{src.name} is empty (no {what} rows): point the config at the right file or re-create it."
    )


def _has_header(data: bytes) -> bool:
  """A first line that does not start with a digit (or '(') is a header."""
  head = data.lstrip()[:1]
  return bool(head) and not (head.isdigit() or head in (b"-", b"("))


# ----------------------------------------------------------------------------- ratings


@dataclasses.dataclass(frozen=True)
class Ratings:
  """Interactions in file order, with the file's own ids."""

  users: np.ndarray  # int64[N]
  items: np.ndarray  # int64[N]
  timestamps: np.ndarray  # int64[N]
  source: SourceFile


_RATING_FIELDS = ("user", "item", "rating", "timestamp")


def rating_separator(src: SourceFile) -> str:
  """The field separator of a ratings file, from its name.

  '*.csv': ',' (MovieLens latest/20m/25m); '*.dat': '::' (ML-1M); anything else: a tab
  (ML-100K u.data, the NCF paper's *.rating files).
  """
  base = src.basename
  if base.endswith(".csv"):
    return ","
  if base.endswith(".dat"):
    return "::"
  return "\t"


def read_ratings(src: SourceFile) -> Ratings:
  """Reads `user<sep>item<sep>rating<sep>timestamp` rows (separator: `rating_separator`).

  A header line is skipped. Ids and timestamps must be integers, ratings numbers.
  """
  sep = rating_separator(src)
  data = src.read_bytes()
  skip = 1 if _has_header(data) else 0
  _check_not_empty(src, _has_rows(data, skip), "rating")
  # loadtxt takes a one-character delimiter; ML-1M's '::' becomes ':'.
  fast = data.replace(b"::", b":") if sep == "::" else data
  dtype = np.dtype([("u", "i8"), ("i", "i8"), ("r", "f8"), ("t", "i8")])
  try:
    rows = np.loadtxt(
      io.BytesIO(fast),
      delimiter=sep[0],
      skiprows=skip,
      dtype=dtype,
      comments=None,
      ndmin=1,
    )
  except (ValueError, OverflowError):
    raise _first_bad_line(src, data, sep, _RATING_FIELDS, "iifi", skip) from None
  return Ratings(
    users=np.ascontiguousarray(rows["u"]),
    items=np.ascontiguousarray(rows["i"]),
    timestamps=np.ascontiguousarray(rows["t"]),
    source=src,
  )


def check_dense_ids(ratings: Ratings) -> None:
  """NCF files hold dense ids: they must be >= 0 and fit int32."""
  for name, ids in (("user", ratings.users), ("item", ratings.items)):
    bad = np.flatnonzero((ids < 0) | (ids > np.iinfo(np.int32).max))
    if bad.size:
      data = ratings.source.read_bytes()
      line = _line_numbers(data, 1 if _has_header(data) else 0)[bad[0]]
      raise DataError(
        f"{ratings.source.name}, line {line}: {name} id {ids[bad[0]]} is not a dense id "
        "(0 <= id < 2**31): NCF files must hold 0-based ids."
      )


def check_one_row_per_user(ratings: Ratings) -> None:
  """A test file holds each user's held-out interaction exactly once."""
  order = np.argsort(ratings.users, kind="stable")
  dup = np.flatnonzero(np.diff(ratings.users[order]) == 0)
  if dup.size:
    first, second = sorted((order[dup[0]], order[dup[0] + 1]))
    data = ratings.source.read_bytes()
    lines = _line_numbers(data, 1 if _has_header(data) else 0)
    raise DataError(
      f"{ratings.source.name}, line {lines[second]}: duplicate test row for user "
      f"{ratings.users[second]} (first at line {lines[first]}); a test file must hold one "
      "held-out interaction per user. Remove the duplicate."
    )


# ----------------------------------------------------------------------------- NCF negatives


@dataclasses.dataclass(frozen=True)
class Negatives:
  """Rows `(user,item)\\tneg_1\\t...\\tneg_M` of an NCF `*.test.negative` file."""

  users: np.ndarray  # int64[R]
  items: np.ndarray  # int64[R]
  negatives: np.ndarray  # int64[R, M]
  source: SourceFile


_NEG_HEAD = re.compile(r"^\((-?\d+),(-?\d+)\)$")


def read_negatives(src: SourceFile) -> Negatives:
  """Reads an NCF `*.test.negative` file; every row must have the same number of negatives."""
  data = src.read_bytes()
  _check_not_empty(src, _has_rows(data, 0), "negative")
  rows = None
  # The fast path parses '(u,i)' as two plain fields; the counts make sure every row
  # really had that shape (else the line scan below finds the row that did not).
  nrows = sum(1 for line in data.split(b"\n") if line.strip())
  if data.count(b"(") == data.count(b")") == data.count(b",") == nrows:
    fast = data.replace(b"(", b"").replace(b")", b"").replace(b",", b"\t")
    try:
      rows = np.loadtxt(io.BytesIO(fast), delimiter="\t", dtype=np.int64, comments=None, ndmin=2)
    except (ValueError, OverflowError):
      rows = None
  if rows is None or rows.shape[1] < 2:
    raise _bad_negative_line(src, data)
  if rows.min(initial=0) < 0:
    raise _bad_negative_line(src, data)
  return Negatives(rows[:, 0].copy(), rows[:, 1].copy(), np.ascontiguousarray(rows[:, 2:]), src)


def _bad_negative_line(src: SourceFile, data: bytes) -> DataError:
  width = None
  for n, line in enumerate(_lines(data), start=1):
    if not line.strip():
      continue
    parts = line.strip().split("\t")
    head = _NEG_HEAD.match(parts[0])
    if head is None:
      return DataError(
        f"{src.name}, line {n}: expected '(user,item)' then tab-separated negative item "
        f"ids, found {line[:120]!r}. Fix or delete this line."
      )
    for tok in parts[1:]:
      if not re.fullmatch(r"\d+", tok):
        return DataError(
          f"{src.name}, line {n}: negative item id {tok!r} is not a non-negative integer. "
          "Fix this line."
        )
    if int(head.group(1)) < 0 or int(head.group(2)) < 0:
      return DataError(f"{src.name}, line {n}: negative user or item id in {parts[0]!r}.")
    if width is None:
      width = len(parts)
    elif len(parts) != width:
      return DataError(
        f"{src.name}, line {n}: {len(parts) - 1} negatives, but earlier rows have "
        f"{width - 1}; every row needs the same number. Fix this line."
      )
  return DataError(f"{src.name}: could not be parsed as an NCF .test.negative file.")


def check_negatives_match_test(neg: Negatives, test: Ratings) -> None:
  """Every negatives row's (user,item) must be that user's test row, and vice versa.

  The paper's negatives are kept as they are, including rows where the test item is
  also among the negatives (156 rows of ML-1M): the evaluator handles those.
  """
  test_item = dict(zip(test.users.tolist(), test.items.tolist(), strict=True))
  seen: set[int] = set()
  lines = None
  for r, (u, i) in enumerate(zip(neg.users.tolist(), neg.items.tolist(), strict=True)):
    problem = None
    if u in seen:
      problem = f"a second negatives row for user {u}"
    elif u not in test_item:
      problem = f"user {u} has no row in the test file {test.source.name}"
    elif test_item[u] != i:
      problem = (
        f"row ({u},{i}) disagrees with the test file {test.source.name}, whose test item "
        f"for user {u} is {test_item[u]}"
      )
    seen.add(u)
    if problem:
      lines = _line_numbers(neg.source.read_bytes(), 0) if lines is None else lines
      raise DataError(
        f"{neg.source.name}, line {lines[r]}: {problem}. The negative and test files must "
        "come from the same split: check data.test_file / data.negative_file."
      )
  missing = sorted(set(test_item) - seen)
  if missing:
    raise DataError(
      f"{neg.source.name}: no negatives row for {len(missing)} test user(s) of "
      f"{test.source.name} (first: user {missing[0]}); the files must come from the same split."
    )


# ----------------------------------------------------------------------------- side features


@dataclasses.dataclass(frozen=True)
class Movies:
  """Item side information with the file's own movie ids."""

  ids: np.ndarray  # int64[M]
  titles: list[str]  # [M]
  years: np.ndarray  # int32[M] release year, 0 where unknown
  genres: list[list[int]]  # [M] indices into genre_names
  genre_names: list[str]  # [G]
  source: SourceFile


# The 19 genre flags of ML-100K u.item, in order (used when u.genre is absent).
ML100K_GENRES = (
  "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
  "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
  "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_NO_GENRE = "(no genres listed)"
_TITLE_YEAR = re.compile(r"\((\d{4})(?:\s*[-\u2013]\s*\d{0,4})?\)\s*$")


def title_year(title: str) -> int:
  """The release year in a MovieLens title such as 'Heat (1995)' or 'X (2006-2007)'; 0 if none."""
  m = _TITLE_YEAR.search(title)
  return int(m.group(1)) if m else 0


def _split_fields(
  src: SourceFile, encoding: str, sep: str, fields: Sequence[str], skip: int = 0
) -> list[tuple[int, list[str]]]:
  """(line number, fields) of every non-blank line, checking the field count."""
  out = []
  for n, line in enumerate(src.read_bytes().decode(encoding).splitlines(), start=1):
    if n <= skip or not line.strip():
      continue
    parts = line.split(sep)
    if len(parts) != len(fields):
      raise DataError(
        f"{src.name}, line {n}: expected {len(fields)} fields '{sep.join(fields)}', found "
        f"{len(parts)}: {line[:120]!r}. Fix or delete this line."
      )
    out.append((n, parts))
  _check_not_empty(src, len(out), "data")
  return out


def _int(src: SourceFile, n: int, what: str, tok: str) -> int:
  try:
    return int(tok.strip())
  except ValueError:
    raise DataError(
      f"{src.name}, line {n}: {what} {tok!r} is not an integer. Fix this line."
    ) from None


def _check_unique(src: SourceFile, ids: list[int], lines: list[int], what: str) -> None:
  seen: dict[int, int] = {}
  for i, n in zip(ids, lines, strict=True):
    if i in seen:
      raise DataError(
        f"{src.name}, line {n}: duplicate {what} {i} (first at line {seen[i]}). Remove one."
      )
    seen[i] = n


def read_movies(src: SourceFile, genre_src: SourceFile | None = None) -> Movies:
  """Reads movies.dat (ML-1M, latin-1), movies.csv (latest/20m/25m) or u.item (ML-100K).

  Genre vocabulary: u.item's 19 flags (names from `genre_src` = u.genre, or
  ML100K_GENRES); otherwise the sorted genre names found in the file, leaving out
  '(no genres listed)' (an empty bag).
  """
  base = src.basename
  ids, titles, years, names, lines = [], [], [], [], []
  if base.endswith(".csv"):
    text = src.read_bytes().decode("utf-8")
    reader = csv.reader(io.StringIO(text))
    for row in reader:
      n = reader.line_num
      if n == 1 and row and not row[0].strip().isdigit():
        continue  # header
      if not row:
        continue
      if len(row) != 3:
        raise DataError(
          f"{src.name}, line {n}: expected 3 fields 'movieId,title,genres', found "
          f"{len(row)}: {row!r}. Fix or delete this line."
        )
      ids.append(_int(src, n, "movie id", row[0]))
      titles.append(row[1])
      years.append(title_year(row[1]))
      names.append([g for g in row[2].split("|") if g and g != _NO_GENRE])
      lines.append(n)
    _check_not_empty(src, len(ids), "movie")
  elif base == "u.item":
    flag_names = list(ML100K_GENRES)
    if genre_src is not None:
      rows = _split_fields(genre_src, "latin-1", "|", ("name", "index"))
      rows = sorted(rows, key=lambda r: _int(genre_src, r[0], "genre index", r[1][1]))
      flag_names = [p[0] for _, p in rows]
    fields = ("id", "title", "release", "video", "url") + tuple(flag_names)
    for n, p in _split_fields(src, "latin-1", "|", fields):
      ids.append(_int(src, n, "movie id", p[0]))
      titles.append(p[1])
      date_year = re.search(r"(\d{4})\s*$", p[2])
      years.append(int(date_year.group(1)) if date_year else title_year(p[1]))
      flags = [_int(src, n, "genre flag", f) for f in p[5:]]
      names.append([flag_names[j] for j, f in enumerate(flags) if f])
      lines.append(n)
  else:
    for n, p in _split_fields(src, "latin-1", "::", ("MovieID", "Title", "Genres")):
      ids.append(_int(src, n, "movie id", p[0]))
      titles.append(p[1])
      years.append(title_year(p[1]))
      names.append([g for g in p[2].split("|") if g and g != _NO_GENRE])
      lines.append(n)
  _check_unique(src, ids, lines, "movie id")
  if base == "u.item":
    vocab = flag_names
  else:
    vocab = sorted({g for gs in names for g in gs})
  index = {g: j for j, g in enumerate(vocab)}
  return Movies(
    ids=np.array(ids, np.int64),
    titles=titles,
    years=np.array(years, np.int32),
    genres=[sorted({index[g] for g in gs}) for gs in names],
    genre_names=vocab,
    source=src,
  )


@dataclasses.dataclass(frozen=True)
class Users:
  """User side information with the file's own user ids."""

  ids: np.ndarray  # int64[U]
  genders: np.ndarray  # int32[U]: 0 'F', 1 'M'
  ages: np.ndarray  # int64[U]: ML-1M age code (1, 18, 25, ...) or ML-100K age in years
  occupations: np.ndarray  # int32[U] index into occupation_names
  occupation_names: list[str]
  source: SourceFile


# ML-1M README: occupation codes 0..20.
ML1M_OCCUPATIONS = (
  "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
  "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
  "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
  "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip
_GENDERS = {"F": 0, "M": 1}


def read_users(src: SourceFile, occupation_src: SourceFile | None = None) -> Users:
  """Reads ML-1M users.dat ('UserID::Gender::Age::Occupation::Zip') or ML-100K u.user.

  ML-100K occupations are numbered in the order of `occupation_src` (u.occupation), or
  sorted by name when it is absent.
  """
  is_100k = src.basename == "u.user"
  if is_100k:
    rows = _split_fields(src, "latin-1", "|", ("id", "age", "gender", "occupation", "zip"))
    rows = [(n, [p[0], p[2], p[1], p[3]]) for n, p in rows]
    if occupation_src is not None:
      occ_names = [
        line.strip()
        for line in occupation_src.read_bytes().decode("latin-1").splitlines()
        if line.strip()
      ]
    else:
      occ_names = sorted({p[3].strip() for _, p in rows})
  else:
    fields = ("UserID", "Gender", "Age", "Occupation", "Zip")
    rows = [(n, p[:4]) for n, p in _split_fields(src, "latin-1", "::", fields)]
    occ_names = list(ML1M_OCCUPATIONS)
  occ_index = {o: j for j, o in enumerate(occ_names)}
  ids, genders, ages, occs, lines = [], [], [], [], []
  for n, (uid, gender, age, occ) in rows:
    ids.append(_int(src, n, "user id", uid))
    if gender.strip() not in _GENDERS:
      raise DataError(f"{src.name}, line {n}: gender {gender!r} is not 'F' or 'M'. Fix it.")
    genders.append(_GENDERS[gender.strip()])
    ages.append(_int(src, n, "age", age))
    if is_100k:
      if occ.strip() not in occ_index:
        raise DataError(
          f"{src.name}, line {n}: occupation {occ!r} is not listed in "
          f"{occupation_src.name if occupation_src else 'this file'}. Fix it."
        )
      occs.append(occ_index[occ.strip()])
    else:
      code = _int(src, n, "occupation", occ)
      if not 0 <= code < len(occ_names):
        raise DataError(f"{src.name}, line {n}: occupation {code} is not in 0..20. Fix it.")
      occs.append(code)
    lines.append(n)
  _check_unique(src, ids, lines, "user id")
  return Users(
    ids=np.array(ids, np.int64),
    genders=np.array(genders, np.int32),
    ages=np.array(ages, np.int64),
    occupations=np.array(occs, np.int32),
    occupation_names=occ_names,
    source=src,
  )


def read_item_map(src: SourceFile) -> tuple[np.ndarray, np.ndarray]:
  """Reads a `ncf_item_index<TAB>movielens_movie_id` map (a header line is allowed).

  Returns (ncf_items int64[K], movie_ids int64[K]); each NCF item appears once.
  """
  data = src.read_bytes()
  skip = 1 if _has_header(data) else 0
  _check_not_empty(src, _has_rows(data, skip), "item map")
  fields = ("ncf_item_index", "movielens_movie_id")
  try:
    rows = np.loadtxt(
      io.BytesIO(data), delimiter="\t", skiprows=skip, dtype=np.int64, comments=None, ndmin=2
    )
  except (ValueError, OverflowError):
    raise _first_bad_line(src, data, "\t", fields, "ii", skip) from None
  if rows.shape[1] != 2:
    raise _first_bad_line(src, data, "\t", fields, "ii", skip)
  lines = None
  items = rows[:, 0]
  order = np.argsort(items, kind="stable")
  dup = np.flatnonzero(np.diff(items[order]) == 0)
  if dup.size or items.min() < 0:
    lines = _line_numbers(data, skip)
    r = order[dup[0] + 1] if dup.size else int(np.argmin(items))
    raise DataError(
      f"{src.name}, line {lines[r]}: NCF item {items[r]} is negative or mapped twice; "
      "each NCF item must appear once. Fix the map."
    )
  return items.copy(), rows[:, 1].copy()
