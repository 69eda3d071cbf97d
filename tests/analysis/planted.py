"""Synthetic item embeddings with planted genre clusters, for the analysis tests."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

GENRES = ("Action", "Comedy", "Drama", "Horror")
# A few real-looking titles for look-up tests; item 5 and 6 share one, as in ML-100K.
NAMED = {0: "Star Wars (1977)", 1: "Star Trek: First Contact (1996)",
         2: "Shawshank Redemption, The (1994)", 5: "Chasing Amy (1997)",
         6: "Chasing Amy (1997)"}


@dataclasses.dataclass(frozen=True)
class Planted:
    """Item embeddings where items of one genre form one tight Gaussian cluster."""

    embeddings: np.ndarray  # (n_items, dim) float32, row = item id
    items: pd.DataFrame  # item_id, title, year, genres
    cluster: np.ndarray  # (n_items,) index into GENRES


def make_planted(n_items: int = 200, dim: int = 16, seed: int = 0) -> Planted:
    """``n_items`` items, each in one of ``len(GENRES)`` well-separated clusters."""
    rng = np.random.default_rng(seed)
    cluster = np.arange(n_items) % len(GENRES)
    rng.shuffle(cluster)
    centres = rng.normal(size=(len(GENRES), dim))
    centres *= 4.0 / np.linalg.norm(centres, axis=1, keepdims=True)
    embeddings = centres[cluster] + 0.3 * rng.normal(size=(n_items, dim))
    titles = [NAMED.get(i, f"Film {i} ({1950 + i % 50})") for i in range(n_items)]
    items = pd.DataFrame({
        "item_id": np.arange(n_items, dtype=np.int64),
        "title": titles,
        "year": pd.array([1950 + i % 50 for i in range(n_items)], dtype="Int64"),
        "genres": [(GENRES[c],) for c in cluster],
    })
    return Planted(embeddings.astype(np.float32), items, cluster)

