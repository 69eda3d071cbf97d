"""The sampled protocol: rank each user's held-out items among N sampled unseen items.

This is the NCF paper's protocol (He et al., 2017: 1 held-out item + 99 sampled items). It
inflates every metric relative to full ranking and exists only to compare with published
numbers, so every result it produces is labelled ``"sampled-<N>"``.

For user u the candidates are R_u plus N items drawn uniformly without replacement from the
items u never interacted with (in any part of the split), by a generator seeded with
(seed, u): a user's negatives depend only on the seed, the user and their interactions, not on
which other users are evaluated. Candidates are ranked by score, ties broken by lower item id
(the full-ranking rule); the same ranking metrics are then computed on that list.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from recsys_jax.evaluation.interactions import row_counts
from recsys_jax.evaluation.metrics import PAD
from recsys_jax.evaluation.sources import (
    Embeddings,
    RankedLists,
    ScoreSource,
    first_nan_items,
    raise_on_nan,
    warn_if_float64_lossy,
)
from recsys_jax.progress import track

DEFAULT_NUM_NEGATIVES = 99


@dataclasses.dataclass(frozen=True)
class SampledCandidates:
    """Per-user candidate sets of the sampled protocol.

    Attributes:
      users: user ids (those with a non-empty R).
      candidates: ``[len(users), max|R| + N]`` item ids: R_u first, then the negatives, -1
        padded.
      num_negatives: N requested.
      short_users: users with fewer than N unseen items (all of their unseen items are used).
      seed: the sampling seed.
    """

    users: np.ndarray
    candidates: np.ndarray
    num_negatives: int
    short_users: np.ndarray
    seed: int


def sample_unseen_items(user: int, seen: np.ndarray, num_items: int, num_negatives: int,
                     seed: int) -> np.ndarray:
    """Up to ``num_negatives`` distinct items outside ``seen`` for one user, reproducibly.

    Draws positions among the unseen items without replacement and maps each position to its
    item id through the sorted ``seen`` ids, so the unseen set is never materialised.
    """
    seen = np.unique(np.asarray(seen, dtype=np.int64))
    num_unseen = num_items - len(seen)
    rng = np.random.default_rng([int(seed), int(user)])
    take = min(num_negatives, num_unseen)
    positions = rng.choice(num_unseen, size=take, replace=False) if take > 0 else np.zeros(
        0, np.int64)
    # The j-th unseen item is j plus the number of seen ids s_m with s_m - m <= j.
    shift = np.searchsorted(seen - np.arange(len(seen)), positions, side="right")
    return np.sort(positions + shift)


def sampled_candidates(relevant: sp.csr_array, interacted: sp.csr_array,
                       num_negatives: int = DEFAULT_NUM_NEGATIVES, seed: int = 0
                       ) -> SampledCandidates:
    """R_u plus N sampled unseen items for every user with a non-empty R.

    Args:
      relevant: CSR ``[num_users, num_items]`` of held-out items.
      interacted: CSR of everything each user interacted with (train ∪ val ∪ test); sampled
        items are never in it.
      num_negatives: N (99 in the NCF paper).
      seed: sampling seed.
    """
    relevant, interacted = sp.csr_array(relevant), sp.csr_array(interacted)
    if relevant.shape != interacted.shape:
        raise ValueError(f"relevant {relevant.shape} and interacted {interacted.shape} differ")
    num_items = relevant.shape[1]
    counts = row_counts(relevant)
    users = np.flatnonzero(counts > 0)
    width = (int(counts.max()) if len(users) else 0) + num_negatives
    candidates = np.full((len(users), width), PAD, dtype=np.int64)
    short = []
    for row, u in enumerate(track(users, "sampling evaluation candidates", unit="users")):
        held_out = relevant.indices[relevant.indptr[u]:relevant.indptr[u + 1]]
        seen = np.union1d(interacted.indices[interacted.indptr[u]:interacted.indptr[u + 1]],
                          held_out)
        negatives = sample_unseen_items(u, seen, num_items, num_negatives, seed)
        if len(negatives) < num_negatives:
            short.append(u)
        candidates[row, :len(held_out)] = held_out
        candidates[row, len(held_out):len(held_out) + len(negatives)] = negatives
    return SampledCandidates(users=users.astype(np.int64), candidates=candidates,
                             num_negatives=num_negatives,
                             short_users=np.asarray(short, dtype=np.int64), seed=seed)


def rank_candidates(candidates: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Each row's candidates by decreasing score, ties by lower item id; -1 pads the end.

    Candidates that are -1 or scored -inf are dropped (as in full ranking).

    Raises:
      ValueError: if a real candidate has a NaN score.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    valid = candidates != PAD
    if np.isnan(scores[valid]).any():
        raise ValueError("NaN scores among the sampled candidates")
    valid &= ~np.isneginf(scores)
    # Invalid entries sort last: key score -inf, id larger than any item.
    score_key = np.where(valid, -scores, np.inf)
    id_key = np.where(valid, candidates, np.iinfo(np.int64).max)
    order = np.lexsort((id_key, score_key), axis=-1)
    ranked = np.take_along_axis(candidates, order, axis=1)
    return np.where(np.take_along_axis(valid, order, axis=1), ranked, PAD)


def _candidate_scores(source: ScoreSource, users: np.ndarray, candidates: np.ndarray,
                      first: bool) -> np.ndarray:
    """float32 scores of ``candidates`` for ``users``; raises on a NaN in a scored row."""
    if isinstance(source, Embeddings):
        if first:
            for what, m in (("user embeddings", source.users), ("item embeddings", source.items)):
                warn_if_float64_lossy(m, what)
        # Embeddings are checked finite; a NaN can only come from the products.
        scores = source.candidate_scores(users, candidates)
        nan_at = first_nan_items(np.where(candidates >= 0, scores, 0.0))
        raise_on_nan(users, np.where(nan_at >= 0, np.take_along_axis(
            candidates, np.maximum(nan_at, 0)[:, None], axis=1)[:, 0], -1))
        return scores
    rows = source.rows(users)  # full rows: a NaN outside the candidates is a model bug too
    if first:
        warn_if_float64_lossy(rows, type(source).__name__)
    rows = np.asarray(rows, dtype=np.float32)
    raise_on_nan(users, first_nan_items(rows))
    return np.take_along_axis(rows, np.where(candidates >= 0, candidates, 0), axis=1)


def sampled_ranking(source: ScoreSource, sampled: SampledCandidates,
                    chunk_size: int = 1024) -> np.ndarray:
    """Ranked candidate lists ``[len(sampled.users), width]`` for the given score source.

    Users are scored ``chunk_size`` at a time, so a score function never builds more than a
    chunk of full score rows. A NaN anywhere in a scored user's row (not only among the
    candidates) raises, naming the user and item, as in full ranking.
    """
    if isinstance(source, RankedLists):
        raise ValueError("the sampled protocol needs scores; ranked lists only support full "
                         "ranking")
    out = np.full(sampled.candidates.shape, PAD, dtype=np.int64)
    starts = range(0, len(sampled.users), chunk_size)
    for start in track(starts, "sampled ranking", total=len(sampled.users), unit="users",
                       weight=lambda s: len(sampled.users[s:s + chunk_size])):
        part = slice(start, start + chunk_size)
        out[part] = rank_candidates(sampled.candidates[part],
                                    _candidate_scores(source, sampled.users[part],
                                                      sampled.candidates[part], start == 0))
    return out
