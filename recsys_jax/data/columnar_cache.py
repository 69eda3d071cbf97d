"""A binary columnar cache of parsed tables: one ``.npy`` per column, tied to the files they were
parsed from.

Parsing ML-20M's ``ratings.csv`` (20M lines) takes seconds; reading back four ``.npy`` files
takes a fraction of one. :func:`cached_frame` returns a table from its entry when the entry
was parsed from exactly the current source files, and otherwise parses them (with the caller's
careful parser, whose errors name the file and line) and stores the result.

An entry is a folder (e.g. ``<data cache>/columnar/ml-20m/``) holding one ``<column>.npy`` per
column (saved without pickles) and a cache manifest (:mod:`recsys_jax.data.cache_manifest`:
each file's size and SHA-256) whose ``checksum`` is the entry's *key*: a SHA-256 over
:data:`FORMAT_VERSION`, the parser's version, and each source file's name, size and SHA-256
(:func:`source_key`). The folder is written beside its destination and renamed into place
complete, so a reader never sees half an entry.

Reading an entry checks, in order: the manifest is readable and records this key (else the
entry is *stale*: the sources changed, so it is rebuilt); every column file has its recorded
size (every load) and SHA-256 (first use in a process, or every load with ``rehash``); each
loads without pickles, with the expected dtype, one dimension, and the same length as the
others. An entry that fails any check is *corrupt*: a warning names the file and the problem,
and the table is parsed again and the entry replaced. A corrupt entry is never read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_jax.data import cache_manifest
from recsys_jax.data.download import CACHE_ENV_VAR, replace_directory
from recsys_jax.data.errors import DataError

logger = logging.getLogger(__name__)

CACHE_SUBDIR = "columnar"
# Bump when the layout of an entry changes: every older entry then reads as stale.
FORMAT_VERSION = 1

Columns = Sequence[tuple[str, np.dtype]]


class EntryProblem(Exception):
    """Why a cached entry cannot be used (the message names the file and the problem)."""


@dataclasses.dataclass(frozen=True)
class ColumnarCache:
    """Where the entries live and how thoroughly they are checked.

    Attributes:
      root: the folder holding one entry per table, normally ``<data cache>/columnar``.
      rehash: re-hash every file on every load (``verify=True`` or
        ``$RECSYS_JAX_VERIFY_CACHE``); otherwise SHA-256s are computed once per process and
        remembered for an unchanged file (path, size, modification time, inode).
    """

    root: Path
    rehash: bool = False

    def entry(self, name: str) -> Path:
        """The folder of the entry called ``name``."""
        return self.root / name


def source_key(sources: Sequence[str | os.PathLike], parser: str,
               rehash: bool = False) -> str:
    """The key of a table parsed from ``sources`` by ``parser``: SHA-256 (hex) over the cache
    format, ``parser`` (name and version of the parsing code) and each source file's name,
    size and SHA-256.

    Raises:
      OSError: when a source cannot be read.
    """
    record = {"format": FORMAT_VERSION, "parser": parser, "sources": []}
    for source in sources:
        path = Path(source)
        record["sources"].append([path.name, path.stat().st_size,
                                  cache_manifest.sha256_of(path, reuse=not rehash)])
    return hashlib.sha256(json.dumps(record).encode("utf-8")).hexdigest()


def cached_frame(cache: ColumnarCache, name: str, key: str, columns: Columns,
                 parse: Callable[[], pd.DataFrame], origin: str) -> pd.DataFrame:
    """The table ``name`` from its entry when that was stored under ``key``; else ``parse()``
    it and store it.

    Args:
      cache: where the entries live.
      name: the entry's name (one entry per name: a table parsed from other sources replaces
        it).
      key: :func:`source_key` of the files ``parse`` reads.
      columns: ``(column, dtype)`` of the table, in order.
      parse: parses the sources into a frame with exactly ``columns`` (its errors propagate;
        nothing is stored then).
      origin: what the table was parsed from, recorded in the entry's manifest.

    Returns:
      The frame: read from the entry, or parsed. A stored entry that cannot be written (e.g. a
      read-only cache) is only a warning.
    """
    entry = cache.entry(name)
    try:
        frame = read_entry(entry, key, columns, cache.rehash)
    except EntryProblem as problem:
        logger.warning("Not using the cached columns %s: %s. Parsing %s again and replacing "
                       "them.", entry, problem, origin)
    else:
        if frame is not None:
            logger.info("Read %s from the columnar cache %s", origin, entry)
            return frame
    frame = parse()
    _check_frame(frame, columns)
    try:
        write_entry(entry, key, frame, origin)
    except OSError as err:
        logger.warning("Could not store the parsed columns of %s in %s (%s); they will be "
                       "parsed again next time. Set %s (or pass cache_dir=) to a writable "
                       "folder to keep them.", origin, entry, err.strerror or err,
                       CACHE_ENV_VAR)
    else:
        logger.info("Stored the parsed columns of %s in %s", origin, entry)
    return frame


def read_entry(entry: Path, key: str, columns: Columns, rehash: bool = False
               ) -> pd.DataFrame | None:
    """The frame stored in ``entry`` under ``key``; ``None`` when there is no entry or it was
    stored from other sources (stale).

    Raises:
      EntryProblem: when the entry is corrupt (unreadable manifest, a file missing, changed,
        pickled, of the wrong dtype or shape).
    """
    try:
        manifest = cache_manifest.read_manifest(entry)
    except DataError as err:
        raise EntryProblem(str(err)) from err
    if manifest is None:
        return None
    if manifest.checksum != _checksum(key):
        logger.info("The cached columns %s were parsed from other source files; rebuilding "
                    "them", entry)
        return None
    names = [_file_name(column) for column, _ in columns]
    problems = [f"{entry / n}: is not in the cache manifest" for n in names
                if n not in manifest.files]
    problems += cache_manifest.manifest_problems(
        entry, manifest, [n for n in names if n in manifest.files], rehash)
    if problems:
        raise EntryProblem("; ".join(problems))
    arrays = {}
    for column, dtype in columns:
        path = entry / _file_name(column)
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:  # Pickled, truncated, bad header.
            raise EntryProblem(f"{path}: cannot be loaded without pickles ({err})") from err
        if array.dtype != np.dtype(dtype) or array.ndim != 1:
            raise EntryProblem(f"{path}: holds a {array.dtype} array of shape {array.shape}, "
                               f"expected a 1-D {np.dtype(dtype)} column")
        arrays[column] = array
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) > 1:
        raise EntryProblem(f"{entry}: its columns have different lengths "
                           f"{ {c: len(a) for c, a in arrays.items()} }")
    # copy=False: the loaded arrays become the frame's columns without another copy.
    return pd.DataFrame(arrays, copy=False)


def write_entry(entry: Path, key: str, frame: pd.DataFrame, origin: str) -> None:
    """Stores ``frame``'s columns under ``key`` in ``entry``, replacing what is there; the
    entry appears complete or not at all.

    Raises:
      OSError: when the cache cannot be written (nothing is left behind).
    """
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".columnar", dir=entry.parent))
    try:
        for column in frame.columns:
            with open(tmp / _file_name(column), "wb") as out:
                np.save(out, frame[column].to_numpy(), allow_pickle=False)
        cache_manifest.write_manifest(tmp, origin, _checksum(key))
        replace_directory(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # Gone already unless something failed.


def _checksum(key: str) -> str:
    return f"sources-sha256:{key}"


def _file_name(column: str) -> str:
    return f"{column}.npy"


def _check_frame(frame: pd.DataFrame, columns: Columns) -> None:
    """The parser must return exactly the declared columns: a mismatch is a bug, not data."""
    found = [(c, frame[c].dtype) for c in frame.columns]
    if found != [(c, np.dtype(d)) for c, d in columns]:
        raise TypeError(f"the parser returned columns {found}, expected {list(columns)}")
