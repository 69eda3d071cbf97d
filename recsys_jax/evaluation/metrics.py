"""Top-K ranking metrics per user, exactly as defined in DESIGN.md ("Protocols").

Notation, for one user: R is the relevant set (the held-out items), L = (l_1, l_2, ...) the
ranked list with excluded items already removed, L_K its first K entries, rel_i = 1 if
l_i ∈ R else 0, and g_i the gain of l_i (rel_i for binary gain; the held-out rating of l_i
for graded NDCG, 0 when l_i ∉ R). A list shorter than K (fewer than K candidates) counts its
missing positions as misses; K is still the denominator of Precision@K.

Ranked lists are integer arrays ``[num_users, L]`` of item ids padded with -1; relevant sets
are rows of a CSR matrix (the stored value is the gain used by graded NDCG).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from recsys_jax.evaluation.interactions import row_counts
from recsys_jax.evaluation.results import FULL_PROTOCOL, PerUserMetrics

RANKING_METRICS = ("hr", "precision", "recall", "ndcg", "map", "mrr")
PAD = -1


def metric_key(metric: str, k: int) -> str:
    """The name a metric at cut-off K carries in every table and file, e.g. ``"ndcg@10"``."""
    return f"{metric}@{k}"


def validate_ranked_lists(ranked: np.ndarray, num_items: int) -> np.ndarray:
    """Checks a ranked-list array and returns it as int64.

    Raises:
      ValueError: unless 2-D, integer, ids in [-1, num_items) and no id twice in a row.
    """
    ranked = np.asarray(ranked)
    if ranked.ndim != 2:
        raise ValueError(f"ranked lists must be 2-D [users, K], got shape {ranked.shape}")
    if not np.issubdtype(ranked.dtype, np.integer):
        raise ValueError(f"ranked lists must hold integer item ids, got {ranked.dtype}")
    ranked = ranked.astype(np.int64, copy=False)
    if ranked.size and (ranked.min() < PAD or ranked.max() >= num_items):
        raise ValueError(f"ranked lists hold ids outside [-1, {num_items})")
    ordered = np.sort(ranked, axis=1)
    repeated = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] != PAD)
    if repeated.any():
        row = int(np.flatnonzero(repeated.any(axis=1))[0])
        raise ValueError(f"ranked list of row {row} recommends an item twice")
    return ranked


def list_hits(ranked: np.ndarray, relevant: sp.csr_array) -> tuple[np.ndarray, np.ndarray]:
    """Which list positions are relevant, and their gains.

    ``ranked`` row r is matched against ``relevant`` row r (same number of rows).

    Returns:
      ``(hits, gains)``: booleans rel_i and float64 gains g_i (the relevant set's stored value;
      0 for misses and padding), both shaped like ``ranked``.
    """
    relevant = sp.csr_array(relevant)
    relevant.sort_indices()
    num_rows, num_items = relevant.shape
    if ranked.shape[0] != num_rows:
        raise ValueError(f"{ranked.shape[0]} ranked lists but {num_rows} relevant rows")
    # Each listed item's place among its row's stored entries, 1-based (0: not relevant),
    # read by scipy's binary search inside the row: the rows are short, so this is much
    # cheaper than one search over every stored entry.
    place = sp.csr_array((np.arange(1, relevant.nnz + 1, dtype=np.int64), relevant.indices,
                          relevant.indptr), shape=relevant.shape)
    if not place.has_canonical_format:  # an item stored twice in a row: keep its first entry
        place = _first_entries(place)
    listed = ranked != PAD
    rows = np.repeat(np.arange(num_rows, dtype=np.int64), ranked.shape[1])
    at = np.asarray(place[rows, np.where(listed, ranked, 0).ravel()]).reshape(ranked.shape)
    found = listed & (at > 0)
    gains = np.zeros(ranked.shape, dtype=np.float64)
    gains[found] = relevant.data[at[found] - 1]
    return found, gains


def _first_entries(matrix: sp.csr_array) -> sp.csr_array:
    """``matrix`` (sorted indices) without the repeats of a (row, column) entry."""
    cols, indptr = matrix.indices, matrix.indptr
    keep = np.ones(len(cols), dtype=bool)
    keep[1:] = cols[1:] != cols[:-1]
    keep[indptr[:-1][indptr[:-1] < len(cols)]] = True
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(indptr))[keep]
    new_indptr = np.zeros(len(indptr), dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=matrix.shape[0]), out=new_indptr[1:])
    return sp.csr_array((matrix.data[keep], cols[keep], new_indptr), shape=matrix.shape)


def ideal_gains(relevant: sp.csr_array, depth: int, binary: bool = True) -> np.ndarray:
    """Each row's gains sorted in decreasing order, first ``depth`` of them, zero-padded."""
    relevant = sp.csr_array(relevant)
    counts = row_counts(relevant)
    if binary:
        return (np.arange(depth)[None, :] < counts[:, None]).astype(np.float64)
    rows = np.repeat(np.arange(len(counts)), counts)
    order = np.lexsort((-relevant.data, rows))
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    rank = np.arange(len(rows)) - starts
    keep = rank < depth
    out = np.zeros((len(counts), depth), dtype=np.float64)
    out[rows[keep], rank[keep]] = relevant.data[order][keep]
    return out


def _first_k(values: np.ndarray, k: int) -> np.ndarray:
    """The first k columns, padding with zeros when the lists are shorter than k."""
    if values.shape[1] >= k:
        return values[:, :k]
    pad = np.zeros((values.shape[0], k - values.shape[1]), dtype=values.dtype)
    return np.concatenate([values, pad], axis=1)


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def hit_rate(hits: np.ndarray, k: int) -> np.ndarray:
    """HR@K = 1 if |L_K ∩ R| > 0 else 0.

    Args:
      hits: ``[users, L]`` booleans, ``hits[u, i-1] = rel_i``.
      k: cut-off K ≥ 1.
    """
    return _first_k(hits, k).any(axis=1).astype(np.float64)


def precision(hits: np.ndarray, k: int) -> np.ndarray:
    """Precision@K = |L_K ∩ R| / K (K even when the list is shorter than K)."""
    return _first_k(hits, k).sum(axis=1) / float(k)


def recall(hits: np.ndarray, num_relevant: np.ndarray, k: int) -> np.ndarray:
    """Recall@K = |L_K ∩ R| / |R| (so at most K/|R| when |R| > K)."""
    return _first_k(hits, k).sum(axis=1) / num_relevant


def ndcg(gains: np.ndarray, ideal: np.ndarray, k: int) -> np.ndarray:
    """NDCG@K = DCG@K / IDCG@K.

    DCG@K = Σ_{i=1..K} g_i / log2(i + 1); IDCG@K = Σ_{i=1..min(K,|R|)} g*_i / log2(i + 1),
    where g*_1 ≥ g*_2 ≥ ... are the gains of the relevant items sorted in decreasing order
    (all 1 for binary gain, so IDCG is min(K,|R|) ideal hits). A perfect list scores 1.

    Args:
      gains: ``[users, L]`` gain of each list position (0 for misses).
      ideal: ``[users, ≥min(K, max|R|)]`` sorted relevant gains, zero-padded.
      k: cut-off K ≥ 1.
    """
    disc = _discounts(k)
    dcg = _first_k(gains, k) @ disc
    idcg = _first_k(ideal, k) @ disc
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(idcg > 0, dcg / idcg, 0.0)


def average_precision(hits: np.ndarray, num_relevant: np.ndarray, k: int) -> np.ndarray:
    """AP@K = (1 / min(K, |R|)) Σ_{i=1..K} P@i · rel_i, with P@i = |L_i ∩ R| / i.

    MAP@K is its mean over users. A perfect list (all min(K, |R|) first positions relevant)
    scores 1.
    """
    h = _first_k(hits, k).astype(np.float64)
    precision_at_i = np.cumsum(h, axis=1) / np.arange(1, k + 1)
    return (precision_at_i * h).sum(axis=1) / np.minimum(k, num_relevant)


def reciprocal_rank(hits: np.ndarray, k: int) -> np.ndarray:
    """RR@K = 1 / (rank of the first relevant item within L_K), 0 if L_K has none.

    MRR@K is its mean over users.
    """
    h = _first_k(hits, k)
    first = np.argmax(h, axis=1)
    return np.where(h.any(axis=1), 1.0 / (first + 1), 0.0)


def ranking_metrics(ranked: np.ndarray, relevant: sp.csr_array, ks: Sequence[int],
                    metrics: Sequence[str] = RANKING_METRICS, *,
                    users: np.ndarray | None = None, graded: bool = False,
                    protocol: str = FULL_PROTOCOL) -> PerUserMetrics:
    """Per-user ranking metrics at every cut-off in ``ks``.

    Args:
      ranked: ``[len(users), L]`` ranked item ids (-1 = padding), excluded items removed.
      relevant: CSR ``[num_users, num_items]``; row u holds R for user u (values = gains).
      ks: cut-offs K ≥ 1; lists are truncated to K (and padded with misses when shorter).
      metrics: any of ``RANKING_METRICS``.
      users: user id of each row of ``ranked``; defaults to ``0..len(ranked)-1``.
      graded: NDCG uses the stored relevance values (e.g. ratings) as gains instead of 1.
      protocol: label stored on the result (``"full"`` or ``"sampled-<N>"``).

    Returns:
      ``PerUserMetrics`` keyed ``"<metric>@<K>"`` (``"ndcg_graded@<K>"`` when graded) over the
      users with non-empty R; users with empty R are left out and counted in ``num_skipped``.
    """
    relevant = sp.csr_array(relevant)
    ranked = validate_ranked_lists(ranked, relevant.shape[1])
    users = (np.arange(ranked.shape[0], dtype=np.int64) if users is None
             else np.asarray(users, dtype=np.int64))
    if users.shape != (ranked.shape[0],):
        raise ValueError(f"{len(users)} user ids for {ranked.shape[0]} ranked lists")
    unknown = sorted(set(metrics) - set(RANKING_METRICS))
    if unknown:
        raise ValueError(f"unknown ranking metric(s) {unknown}; known: {RANKING_METRICS}")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"cut-offs must be ≥ 1, got {ks}")
    if len(users) and not np.all(np.diff(users) > 0):
        order = np.argsort(users, kind="stable")
        users, ranked = users[order], ranked[order]
        if np.any(np.diff(users) == 0):
            raise ValueError("a user appears twice among the ranked lists")

    rows = relevant[users]
    num_relevant = row_counts(rows)
    keep = num_relevant > 0
    users, ranked, rows, num_relevant = users[keep], ranked[keep], rows[keep], num_relevant[keep]
    hits, gains = list_hits(ranked, rows)
    binary_gains = hits.astype(np.float64)
    max_k = ks[-1]
    ideal_binary = ideal_gains(rows, max_k, binary=True)
    ideal_graded = ideal_gains(rows, max_k, binary=False) if graded else None

    values: dict[str, np.ndarray] = {}
    for k in ks:
        for m in metrics:
            if m == "hr":
                values[metric_key(m, k)] = hit_rate(hits, k)
            elif m == "precision":
                values[metric_key(m, k)] = precision(hits, k)
            elif m == "recall":
                values[metric_key(m, k)] = recall(hits, num_relevant, k)
            elif m == "ndcg":
                values[metric_key(m, k)] = ndcg(binary_gains, ideal_binary, k)
                if graded:
                    values[metric_key("ndcg_graded", k)] = ndcg(gains, ideal_graded, k)
            elif m == "map":
                values[metric_key(m, k)] = average_precision(hits, num_relevant, k)
            elif m == "mrr":
                values[metric_key(m, k)] = reciprocal_rank(hits, k)
    return PerUserMetrics(users=users, values=values, num_skipped=int((~keep).sum()),
                          protocol=protocol)
