"""What a model hands to evaluation: NumPy embeddings, scores, a score function or ranked lists.

Evaluation never sees a model object, so JAX models, the PyTorch baseline and the simple
baselines are all scored by the same code.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import Any, Union

import numpy as np

SIMILARITIES = ("dot", "cosine")


class Float64ScoresWarning(UserWarning):
    """float64 scores were rounded to float32 for ranking; near-ties resolve by item id."""


def warn_if_float64_lossy(scores: Any, what: str) -> None:
    """Warns when float64 ``scores`` change on the cast to float32 (exact values stay quiet)."""
    if getattr(scores, "dtype", None) != np.float64:
        return
    values = np.asarray(scores)
    with np.errstate(over="ignore"):
        rounded = values.astype(np.float32).astype(np.float64)
    if not np.array_equal(rounded, values, equal_nan=True):
        warnings.warn(
            f"{what}: float64 values that float32 cannot represent exactly; ranking runs in "
            "float32, so scores closer than float32 precision tie and the lower item id wins. "
            "Export float32 scores (or rescale them) to silence this.",
            Float64ScoresWarning, stacklevel=3)


def first_nan_items(scores: np.ndarray) -> np.ndarray:
    """Per row of ``scores``, the column of its first NaN, or -1 when the row has none."""
    is_nan = np.isnan(scores)
    return np.where(is_nan.any(axis=1), np.argmax(is_nan, axis=1), -1)


def raise_on_nan(users: np.ndarray, nan_items: np.ndarray) -> None:
    """Raises ``ValueError`` naming the users and items of ``nan_items`` ≥ 0 (one per user).

    Item ids are row positions in a full score row, or the candidate ids in the sampled path.
    """
    bad = np.flatnonzero(np.asarray(nan_items) >= 0)
    if len(bad):
        pairs = ", ".join(f"user {int(users[r])} item {int(nan_items[r])}" for r in bad[:5])
        raise ValueError(f"NaN scores for user(s) {np.asarray(users)[bad][:5].tolist()} "
                         f"(first NaN: {pairs}); a NaN score is a model bug, excluded items "
                         "included")


@dataclasses.dataclass(frozen=True)
class Embeddings:
    """Exported embeddings; score(u, i) = ⟨users[u], items[i]⟩ (``"dot"``) or their cosine.

    Row u of ``users`` and row i of ``items`` belong to encoded user u and item i.
    """

    users: np.ndarray
    items: np.ndarray
    similarity: str = "dot"

    def __post_init__(self):
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {self.similarity!r}")
        for name, m in (("user", self.users), ("item", self.items)):
            if np.ndim(m) != 2:
                raise ValueError(f"{name} embeddings must be 2-D, got shape {np.shape(m)}")
        if self.users.shape[1] != self.items.shape[1]:
            raise ValueError(f"user embeddings have dimension {self.users.shape[1]} but item "
                             f"embeddings {self.items.shape[1]}")

    @property
    def num_items(self) -> int:
        return int(self.items.shape[0])

    @property
    def num_users(self) -> int:
        return int(self.users.shape[0])

    def prepared(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 (users, items), L2-normalised for cosine (a zero vector stays zero).

        Computed once per instance.

        Raises:
          ValueError: if either matrix holds NaN or infinity.
        """
        return self._prepared

    @functools.cached_property
    def _prepared(self) -> tuple[np.ndarray, np.ndarray]:
        out = []
        for name, m in (("user", self.users), ("item", self.items)):
            m = np.asarray(m, dtype=np.float32)
            if not np.isfinite(m).all():
                raise ValueError(f"{name} embeddings contain NaN or infinity")
            if self.similarity == "cosine":
                norms = np.linalg.norm(m, axis=1, keepdims=True)
                m = m / np.where(norms > 0, norms, 1.0).astype(np.float32)
            out.append(np.ascontiguousarray(m))
        return out[0], out[1]

    def candidate_scores(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Scores of ``candidates[r]`` (item ids, -1 ignored) for ``users[r]`` (float32)."""
        u, it = self.prepared()
        safe = np.where(candidates >= 0, candidates, 0)
        return np.einsum("rd,rcd->rc", u[users], it[safe]).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class ScoreMatrix:
    """A dense ``[num_users, num_items]`` score matrix (may be a read-only memory map)."""

    scores: np.ndarray

    def __post_init__(self):
        if np.ndim(self.scores) != 2:
            raise ValueError(f"score matrix must be 2-D, got shape {np.shape(self.scores)}")

    @property
    def num_items(self) -> int:
        return int(self.scores.shape[1])

    def __call__(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.scores[np.asarray(users)], dtype=np.float32)

    def rows(self, users: np.ndarray) -> np.ndarray:
        """The users' score rows in the matrix's own dtype (before the float32 cast)."""
        return np.asarray(self.scores[np.asarray(users)])

    def candidate_scores(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        safe = np.where(candidates >= 0, candidates, 0)
        return np.asarray(self.scores[np.asarray(users)[:, None], safe], dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class ScoreFunction:
    """``fn(user_ids) -> [len(user_ids), num_items]`` scores (NumPy or JAX array).

    Full ranking calls it once per user chunk, so it only ever builds a chunk of scores.
    """

    fn: Callable[[np.ndarray], Any]
    num_items: int

    def __call__(self, users: np.ndarray) -> Any:
        return self.fn(np.asarray(users))

    def rows(self, users: np.ndarray) -> Any:
        """The users' score rows as the function returns them."""
        return self.fn(np.asarray(users))

    def candidate_scores(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        scores = np.asarray(self.fn(np.asarray(users)), dtype=np.float32)
        safe = np.where(candidates >= 0, candidates, 0)
        return np.take_along_axis(scores, safe, axis=1)


@dataclasses.dataclass(frozen=True)
class RankedLists:
    """Precomputed ranked lists ``[rows, L]`` (-1 padded), e.g. from a FAISS index.

    ``users[r]`` is the user of row r; ``None`` means row r belongs to user r. Lists cannot
    be re-scored, so they take part in full ranking only; excluded items in them are dropped
    (the rest move up) and their ties are whatever order the producer chose.
    """

    items: np.ndarray
    users: np.ndarray | None = None

    def __post_init__(self):
        if np.ndim(self.items) != 2:
            raise ValueError(f"ranked lists must be 2-D, got shape {np.shape(self.items)}")
        if self.users is not None and np.shape(self.users) != (self.items.shape[0],):
            raise ValueError(f"{np.shape(self.users)} user ids for {self.items.shape[0]} lists")


ScoreSource = Union[Embeddings, ScoreMatrix, ScoreFunction, RankedLists]
