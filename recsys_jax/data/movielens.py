"""MovieLens loaders: ML-100K, ML-1M, ML-20M, ML-25M and ML-latest-small, each in its own format.

:func:`load_movielens` is the entry point. It looks for the data set in this order:

1. ``data_dir``, a directory the caller names (the data set's own folder, or its parent);
2. the cache (``cache_dir``, else ``$RECSYS_JAX_DATA``, else ``~/.cache/recsys_jax``) holding
   an already extracted copy;
3. the GroupLens zip, verified against the MD5 GroupLens publishes beside it (falling back to
   the digests below when that file cannot be fetched), then unpacked into the cache;
4. for ML-100K only: the copy inside the ``recbole==1.2.1`` wheel on PyPI (verified by the
   wheel's pinned SHA-256), whose tab-separated "atomic" files are cached as they are.

The ``read_*`` functions parse one directory in one format and are usable on their own. Every
problem with the files raises :class:`~recsys_jax.data.errors.DataError` naming the file, the
line where there is one, and what is wrong. Large rating files are parsed by pandas with
explicit dtypes; only when that fails are they re-scanned line by line to find the culprit.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

# Imported under another name: load_movielens has a parameter called ``download``.
from recsys_jax.data import download as download_module
from recsys_jax.data.dataset import Dataset
from recsys_jax.data.download import DownloadError
from recsys_jax.data.errors import ChecksumError, DataError
from recsys_jax.fileio import atomic_write_json

logger = logging.getLogger(__name__)

MOVIELENS_NAMES = ("ml-100k", "ml-1m", "ml-20m", "ml-25m", "ml-latest-small")

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens"
# Used only when the published ``<name>.zip.md5`` cannot be fetched. ML-latest-small changes
# over time, so it has no fixed digest: without the published one it is not downloaded.
GROUPLENS_MD5 = {
    "ml-100k": "0e33842e24a9c977be4e0107933c0723",
    "ml-1m": "c4d9eecfca2ab87c1945afe126590906",
    "ml-20m": "cd245b17a1ae2cc31bb14903e1204af3",
    "ml-25m": "6b51fb2759a8657d3bfcbfc42b592ada",
}

RECBOLE_REQUIREMENT = "recbole==1.2.1"
# PyPI files never change once uploaded, so the wheel's digest pins the data exactly.
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
RECBOLE_ML100K_DIR = "recbole/dataset_example/ml-100k"
RECBOLE_FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")
RECBOLE_CACHE_NAME = "ml-100k-recbole"

# Written into each directory this module adds to the cache, to say where it came from.
PROVENANCE_FILE = ".recsys_jax_source.json"

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western")
ML1M_GENRES = ML100K_GENRES[1:]
# The ML-20M/25M/latest README order; the files spell "Children" and add "IMAX".
CSV_GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western", "IMAX")
CSV_NO_GENRES = "(no genres listed)"

# From the ML-1M README ("Occupation is chosen from the following choices").
ML1M_OCCUPATIONS = {
    0: "other", 1: "academic/educator", 2: "artist", 3: "clerical/admin",
    4: "college/grad student", 5: "customer service", 6: "doctor/health care",
    7: "executive/managerial", 8: "farmer", 9: "homemaker", 10: "K-12 student", 11: "lawyer",
    12: "programmer", 13: "retired", 14: "sales/marketing", 15: "scientist",
    16: "self-employed", 17: "technician/engineer", 18: "tradesman/craftsman",
    19: "unemployed", 20: "writer"}

_INTEGER = re.compile(r"\s*[+-]?\d+\s*")
# What pandas accepts for an int64 column: also "881250949.0".
_PANDAS_INTEGER = re.compile(r"\s*[+-]?\d+(?:\.0*)?\s*")
_DECIMAL = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")
_TITLE_YEAR = re.compile(r"\((\d{4})(?:[-\u2013]\d{0,4})?\)")
_INT64_MAX = 2 ** 63 - 1


# --------------------------------------------------------------------------------------------
# Public entry point and source resolution.
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Layout:
    """One on-disk form of a data set: the files that identify it and how to read them."""
    required: tuple[str, ...]
    read: Callable[[Path], Dataset]


def load_movielens(name: str, data_dir: str | os.PathLike | None = None,
                   cache_dir: str | os.PathLike | None = None,
                   download: bool = True) -> Dataset:
    """Loads a MovieLens data set, from ``data_dir``, the cache or the internet, in that order.

    Args:
      name: one of :data:`MOVIELENS_NAMES`.
      data_dir: a directory holding the extracted data set (e.g. the ``ml-100k`` folder with
        ``u.data``, or its parent). Tried first; if it lacks the files a warning is logged and
        the cache is tried next.
      cache_dir: the data cache; default ``$RECSYS_JAX_DATA``, else ``~/.cache/recsys_jax``.
        Downloads are unpacked into ``<cache_dir>/<name>/`` (the ML-100K PyPI copy into
        ``<cache_dir>/ml-100k-recbole/``).
      download: whether to fetch the data set when neither ``data_dir`` nor the cache has it.

    Returns:
      The validated :class:`Dataset`; its ``source`` says where it came from.

    Raises:
      ValueError: for an unknown ``name``.
      DataError: when the files found are malformed (naming file and line).
      ChecksumError: when a download does not match its checksum (it is deleted).
      FileNotFoundError: when ``download`` is False and no copy was found.
      DownloadError: when every download route failed (each reason is listed).
    """
    if name not in MOVIELENS_NAMES:
        raise ValueError(f"unknown MovieLens data set {name!r}; choose from {MOVIELENS_NAMES}")
    layouts = _layouts(name)
    searched = []
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        candidates = [data_dir, data_dir / name]
        if name == "ml-100k":
            candidates.append(data_dir / RECBOLE_CACHE_NAME)
        found = _find(candidates, layouts)
        if found is not None:
            return _read(found, f"directory {found[0]}")
        searched.append(str(data_dir))
        logger.warning("%s: no %s data set there (looked for %s); trying the cache", data_dir,
                       name, _describe(layouts))

    cache = download_module.data_cache_dir(cache_dir)
    cached = [cache / name] + ([cache / RECBOLE_CACHE_NAME] if name == "ml-100k" else [])
    found = _find(cached, layouts)
    if found is not None:
        origin = _read_provenance(found[0])
        return _read(found, f"cache {found[0]}" + (f", from {origin}" if origin else ""))
    searched.append(str(cache))
    if not download:
        raise FileNotFoundError(f"{name} is in none of {searched} and download=False; pass "
                                "download=True or data_dir=<folder with the extracted files>")

    failures = []
    try:
        directory, origin = _fetch_grouplens(name, cache)
        return _read((directory, layouts[0]), origin)
    except DownloadError as err:
        failures.append(f"GroupLens: {err}")
        logger.warning("Could not download %s from GroupLens: %s", name, err)
    if name == "ml-100k":
        try:
            directory, origin = _fetch_recbole_ml100k(cache)
            return _read((directory, layouts[1]), origin)
        except DownloadError as err:
            failures.append(f"PyPI: {err}")
    raise DownloadError(f"could not obtain {name} (searched {searched}): " + "; ".join(failures)
                        + f". Download {GROUPLENS_URL}/{name}.zip yourself, unpack it and pass "
                        "data_dir=<the unpacked folder>")


def _layouts(name: str) -> list[_Layout]:
    if name == "ml-100k":
        return [_Layout(("u.data", "u.item"), read_ml100k),
                _Layout(RECBOLE_FILES[:2], read_recbole_ml100k)]
    if name == "ml-1m":
        return [_Layout(("ratings.dat", "movies.dat"), read_ml1m)]
    return [_Layout(("ratings.csv", "movies.csv"),
                    lambda directory: read_movielens_csv(directory, name))]


def _describe(layouts: Sequence[_Layout]) -> str:
    return " or ".join("+".join(layout.required) for layout in layouts)


def _holds(directory: Path, layout: _Layout) -> bool:
    return all((directory / f).is_file() for f in layout.required)


def _find(candidates: Sequence[Path], layouts: Sequence[_Layout]
          ) -> tuple[Path, _Layout] | None:
    for directory in candidates:
        for layout in layouts:
            if _holds(directory, layout):
                return directory, layout
    return None


def _read(found: tuple[Path, _Layout], source: str) -> Dataset:
    directory, layout = found
    dataset = dataclasses.replace(layout.read(directory), source=source)
    logger.info("Loaded %r", dataset)
    return dataset


def _read_provenance(directory: Path) -> str | None:
    try:
        return str(json.loads((directory / PROVENANCE_FILE).read_text("utf-8"))["origin"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_provenance(directory: Path, origin: str, checksum: str) -> None:
    atomic_write_json(directory / PROVENANCE_FILE, {
        "origin": origin, "checksum": checksum,
        "retrieved_utc": datetime.datetime.now(datetime.UTC).isoformat(
            timespec="seconds")})


def _fetch_grouplens(name: str, cache: Path) -> tuple[Path, str]:
    """Downloads, verifies and unpacks ``<name>.zip`` into ``cache/<name>``."""
    url = f"{GROUPLENS_URL}/{name}.zip"
    expected = download_module.published_md5(url)
    if expected is None:
        expected = GROUPLENS_MD5.get(name)
        if expected is None:
            raise DownloadError(f"refusing to download {url} unverified: GroupLens's {url}.md5 "
                                "could not be fetched and this data set has no fixed digest")
        logger.info("Using the known MD5 %s for %s", expected, url)
    layout = _layouts(name)[0]
    target = cache / name
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}.", suffix=".download", dir=cache) as tmp:
        archive = download_module.download_verified(url, Path(tmp) / f"{name}.zip", expected)
        with download_module.extracted_zip(archive, cache) as extracted:
            root = _find([extracted / name, extracted], [layout])
            if root is None:
                raise DataError(f"the archive holds no {name} data set (no folder with "
                                f"{_describe([layout])})", path=url)
            _write_provenance(root[0], url, f"md5:{expected}")
            download_module.publish_directory(root[0], target)
    if not _holds(target, layout):
        raise DataError(f"{target} exists but lacks {_describe([layout])}; remove it and retry")
    return target, f"{url}, MD5 verified, cached at {target}"


def _fetch_recbole_ml100k(cache: Path) -> tuple[Path, str]:
    """Fetches ML-100K from the recbole wheel on PyPI into ``cache/ml-100k-recbole``."""
    target = cache / RECBOLE_CACHE_NAME
    members = [f"{RECBOLE_ML100K_DIR}/{f}" for f in RECBOLE_FILES]
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".recbole.", suffix=".download") as tmp:
        wheel = download_module.run_pip_download(RECBOLE_REQUIREMENT, tmp)
        digest = download_module.file_digest(wheel, "sha256")
        if digest != RECBOLE_WHEEL_SHA256:
            raise ChecksumError(f"SHA-256 {digest} does not match the pinned "
                                f"{RECBOLE_WHEEL_SHA256} of {RECBOLE_REQUIREMENT}", path=wheel)
        with download_module.extracted_zip(wheel, cache, members=members) as extracted:
            root = extracted / RECBOLE_ML100K_DIR
            origin = f"PyPI wheel {wheel.name}, {RECBOLE_ML100K_DIR}"
            _write_provenance(root, origin, f"sha256:{digest}")
            download_module.publish_directory(root, target)
    if not all((target / f).is_file() for f in RECBOLE_FILES):
        raise DataError(f"{target} exists but lacks {RECBOLE_FILES}; remove it and retry")
    return target, f"{origin}, SHA-256 verified, cached at {target}"


# --------------------------------------------------------------------------------------------
# Readers, one per format.
# --------------------------------------------------------------------------------------------

def read_ml100k(directory: str | os.PathLike) -> Dataset:
    """Reads GroupLens's ML-100K files: ``u.data``, ``u.item`` and, if present, ``u.genre`` and
    ``u.user``.

    Raises:
      DataError: naming the file and line of the first problem.
    """
    directory = Path(directory)
    genre_file = directory / "u.genre"
    genre_names = _read_ml100k_genres(genre_file) if genre_file.is_file() else ML100K_GENRES
    items = _read_ml100k_items(directory / "u.item", genre_names)
    user_file = directory / "u.user"
    users = _read_pipe_users(user_file) if user_file.is_file() else None
    ratings_file = _RatingsFile(directory / "u.data", sep="\t")
    interactions = ratings_file.read((1.0, 5.0))
    _check_references(ratings_file, interactions, items, users)
    return Dataset("ml-100k", interactions, items, users, genre_names, (1.0, 5.0),
                   source=str(directory)).validate()


def read_recbole_ml100k(directory: str | os.PathLike) -> Dataset:
    """Reads ML-100K from RecBole's atomic files ``ml-100k.inter``, ``.item`` and ``.user``.

    Titles are rebuilt as ``"Title (year)"`` so they match ``u.item``; RecBole's placeholder
    for item 267 (``"unkonwn"``, sic) becomes the title ``"unknown"`` with no year.

    Raises:
      DataError: naming the file and line of the first problem.
    """
    directory = Path(directory)
    items = _read_recbole_items(directory / "ml-100k.item")
    user_file = directory / "ml-100k.user"
    users = _read_recbole_users(user_file) if user_file.is_file() else None
    ratings_file = _RatingsFile(directory / "ml-100k.inter", sep="\t",
                               header=("user_id", "item_id", "rating", "timestamp"))
    interactions = ratings_file.read((1.0, 5.0))
    _check_references(ratings_file, interactions, items, users)
    return Dataset("ml-100k", interactions, items, users, ML100K_GENRES, (1.0, 5.0),
                   source=str(directory)).validate()


def read_ml1m(directory: str | os.PathLike) -> Dataset:
    """Reads GroupLens's ML-1M files: ``ratings.dat``, ``movies.dat`` and, if present,
    ``users.dat`` (occupation codes mapped to the README's names, age codes kept as given).

    Raises:
      DataError: naming the file and line of the first problem.
    """
    directory = Path(directory)
    items = _read_ml1m_movies(directory / "movies.dat")
    user_file = directory / "users.dat"
    users = _read_ml1m_users(user_file) if user_file.is_file() else None
    ratings_file = _RatingsFile(directory / "ratings.dat", sep="::", encoding="latin-1")
    interactions = ratings_file.read((1.0, 5.0))
    _check_references(ratings_file, interactions, items, users)
    return Dataset("ml-1m", interactions, items, users, ML1M_GENRES, (1.0, 5.0),
                   source=str(directory)).validate()


def read_movielens_csv(directory: str | os.PathLike, name: str) -> Dataset:
    """Reads the CSV-format sets (ML-20M, ML-25M, ML-latest-small): ``ratings.csv`` and
    ``movies.csv``. There is no user table. Genres beyond the README's list are appended to
    ``genre_names`` in sorted order.

    Raises:
      DataError: naming the file and line of the first problem.
    """
    directory = Path(directory)
    items = _read_csv_movies(directory / "movies.csv")
    ratings_file = _RatingsFile(directory / "ratings.csv", sep=",",
                               header=("userId", "movieId", "rating", "timestamp"))
    interactions = ratings_file.read((0.5, 5.0))
    _check_references(ratings_file, interactions, items, None)
    seen = {genre for genres in items["genres"] for genre in genres}
    genre_names = CSV_GENRES + tuple(sorted(seen - set(CSV_GENRES)))
    return Dataset(name, interactions, items, None, genre_names, (0.5, 5.0),
                   source=str(directory)).validate()


def title_year(title: str) -> int | None:
    """The release year printed in a MovieLens title, e.g. 1977 for ``"Star Wars (1977)"``.

    Takes the last parenthesised four-digit year (``"... (1995) (V)"`` gives 1995; a range
    like ``"(2007-2013)"`` gives its start); ``None`` when the title has none.
    """
    years = _TITLE_YEAR.findall(title)
    return int(years[-1]) if years else None


# --------------------------------------------------------------------------------------------
# Rating files: fast pandas parse, line-by-line re-scan only to report a problem.
# --------------------------------------------------------------------------------------------

_RATING_COLUMNS = ("user_id", "item_id", "rating", "timestamp")


@dataclasses.dataclass(frozen=True)
class _RatingsFile:
    """A ratings file: one event per line, four fields (user, item, rating, timestamp).

    Attributes:
      path: the file.
      sep: field separator as it appears in the file (``"::"`` for ML-1M).
      header: names of the user, item, rating and timestamp columns when the first line is a
        header (matched ignoring RecBole's ``:type`` suffix); ``None`` when there is none.
      encoding: text encoding.
    """

    path: Path
    sep: str
    header: tuple[str, str, str, str] | None = None
    encoding: str = "utf-8"

    def read(self, scale: tuple[float, float]) -> pd.DataFrame:
        """Parses the file into ``user_id``, ``item_id`` (int64), ``rating`` (float32) and
        ``timestamp`` (int64) columns, in file order.

        Raises:
          DataError: naming the file, the first bad line and what is wrong with it.
        """
        columns = self._columns()
        try:
            frame = self._parse(columns)
        except (ValueError, OverflowError) as err:  # Includes pandas' ParserError.
            self._raise_first_bad_line(columns, scale, self._failing_chunk_start(columns))
            raise DataError(f"cannot parse ratings: {err}", path=self.path) from err
        ratings = frame["rating"].to_numpy()
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(ratings) | (ratings < scale[0]) | (ratings > scale[1])
        bad |= frame["_extra"].notna().to_numpy()
        if bad.any():
            self._raise_first_bad_line(columns, scale, int(np.flatnonzero(bad)[0]))
            raise DataError("has malformed ratings", path=self.path)
        if len(frame) == 0:
            raise DataError("holds no ratings", path=self.path)
        return frame.drop(columns="_extra")

    def line_of_row(self, row: int) -> int | None:
        """The line number of the ``row``-th (0-based) data row, blank lines skipped."""
        header_lines = self._columns().header_lines
        first = next(_numbered_lines(self.path, self.encoding, header_lines, row), None)
        return None if first is None else first[0]

    def _columns(self) -> _RatingColumns:
        if self.header is None:
            if self.path.stat().st_size == 0:
                raise DataError("is empty", path=self.path)
            return _RatingColumns((0, 1, 2, 3), 4, 0)
        first = next(_numbered_lines(self.path, self.encoding), None)
        if first is None:
            raise DataError("is empty", path=self.path)
        number, text = first
        names = [_column_name(field) for field in text.split(self.sep)]
        missing = [column for column in self.header if column not in names]
        if missing:
            raise DataError(f"header lacks column(s) {missing}; found {names}",
                            path=self.path, line=number)
        return _RatingColumns(tuple(names.index(c) for c in self.header), len(names), number)

    def _parse(self, columns: _RatingColumns, chunksize: int | None = None):
        """One typed frame, or an iterator of frames when ``chunksize`` is given."""
        source: Path | io.BytesIO = self.path
        sep = self.sep
        if len(sep) > 1:  # The fast C parser takes one-character separators only.
            source = io.BytesIO(self.path.read_bytes().replace(sep.encode(self.encoding), b"\t"))
            sep = "\t"
        n_fields = columns.n_fields
        dtypes = dict(zip(columns.positions, (np.int64, np.int64, np.float32, np.int64)))
        # One column more than expected: it stays empty unless a line has an extra field.
        dtypes[n_fields] = np.float32
        result = pd.read_csv(
            source, sep=sep, header=None, names=list(range(n_fields + 1)), dtype=dtypes,
            skiprows=columns.header_lines, encoding=self.encoding, engine="c",
            quoting=csv.QUOTE_NONE, skip_blank_lines=True, chunksize=chunksize)
        if chunksize is not None:
            return result
        frame = result[[*columns.positions, n_fields]]
        frame.columns = [*_RATING_COLUMNS, "_extra"]
        return frame

    def _failing_chunk_start(self, columns: _RatingColumns, chunksize: int = 250_000) -> int:
        """Re-parses in chunks to find roughly where the parse fails (the first row of the
        failing chunk), so only that chunk needs checking line by line."""
        start = 0
        try:
            for chunk in self._parse(columns, chunksize):
                start += len(chunk)
        except (ValueError, OverflowError):
            return start
        return 0

    def _raise_first_bad_line(self, columns: _RatingColumns, scale: tuple[float, float],
                              start_row: int = 0) -> None:
        """Checks lines from data row ``start_row`` on; raises at the first bad one."""
        for start in dict.fromkeys((start_row, 0)):  # Then from the top, should it be needed.
            for number, text in _numbered_lines(self.path, self.encoding,
                                                columns.header_lines, start):
                problem = _rating_line_problem(text.split(self.sep), columns, scale)
                if problem:
                    raise DataError(f"{problem}: {_clip(text)!r}", path=self.path, line=number)


@dataclasses.dataclass(frozen=True)
class _RatingColumns:
    """Where the user, item, rating and timestamp fields sit in a ratings file's lines."""
    positions: tuple[int, ...]
    n_fields: int
    header_lines: int  # Lines up to and including the header; 0 without one.


def _rating_line_problem(fields: list[str], columns: _RatingColumns,
                         scale: tuple[float, float]) -> str | None:
    """Says what is wrong with one split ratings line, or ``None`` if nothing is."""
    if len(fields) != columns.n_fields:
        return f"expected {columns.n_fields} fields, found {len(fields)}"
    user, item, rating, timestamp = (fields[p] for p in columns.positions)
    for what, value in (("user id", user), ("item id", item), ("timestamp", timestamp)):
        if not value.strip():
            return f"{what} is missing"
        if not _PANDAS_INTEGER.fullmatch(value):
            return f"{what} {value!r} is not an integer"
        if abs(int(float(value))) > _INT64_MAX:
            return f"{what} {value!r} does not fit in 64 bits"
    if not rating.strip():
        return "rating is missing"
    if not _DECIMAL.fullmatch(rating):
        return f"rating {rating!r} is not a finite number"
    value = float(rating)
    if not scale[0] <= value <= scale[1]:
        return f"rating {value:g} is outside the scale [{scale[0]:g}, {scale[1]:g}]"
    return None


def _check_references(ratings_file: _RatingsFile, interactions: pd.DataFrame,
                      items: pd.DataFrame, users: pd.DataFrame | None) -> None:
    """Every rated item must be in the catalogue (and every user in the user table)."""
    checks = [("item", "item_id", items, "catalogue")]
    if users is not None:
        checks.append(("user", "user_id", users, "user table"))
    for what, column, table, table_name in checks:
        unknown = ~interactions[column].isin(table[column]).to_numpy()
        if unknown.any():
            row = int(np.flatnonzero(unknown)[0])
            raise DataError(
                f"{what} {int(interactions[column].iloc[row])} is not in the {table_name} "
                f"({int(unknown.sum())} rating(s) refer to unknown {what}s)",
                path=ratings_file.path, line=ratings_file.line_of_row(row))


def _column_name(header_field: str) -> str:
    """``"user_id:token"`` (RecBole's typed header) -> ``"user_id"``; plain names unchanged."""
    return header_field.strip().split(":", 1)[0]


# --------------------------------------------------------------------------------------------
# Small delimited files (catalogues, users, genres), read line by line.
# --------------------------------------------------------------------------------------------

def _numbered_lines(path: Path, encoding: str, skip: int = 0,
                    skip_rows: int = 0) -> Iterator[tuple[int, str]]:
    """Yields (1-based line number, text) for each non-blank line after the first ``skip``
    lines, leaving out the first ``skip_rows`` non-blank ones (counted, not decoded)."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError as err:
        raise DataError("file not found", path=path) from err
    with handle:
        for number, raw in enumerate(handle, start=1):
            if number <= skip:
                continue
            raw = raw.rstrip(b"\r\n")
            if not raw:
                continue
            if skip_rows:
                skip_rows -= 1
                continue
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as err:
                raise DataError(f"is not valid {encoding} text (byte {err.start})",
                                path=path, line=number) from err
            yield number, text


def _split_lines(path: Path, sep: str, encoding: str,
                 n_fields: int | None = None) -> list[tuple[int, list[str]]]:
    """All non-blank lines, split; checks the field count when ``n_fields`` is given."""
    rows = []
    for number, text in _numbered_lines(path, encoding):
        fields = text.split(sep)
        if n_fields is not None and len(fields) != n_fields:
            raise DataError(f"expected {n_fields} {sep!r}-separated fields, found "
                            f"{len(fields)}: {_clip(text)!r}", path=path, line=number)
        rows.append((number, fields))
    if not rows:
        raise DataError("is empty", path=path)
    return rows


def _header_index(path: Path, rows: list[tuple[int, list[str]]],
                  names: Sequence[str]) -> tuple[list[int], list[tuple[int, list[str]]]]:
    """Positions of ``names`` in a header line, and the data rows after it (field counts
    checked against the header)."""
    number, header = rows[0]
    found = [_column_name(field) for field in header]
    missing = [name for name in names if name not in found]
    if missing:
        raise DataError(f"header lacks column(s) {missing}; found {found}", path=path,
                        line=number)
    for number, fields in rows[1:]:
        if len(fields) != len(header):
            raise DataError(f"expected {len(header)} fields like the header, found "
                            f"{len(fields)}", path=path, line=number)
    if len(rows) == 1:
        raise DataError("has a header but no data", path=path)
    return [found.index(name) for name in names], rows[1:]


def _parse_id(value: str, what: str, path: Path, line: int) -> int:
    if not _INTEGER.fullmatch(value):
        raise DataError(f"{what} {value!r} is not an integer", path=path, line=line)
    number = int(value)
    if abs(number) > _INT64_MAX:
        raise DataError(f"{what} {value!r} does not fit in 64 bits", path=path, line=line)
    return number


def _check_unique(ids: list[int], lines: list[int], what: str, path: Path) -> None:
    seen: dict[int, int] = {}
    for value, line in zip(ids, lines):
        if value in seen:
            raise DataError(f"{what} {value} is listed twice (first on line {seen[value]})",
                            path=path, line=line)
        seen[value] = line


def _items_frame(ids: list[int], titles: list[str], genres: list[tuple[str, ...]]
                 ) -> pd.DataFrame:
    return pd.DataFrame({
        "item_id": np.asarray(ids, dtype=np.int64),
        "title": pd.Series(titles, dtype=object).astype(str),
        "year": pd.array([title_year(t) for t in titles], dtype="Int64"),
        "genres": pd.Series(genres, dtype=object),
    })


def _users_frame(ids: list[int], ages: list[int], genders: list[str], occupations: list[str],
                 zips: list[str]) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": np.asarray(ids, dtype=np.int64),
        "age": np.asarray(ages, dtype=np.int64),
        "gender": pd.Series(genders, dtype=object).astype(str),
        "occupation": pd.Series(occupations, dtype=object).astype(str),
        "zip": pd.Series(zips, dtype=object).astype(str),
    })


def _ordered_genres(names: Sequence[str], canonical: Sequence[str]) -> tuple[str, ...]:
    order = {genre: i for i, genre in enumerate(canonical)}
    return tuple(sorted(set(names), key=lambda genre: (order.get(genre, len(order)), genre)))


def _read_ml100k_genres(path: Path) -> tuple[str, ...]:
    names = []
    for number, (name, index) in _split_lines(path, "|", "latin-1", n_fields=2):
        if _parse_id(index, "genre index", path, number) != len(names):
            raise DataError(f"genre index {index!r} is out of order; expected {len(names)}",
                            path=path, line=number)
        names.append(name)
    return tuple(names)


def _read_ml100k_items(path: Path, genre_names: Sequence[str]) -> pd.DataFrame:
    ids, lines, titles, genres = [], [], [], []
    rows = _split_lines(path, "|", "latin-1", n_fields=5 + len(genre_names))
    for number, fields in rows:
        ids.append(_parse_id(fields[0], "item id", path, number))
        lines.append(number)
        titles.append(fields[1].strip())
        flags = fields[5:]
        for genre, flag in zip(genre_names, flags):
            if flag not in ("0", "1"):
                raise DataError(f"genre flag for {genre!r} is {flag!r}, expected 0 or 1",
                                path=path, line=number)
        genres.append(tuple(g for g, flag in zip(genre_names, flags) if flag == "1"))
    _check_unique(ids, lines, "item", path)
    return _items_frame(ids, titles, genres)


def _read_pipe_users(path: Path) -> pd.DataFrame:
    """ML-100K ``u.user``: id|age|gender|occupation|zip."""
    return _users_from_rows(path, _split_lines(path, "|", "latin-1", n_fields=5))


def _users_from_rows(path: Path, rows) -> pd.DataFrame:
    """Users from ``(line number, (id, age, gender, occupation, zip))`` rows."""
    columns: list[list] = [[], [], [], [], []]
    lines = []
    for number, (uid, age, gender, occupation, zip_code) in rows:
        columns[0].append(_parse_id(uid, "user id", path, number))
        columns[1].append(_parse_id(age, "age", path, number))
        for column, value in zip(columns[2:], (gender, occupation, zip_code)):
            column.append(value.strip())
        lines.append(number)
    _check_unique(columns[0], lines, "user", path)
    return _users_frame(*columns)


def _read_recbole_items(path: Path) -> pd.DataFrame:
    rows = _split_lines(path, "\t", "utf-8")
    (id_at, title_at, year_at, class_at), rows = _header_index(
        path, rows, ("item_id", "movie_title", "release_year", "class"))
    ids, lines, titles, genres = [], [], [], []
    for number, fields in rows:
        ids.append(_parse_id(fields[id_at], "item id", path, number))
        lines.append(number)
        titles.append(_recbole_title(fields[title_at].strip(), fields[year_at].strip()))
        names = fields[class_at].split()
        unknown = [name for name in names if name not in ML100K_GENRES]
        if unknown:
            raise DataError(f"unknown genre(s) {unknown}; ML-100K has {list(ML100K_GENRES)}",
                            path=path, line=number)
        genres.append(_ordered_genres(names, ML100K_GENRES))
    _check_unique(ids, lines, "item", path)
    return _items_frame(ids, titles, genres)


def _recbole_title(title: str, year: str) -> str:
    """Rebuilds ``u.item``'s title from RecBole's split title and year."""
    if title == "unkonwn":  # RecBole's misspelt placeholder for u.item's "unknown".
        title = "unknown"
    if not year or year == "unkonwn":
        return title
    return f"{title} ({year})"


def _read_recbole_users(path: Path) -> pd.DataFrame:
    rows = _split_lines(path, "\t", "utf-8")
    positions, rows = _header_index(
        path, rows, ("user_id", "age", "gender", "occupation", "zip_code"))
    return _users_from_rows(
        path, ((number, tuple(fields[p] for p in positions)) for number, fields in rows))


def _read_ml1m_movies(path: Path) -> pd.DataFrame:
    """ML-1M ``movies.dat``: MovieID::Title::Genres (``|``-separated), latin-1."""
    ids, lines, titles, genres = [], [], [], []
    for number, (mid, title, genre_field) in _split_lines(path, "::", "latin-1", n_fields=3):
        ids.append(_parse_id(mid, "movie id", path, number))
        lines.append(number)
        titles.append(title.strip())
        names = [g for g in genre_field.strip().split("|") if g]
        unknown = [name for name in names if name not in ML1M_GENRES]
        if unknown:
            raise DataError(f"unknown genre(s) {unknown}; ML-1M has {list(ML1M_GENRES)}",
                            path=path, line=number)
        genres.append(_ordered_genres(names, ML1M_GENRES))
    _check_unique(ids, lines, "movie", path)
    return _items_frame(ids, titles, genres)


def _read_ml1m_users(path: Path) -> pd.DataFrame:
    """ML-1M ``users.dat``: UserID::Gender::Age::Occupation::Zip-code."""
    columns: list[list] = [[], [], [], [], []]
    lines = []
    for number, (uid, gender, age, occupation, zip_code) in _split_lines(
            path, "::", "latin-1", n_fields=5):
        columns[0].append(_parse_id(uid, "user id", path, number))
        columns[1].append(_parse_id(age, "age", path, number))
        columns[2].append(gender.strip())
        code = _parse_id(occupation, "occupation code", path, number)
        if code not in ML1M_OCCUPATIONS:
            raise DataError(f"occupation code {code} is not one of 0..20", path=path,
                            line=number)
        columns[3].append(ML1M_OCCUPATIONS[code])
        columns[4].append(zip_code.strip())
        lines.append(number)
    _check_unique(columns[0], lines, "user", path)
    return _users_frame(*columns)


def _read_csv_movies(path: Path) -> pd.DataFrame:
    """ML-20M/25M/latest ``movies.csv``: movieId,title,genres with quoted titles."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise DataError("file not found", path=path) from err
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError("is not valid UTF-8 text", path=path,
                        line=data.count(b"\n", 0, err.start) + 1) from err
    ids, lines, titles, genres = [], [], [], []
    positions = None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        for fields in reader:
            if not fields:
                continue
            number = reader.line_num
            if positions is None:
                found = [f.strip() for f in fields]
                missing = [c for c in ("movieId", "title", "genres") if c not in found]
                if missing:
                    raise DataError(f"header lacks column(s) {missing}; found {found}",
                                    path=path, line=number)
                positions = [found.index(c) for c in ("movieId", "title", "genres")]
                width = len(found)
                continue
            if len(fields) != width:
                raise DataError(f"expected {width} comma-separated fields, found {len(fields)} "
                                "(quote titles that hold commas)", path=path, line=number)
            mid, title, genre_field = (fields[p] for p in positions)
            ids.append(_parse_id(mid, "movie id", path, number))
            lines.append(number)
            titles.append(title.strip())
            names = [] if genre_field.strip() == CSV_NO_GENRES else [
                g for g in genre_field.strip().split("|") if g]
            genres.append(_ordered_genres(names, CSV_GENRES))
    except csv.Error as err:
        raise DataError(f"malformed CSV: {err}", path=path, line=reader.line_num) from err
    if positions is None:
        raise DataError("is empty", path=path)
    if not ids:
        raise DataError("has a header but no data", path=path)
    _check_unique(ids, lines, "movie", path)
    return _items_frame(ids, titles, genres)


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
