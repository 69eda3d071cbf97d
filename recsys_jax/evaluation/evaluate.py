"""Evaluating one score source on one part of a split, under the full or sampled protocol."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys_jax.evaluation.baselines import item_popularity
from recsys_jax.evaluation.beyond_accuracy import beyond_accuracy_metrics
from recsys_jax.evaluation.interactions import binary_union, interaction_matrix, row_counts
from recsys_jax.evaluation.metrics import RANKING_METRICS, ranking_metrics
from recsys_jax.evaluation.ranking import RankingStats, full_ranking
from recsys_jax.evaluation.results import FULL_PROTOCOL, PerUserMetrics, sampled_protocol_label
from recsys_jax.evaluation.sampled import (
    DEFAULT_NUM_NEGATIVES,
    SampledCandidates,
    sampled_candidates,
    sampled_ranking,
)
from recsys_jax.evaluation.sources import ScoreSource

PARTS = ("val", "test")


@dataclasses.dataclass(frozen=True)
class EvaluationTarget:
    """What one part of a split asks of a ranking.

    Attributes:
      part: ``"test"`` or ``"val"``.
      relevant: CSR ``[num_users, num_items]``, R_u = the user's items in that part (values are
        the ratings, the gains of graded NDCG).
      exclude: CSR of the items never to recommend: train, plus val when ``part == "test"``.
      interacted: CSR of every (user, item) pair in train ∪ val ∪ test (sampled negatives avoid
        these).
      train: CSR of the training ratings.
      train_counts: c_i, training interactions per item.
      val: CSR of the validation ratings (``None`` when the caller built the target without
        them); baselines fitted on train + val use it.
    """

    part: str
    relevant: sp.csr_array
    exclude: sp.csr_array
    interacted: sp.csr_array
    train: sp.csr_array
    train_counts: np.ndarray
    val: sp.csr_array | None = None

    def seen(self, parts: Sequence[str]) -> sp.csr_array:
        """The interactions of ``parts`` (``("train",)`` or ``("train", "val")``), as ratings.

        Raises:
          ValueError: for a part this target does not hold or that it evaluates.
        """
        if self.part in parts:
            raise ValueError(f"cannot fit on the {self.part} part while evaluating it")
        if set(parts) - {"train", "val"} or "train" not in parts:
            raise ValueError(f"seen parts must be ('train',) or ('train', 'val'), got {parts}")
        if "val" not in parts:
            return self.train
        if self.val is None:
            raise ValueError("this target was built without its validation part")
        return sp.csr_array(self.train.maximum(self.val))

    @property
    def num_users(self) -> int:
        return int(self.relevant.shape[0])

    @property
    def num_items(self) -> int:
        return int(self.relevant.shape[1])

    @property
    def users(self) -> np.ndarray:
        """Users with a non-empty R (the ones evaluated)."""
        return np.flatnonzero(row_counts(self.relevant) > 0).astype(np.int64)


def target_from_arrays(train: tuple[np.ndarray, ...], val: tuple[np.ndarray, ...],
                       test: tuple[np.ndarray, ...], num_users: int, num_items: int,
                       part: str = "test") -> EvaluationTarget:
    """Builds the target of ``part`` from (user_ids, item_ids[, ratings]) arrays per part.

    Raises:
      ValueError: for an unknown part, or a (user, item) pair held out in ``part`` that is also
        in an excluded part (train, and val when ``part == "test"``): it would be masked out of
        the ranking, so even a perfect model would miss it.
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    mats = {name: interaction_matrix(p[0], p[1], num_users, num_items,
                                     p[2] if len(p) > 2 else None)
            for name, p in (("train", train), ("val", val), ("test", test))}
    excluded_parts = ("train", "val") if part == "test" else ("train",)
    exclude = binary_union(*(mats[name] for name in excluded_parts))
    _check_held_out_disjoint(mats[part], exclude, part, excluded_parts)
    held_out = (mats[name] for name in PARTS if name not in excluded_parts)
    return EvaluationTarget(part=part, relevant=mats[part], exclude=exclude,
                            interacted=binary_union(exclude, *held_out), train=mats["train"],
                            train_counts=item_popularity(mats["train"]), val=mats["val"])


def _check_held_out_disjoint(held_out: sp.csr_array, exclude: sp.csr_array, part: str,
                             excluded_parts: tuple[str, ...]) -> None:
    both = sp.csr_array(held_out.multiply(exclude))
    both.eliminate_zeros()
    if both.nnz:
        users, items = both.nonzero()
        examples = ", ".join(f"(user {u}, item {i})" for u, i in zip(users[:3], items[:3]))
        raise ValueError(
            f"{both.nnz} (user, item) pair(s) of the {part} part are also in "
            f"{' + '.join(excluded_parts)}, e.g. {examples} (encoded ids). Those items are "
            "excluded from the ranking, so even a perfect model would miss them; keep each "
            "(user, item) pair in one part of the split (deduplicate before splitting).")


def target_from_split(split: Any, num_users: int, num_items: int,
                      part: str = "test") -> EvaluationTarget:
    """Target of a split object with ``train``/``val``/``test`` frames of encoded ids.

    The frames need ``user_id`` and ``item_id`` columns and may have ``rating``.
    """
    def columns(frame):
        cols = [frame["user_id"].to_numpy(), frame["item_id"].to_numpy()]
        if "rating" in frame:
            cols.append(frame["rating"].to_numpy())
        return tuple(cols)
    return target_from_arrays(columns(split.train), columns(split.val), columns(split.test),
                              num_users, num_items, part)


def evaluate_ranking(source: ScoreSource, target: EvaluationTarget, ks: Sequence[int], *,
                     protocol: str = FULL_PROTOCOL, num_negatives: int = DEFAULT_NUM_NEGATIVES,
                     sample_seed: int = 0, candidates: SampledCandidates | None = None,
                     metrics: Sequence[str] = RANKING_METRICS, graded: bool = False,
                     item_vectors: Mapping[str, np.ndarray] | None = None,
                     chunk_size: int | None = None, selection: str | None = None,
                     stats: RankingStats | None = None) -> PerUserMetrics:
    """Per-user metrics of ``source`` on ``target``.

    Args:
      source: embeddings, score matrix, score function or ranked lists.
      target: from ``target_from_split`` / ``target_from_arrays``.
      ks: cut-offs.
      protocol: ``"full"`` (rank the whole catalogue minus exclusions) or ``"sampled"``
        (R_u plus ``num_negatives`` unseen items, seeded by ``sample_seed``; pass
        ``candidates`` to reuse one draw across models).
      metrics, graded: as ``ranking_metrics``.
      item_vectors: name → item vectors for intra-list diversity (full protocol only).
      chunk_size, selection, stats: passed to ``full_ranking``.

    Returns:
      ``PerUserMetrics`` labelled ``"full"`` or ``"sampled-<N>"``; under full ranking it also
      holds novelty/ILD per user and coverage/Gini aggregates (beyond-accuracy metrics of a
      sampled candidate list would be meaningless, so the sampled protocol has none).
      ``num_skipped`` counts all users with an empty R.
    """
    users = target.users
    if protocol == FULL_PROTOCOL:
        top = full_ranking(source, users, max(ks), exclude=target.exclude,
                           chunk_size=chunk_size, selection=selection, stats=stats)
        ranked, label = top.items, FULL_PROTOCOL
    elif protocol == "sampled":
        if candidates is None:
            candidates = sampled_candidates(target.relevant, target.interacted, num_negatives,
                                            sample_seed)
        if not np.array_equal(candidates.users, users):
            raise ValueError("sampled candidates were drawn for other users")
        ranked, label = sampled_ranking(source, candidates), sampled_protocol_label(
            candidates.num_negatives)
    else:
        raise ValueError(f"protocol must be 'full' or 'sampled', got {protocol!r}")
    result = ranking_metrics(ranked, target.relevant, ks, metrics, users=users, graded=graded,
                             protocol=label)
    result = dataclasses.replace(result, num_skipped=target.num_users - len(result.users))
    if protocol == FULL_PROTOCOL:
        per_user, aggregates = beyond_accuracy_metrics(
            ranked, ks, target.num_items, train_counts=target.train_counts,
            item_vectors=item_vectors)
        result = result.merged(PerUserMetrics(users=result.users, values=per_user,
                                              protocol=label, aggregates=aggregates))
    return result
