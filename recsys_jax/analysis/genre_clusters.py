"""Do item embeddings cluster by genre? A nearest-neighbour score with a permutation test.

For each item, take its k nearest neighbours by cosine similarity and count the share that
share at least one genre with it; the score is that share averaged over items. Popular genres
make the share large even for meaningless embeddings (two random films both being dramas is
likely), so the score is compared with a permutation null: the genre assignments are shuffled
across items, keeping the neighbour graph and the genre frequencies, and the score recomputed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from recsys_jax.analysis.similar import item_rows


@dataclasses.dataclass(frozen=True)
class GenreClusterScore:
    """The observed genre-neighbour share against its permutation null.

    Attributes:
      observed: mean over items of the share of their k nearest neighbours that share at
        least one genre with them.
      null_mean: mean of the same statistic over genre permutations.
      null_std: standard deviation of the statistic over genre permutations.
      p_value: ``(1 + #{null >= observed}) / (1 + n_permutations)``, one-sided; its smallest
        possible value is ``1 / (1 + n_permutations)``.
      k: neighbours per item.
      n_items: items that took part (those with a genre and a non-zero embedding).
      n_permutations: size of the null sample.
    """

    observed: float
    null_mean: float
    null_std: float
    p_value: float
    k: int
    n_items: int
    n_permutations: int

    def format(self) -> str:
        """One line for logs and reports."""
        return (f"Genre-cluster score (k={self.k}, {self.n_items} items): "
                f"observed {self.observed:.3f} vs. shuffled genres "
                f"{self.null_mean:.3f} ± {self.null_std:.3f} "
                f"({self.n_permutations} permutations), p = {self.p_value:.3g}")


# Labels that say the genre is not known rather than name one (ML-100K's "unknown" flag; the
# CSV data sets' marker, should a table keep it): two such items do not share a genre.
PLACEHOLDER_GENRES = frozenset({"unknown", "(no genres listed)"})


def genres_by_row(items: pd.DataFrame, num_rows: int) -> list[tuple[str, ...]]:
    """Lines the items table up with embedding rows (row ``r`` holds item id ``r``).

    Rows the table does not list get no genres, and ``PLACEHOLDER_GENRES`` are dropped.

    Raises:
      ValueError: when the table holds item ids that are not rows of the embedding matrix,
        which means it was encoded with a different id mapping.
    """
    item_ids = item_rows(items, num_rows)
    genres: list[tuple[str, ...]] = [()] * num_rows
    for item_id, item_genres in zip(item_ids, items["genres"]):
        genres[item_id] = tuple(g for g in item_genres if g not in PLACEHOLDER_GENRES)
    return genres


def neighbour_indices(embeddings: np.ndarray, k: int) -> np.ndarray:
    """Each row's ``k`` nearest other rows by cosine distance, nearest first, shape ``(n, k)``.

    A row is never its own neighbour, even when another row is an exact duplicate of it.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    n = len(embeddings)
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for {n} items, got {k}")
    index = NearestNeighbors(n_neighbors=k, metric="cosine").fit(embeddings)
    # kneighbors() without a query set leaves each point out of its own neighbour list.
    return index.kneighbors(return_distance=False)


def genre_cluster_score(item_embeddings: np.ndarray,
                        item_genres: Sequence[Sequence[str]],
                        *,
                        k: int = 10,
                        n_permutations: int = 1000,
                        seed: int = 0,
                        mask: np.ndarray | None = None) -> GenreClusterScore:
    """Scores how strongly item embeddings group items of the same genre.

    Items without a genre (nothing to share) and items with an all-zero embedding (cosine
    undefined) are left out, both as queries and as neighbours.

    Args:
      item_embeddings: ``(num_items, dim)``, row ``r`` is item ``r``.
      item_genres: one tuple of genre names per row (see ``genres_by_row``).
      k: neighbours per item.
      n_permutations: genre shuffles in the null sample.
      seed: seed of the shuffles.
      mask: optional boolean ``(num_items,)``; only items where it is true take part, e.g.
        items with enough ratings for their embedding to have moved away from its init.

    Returns:
      The observed score, the null distribution's mean and std, and the permutation p-value.
    """
    embeddings = np.asarray(item_embeddings)
    if embeddings.ndim != 2:
        raise ValueError(f"item_embeddings must be 2-D, got shape {embeddings.shape}")
    if len(item_genres) != len(embeddings):
        raise ValueError(f"{len(item_genres)} genre tuples for {len(embeddings)} embedding rows")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1, got {n_permutations}")

    keep = (np.linalg.norm(embeddings, axis=1) > 0) & np.array(
        [len(g) > 0 for g in item_genres], dtype=bool)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(embeddings),):
            raise ValueError(f"mask has shape {mask.shape}, expected ({len(embeddings)},)")
        keep &= mask
    rows = np.flatnonzero(keep)
    if len(rows) <= k:
        raise ValueError(f"only {len(rows)} items have a genre and a non-zero embedding "
                         f"(after the mask); need more than k={k}")

    neighbours = neighbour_indices(embeddings[rows], k)
    genre_bits = _pack_genres([item_genres[r] for r in rows])
    observed = _genre_share(neighbours, genre_bits)

    rng = np.random.default_rng(seed)
    null = np.array([_genre_share(neighbours, genre_bits[rng.permutation(len(rows))])
                     for _ in range(n_permutations)])
    p_value = (1 + int(np.sum(null >= observed))) / (1 + n_permutations)
    return GenreClusterScore(
        observed=observed, null_mean=float(null.mean()), null_std=float(null.std()),
        p_value=p_value, k=k, n_items=len(rows), n_permutations=n_permutations)


def _genre_share(neighbours: np.ndarray, genre_bits: np.ndarray) -> float:
    """Mean over items of the share of neighbours with at least one genre in common."""
    shared = (genre_bits[neighbours] & genre_bits[:, None, :]).any(axis=-1)
    return float(shared.mean())


def _pack_genres(genres: Sequence[Sequence[str]]) -> np.ndarray:
    """Multi-hot genre sets packed into bytes, so a shared genre is one AND per byte."""
    vocabulary = {name: i for i, name in enumerate(sorted({g for gs in genres for g in gs}))}
    multi_hot = np.zeros((len(genres), len(vocabulary)), dtype=bool)
    for row, item_genres in enumerate(genres):
        multi_hot[row, [vocabulary[g] for g in item_genres]] = True
    return np.packbits(multi_hot, axis=1)
