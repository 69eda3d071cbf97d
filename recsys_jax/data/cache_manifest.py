"""Verified caches: each cached file's size and SHA-256, recorded when it enters the cache and
checked when it is read.

A directory added to the data cache carries a manifest (:data:`MANIFEST_FILE`, JSON) listing
every file in it with its size and SHA-256, plus where the copy came from. The manifest is
written inside the directory before the directory is renamed into the cache, so the two appear
together or not at all.

Reading checks the size of each file it uses on every load (a ``stat``, free) and the SHA-256
on the file's first use in a process; a digest, once computed, is remembered for that path,
size, modification time and inode, so later loads in the same process skip it. ``verify=True``
(or ``RECSYS_JAX_VERIFY_CACHE=1`` in the environment) re-hashes on every load.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from recsys_jax.data.download import CACHE_ENV_VAR
from recsys_jax.data.errors import DataError
from recsys_jax.fileio import atomic_write_json

MANIFEST_FILE = ".recsys_jax_manifest.json"
MANIFEST_FORMAT = 1
VERIFY_ENV_VAR = "RECSYS_JAX_VERIFY_CACHE"

# (resolved path, size, mtime_ns, inode) -> SHA-256 computed in this process.
_DIGESTS: dict[tuple[str, int, int, int], str] = {}


class CacheDirError(OSError):
    """The cache directory cannot be created or written (names it and how to choose another)."""


@dataclasses.dataclass(frozen=True)
class FileRecord:
    """What a cached file must be: its size in bytes and its SHA-256 (hex)."""

    size: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A cached directory's manifest.

    Attributes:
      origin: where the copy came from (a URL or a wheel).
      checksum: the digest the source was verified with, e.g. ``"md5:..."``.
      retrieved_utc: when it was fetched (ISO 8601).
      files: relative POSIX path -> record, for every file of the directory.
    """

    origin: str
    checksum: str
    retrieved_utc: str
    files: Mapping[str, FileRecord]


def verify_requested(verify: bool = False) -> bool:
    """Whether every load must re-hash: ``verify`` or ``$RECSYS_JAX_VERIFY_CACHE`` set (not 0)."""
    return verify or os.environ.get(VERIFY_ENV_VAR, "").strip() not in ("", "0")


def sha256_of(path: str | os.PathLike, reuse: bool = True) -> str:
    """SHA-256 (hex) of a file; with ``reuse``, one computed earlier in this process for the
    same path, size, modification time and inode is returned without reading the file."""
    path = Path(path)
    info = path.stat()
    key = (str(path.resolve()), info.st_size, info.st_mtime_ns, info.st_ino)
    if reuse and key in _DIGESTS:
        return _DIGESTS[key]
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    _DIGESTS[key] = digest
    return digest


def record_file(path: str | os.PathLike) -> FileRecord:
    """The size and SHA-256 of a file as it is now."""
    return FileRecord(Path(path).stat().st_size, sha256_of(path, reuse=False))


def file_problem(path: str | os.PathLike, record: FileRecord, rehash: bool = False) -> str | None:
    """What is wrong with ``path`` compared with ``record`` (``None`` if nothing).

    The size is compared first (no read); the SHA-256 is computed unless this process already
    hashed the file unchanged, or always with ``rehash``.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size != record.size:
            return (f"has {size:,} bytes where {record.size:,} were recorded: it was truncated "
                    "or changed after it was cached")
        digest = sha256_of(path, reuse=not rehash)
    except FileNotFoundError:
        return "is missing"
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if digest != record.sha256:
        return (f"has SHA-256 {digest} where {record.sha256} was recorded: it was changed "
                "after it was cached")
    return None


def write_manifest(directory: str | os.PathLike, origin: str, checksum: str) -> Manifest:
    """Records every file under ``directory`` (size and SHA-256) in its manifest, atomically."""
    directory = Path(directory)
    files = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.name != MANIFEST_FILE:
            files[path.relative_to(directory).as_posix()] = record_file(path)
    manifest = Manifest(origin, checksum, datetime.datetime.now(datetime.UTC).isoformat(
        timespec="seconds"), files)
    atomic_write_json(directory / MANIFEST_FILE, {
        "format": MANIFEST_FORMAT, "origin": manifest.origin, "checksum": manifest.checksum,
        "retrieved_utc": manifest.retrieved_utc,
        "files": {name: dataclasses.asdict(record) for name, record in files.items()}})
    return manifest


def read_manifest(directory: str | os.PathLike) -> Manifest | None:
    """The manifest of ``directory``; ``None`` when it has none.

    Raises:
      DataError: naming the manifest when it is unreadable or malformed.
    """
    path = Path(directory) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise DataError(f"unreadable cache manifest ({err})", path=path) from err
    try:
        if data["format"] != MANIFEST_FORMAT:
            raise ValueError(f"format {data['format']!r}, expected {MANIFEST_FORMAT}")
        files = {str(name): FileRecord(_count(entry["size"]), str(entry["sha256"]))
                 for name, entry in data["files"].items()}
        return Manifest(str(data["origin"]), str(data["checksum"]), str(data["retrieved_utc"]),
                        files)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise DataError(f"malformed cache manifest ({err!r})", path=path) from err


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"size {value!r} is not a byte count")
    return value


def manifest_problems(directory: str | os.PathLike, manifest: Manifest, names: Iterable[str],
                      rehash: bool = False) -> list[str]:
    """Checks the files ``names`` of a cached directory against its manifest.

    A name in the manifest must exist with its recorded size and SHA-256; a name not in it must
    not exist (it would be a file added after the copy was cached).

    Returns:
      One ``"<path>: <problem>"`` line per problem; empty when all is well.
    """
    directory = Path(directory)
    problems = []
    for name in names:
        path = directory / name
        record = manifest.files.get(name)
        if record is None:
            if path.exists():
                problems.append(f"{path}: is not in the cache manifest (added after the copy "
                                "was cached)")
            continue
        problem = file_problem(path, record, rehash)
        if problem:
            problems.append(f"{path}: {problem}")
    return problems


def pinned_problems(directory: str | os.PathLike, pinned: Mapping[str, FileRecord],
                    rehash: bool = False) -> list[str]:
    """Checks the files of ``directory`` against known (pinned) records, as
    :func:`manifest_problems` does against a manifest."""
    directory = Path(directory)
    return [f"{directory / name}: {problem}" for name, record in pinned.items()
            if (problem := file_problem(directory / name, record, rehash))]


def writable_dir(directory: str | os.PathLike, what: str = "data cache") -> Path:
    """Creates ``directory`` if needed and proves it writable with a temporary file.

    Raises:
      CacheDirError: naming the directory, the reason and ``$RECSYS_JAX_DATA``.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        raise CacheDirError(
            f"cannot write to the {what} {directory} ({err.strerror or err}): make it "
            f"writable, or set {CACHE_ENV_VAR} (or pass cache_dir=) to a writable folder"
        ) from err
    return directory
