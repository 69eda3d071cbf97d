"""Atomic file writes: a reader never sees a half-written cache, checkpoint or export.

Every writer goes to a temporary file in the destination directory and is renamed over the
target only once complete (``os.replace`` is atomic within one file system).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path beside ``target``; renames it onto ``target`` on success.

    On any exception the temporary file is removed and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates files readable by the owner only; give the result the permissions
        # an ordinary open() would have (0666 less the umask).
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@functools.lru_cache(maxsize=1)
def _current_umask() -> int:
    # os.umask can only be read by setting it; do that once, not on every write.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    """Writes UTF-8 ``text`` to ``target`` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """``obj`` with NumPy scalars made Python numbers, keys made strings, and NaN/inf made
    ``None`` (strict JSON has no NaN; Python would otherwise write the invalid token)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


def atomic_write_json(target: str | os.PathLike, obj: Any) -> None:
    """Writes ``obj`` as indented JSON to ``target`` atomically (see ``json_safe``)."""
    atomic_write_text(target, json.dumps(json_safe(obj), indent=2, sort_keys=True,
                                         allow_nan=False) + "\n")


def atomic_save_npy(target: str | os.PathLike, array: np.ndarray) -> None:
    """Saves ``array`` as ``.npy`` atomically (never with pickled objects)."""
    with atomic_path(target, suffix=".npy") as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(array), allow_pickle=False)


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """Loads a ``.npy`` file, refusing pickled object arrays."""
    return np.load(path, allow_pickle=False)
