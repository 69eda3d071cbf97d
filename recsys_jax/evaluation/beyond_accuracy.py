"""Beyond-accuracy metrics of top-K lists: coverage, exposure Gini, diversity, novelty.

Notation: I is the catalogue (n = |I| items), U the evaluated users, L_u@K the first K
non-padding entries of u's list, m_u = |L_u@K|.

- Catalogue coverage@K = |∪_u L_u@K| / n (one value for the set of lists).
- Gini@K of item exposure: e_j = #{u : j ∈ L_u@K} for every item j ∈ I (zeros included),
  sorted ascending e_(1) ≤ ... ≤ e_(n); Gini = Σ_{j=1..n} (2j − n − 1) e_(j) / (n Σ_j e_j).
  0 when every item is shown equally often, (n−1)/n when one item takes all exposure.
- Intra-list diversity@K (per user, needs m_u ≥ 2):
  ILD_u = (2 / (m_u (m_u − 1))) Σ_{i<j ∈ L_u@K} (1 − cos(x_i, x_j)), with x the item's genre
  multi-hot vector (cos = |G_i ∩ G_j| / sqrt(|G_i| |G_j|)) or its embedding; a zero vector has
  cosine 0 with everything.
- Novelty@K (per user, needs m_u ≥ 1): (1/m_u) Σ_{i ∈ L_u@K} −log2 p_i, where p_i is item i's
  add-one-smoothed share of training interactions, p_i = (c_i + 1) / (Σ_j c_j + n), so items
  never seen in training have finite novelty.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from recsys_jax.evaluation.metrics import PAD

# Lists per block in intra-list diversity: bounds the [block, K, d] gathered vectors.
_ILD_BLOCK = 2048


def _cut(ranked: np.ndarray, k: int) -> np.ndarray:
    ranked = np.asarray(ranked, dtype=np.int64)
    if ranked.shape[1] >= k:
        return ranked[:, :k]
    return np.concatenate([ranked, np.full((len(ranked), k - ranked.shape[1]), PAD)], axis=1)


def item_exposure(ranked: np.ndarray, num_items: int, k: int) -> np.ndarray:
    """e_j: how many top-K lists contain item j, for j = 0..num_items-1."""
    top = _cut(ranked, k)
    return np.bincount(top[top != PAD], minlength=num_items)


def catalogue_coverage(ranked: np.ndarray, num_items: int, k: int) -> float:
    """Coverage@K = |∪_u L_u@K| / n."""
    return float((item_exposure(ranked, num_items, k) > 0).sum() / num_items)


def gini(values: np.ndarray) -> float:
    """Gini = Σ_{j=1..n} (2j − n − 1) v_(j) / (n Σ v) over ascending v; NaN when Σ v = 0."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    n, total = len(v), v.sum()
    if n == 0 or total == 0:
        return float("nan")
    j = np.arange(1, n + 1)
    return float(np.sum((2 * j - n - 1) * v) / (n * total))


def exposure_gini(ranked: np.ndarray, num_items: int, k: int) -> float:
    """Gini@K of item exposure over the whole catalogue (unexposed items count as 0)."""
    return gini(item_exposure(ranked, num_items, k))


def genre_matrix(item_genres: Sequence[Sequence[str]], genre_names: Sequence[str]
                 ) -> np.ndarray:
    """Multi-hot ``[num_items, len(genre_names)]`` float32 matrix; row i = item i's genres.

    Raises:
      ValueError: for a genre not in ``genre_names``.
    """
    column = {g: j for j, g in enumerate(genre_names)}
    out = np.zeros((len(item_genres), len(genre_names)), dtype=np.float32)
    for i, genres in enumerate(item_genres):
        for g in genres:
            if g not in column:
                raise ValueError(f"item {i} has genre {g!r} not in {list(genre_names)}")
            out[i, column[g]] = 1.0
    return out


def intra_list_diversity(ranked: np.ndarray, item_vectors: np.ndarray, k: int) -> np.ndarray:
    """ILD@K per list (NaN when the list has fewer than two items).

    Uses Σ_{i≠j} x̂_i·x̂_j = |Σ_i x̂_i|² − Σ_i |x̂_i|² on unit vectors x̂, so a list costs O(K·d)
    rather than O(K²·d).
    """
    top = _cut(ranked, k)
    vectors = np.asarray(item_vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0)
    out = np.full(len(top), np.nan)
    for start in range(0, len(top), _ILD_BLOCK):
        block = top[start:start + _ILD_BLOCK]
        present = block != PAD
        x = unit[np.where(present, block, 0)] * present[..., None]
        sums = x.sum(axis=1)
        pair_sim = np.einsum("ud,ud->u", sums, sums) - np.einsum("ukd,ukd->u", x, x)
        m = present.sum(axis=1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + len(block)] = np.where(m >= 2, 1.0 - pair_sim / (m * (m - 1)),
                                                     np.nan)
    return out


def popularity_share(train_counts: np.ndarray) -> np.ndarray:
    """p_i = (c_i + 1) / (Σ_j c_j + n): add-one-smoothed share of training interactions."""
    c = np.asarray(train_counts, dtype=np.float64)
    return (c + 1.0) / (c.sum() + len(c))


def novelty(ranked: np.ndarray, train_counts: np.ndarray, k: int) -> np.ndarray:
    """Novelty@K per list: mean −log2 p_i over its items (NaN for an empty list)."""
    top = _cut(ranked, k)
    self_info = -np.log2(popularity_share(train_counts))
    present = top != PAD
    total = np.where(present, self_info[np.where(present, top, 0)], 0.0).sum(axis=1)
    m = present.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(m > 0, total / m, np.nan)


def beyond_accuracy_metrics(ranked: np.ndarray, ks: Sequence[int], num_items: int, *,
                            train_counts: np.ndarray | None = None,
                            item_vectors: Mapping[str, np.ndarray] | None = None
                            ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """All beyond-accuracy metrics at every K.

    Args:
      ranked: ``[users, L]`` lists (-1 padded).
      ks: cut-offs.
      num_items: catalogue size n.
      train_counts: c_i, training interactions per item; enables ``novelty@K``.
      item_vectors: name → ``[num_items, d]`` vectors; each adds ``ild_<name>@K`` (e.g.
        ``{"genres": genre_matrix(...), "embeddings": item_embeddings}``).

    Returns:
      (per-list values keyed ``novelty@K`` / ``ild_<name>@K``, aggregates keyed
      ``coverage@K`` / ``gini@K``).
    """
    per_user: dict[str, np.ndarray] = {}
    aggregates: dict[str, float] = {}
    for k in sorted({int(k) for k in ks}):
        aggregates[f"coverage@{k}"] = catalogue_coverage(ranked, num_items, k)
        aggregates[f"gini@{k}"] = exposure_gini(ranked, num_items, k)
        if train_counts is not None:
            per_user[f"novelty@{k}"] = novelty(ranked, train_counts, k)
        for name, vectors in (item_vectors or {}).items():
            if len(vectors) != num_items:
                raise ValueError(f"{name} vectors have {len(vectors)} rows for {num_items} items")
            per_user[f"ild_{name}@{k}"] = intra_list_diversity(ranked, vectors, k)
    return per_user, aggregates


__all__ = ["beyond_accuracy_metrics", "catalogue_coverage", "exposure_gini", "genre_matrix",
           "gini", "intra_list_diversity", "item_exposure", "novelty", "popularity_share"]
