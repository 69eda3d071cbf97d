"""``Retriever.retrieve``: user (id or raw features) → user tower → FAISS search → top-K items.

A user is given either by encoded id (their training-time feature row, stored in the model) or
by *raw* feature vectors, which are standardised with the scaler fitted on the training data
(``features.npz``) exactly as the training rows were. The user tower runs as one jitted call;
the index returns the best ``k + s`` candidates, where ``s`` is the most seen items any of the
queried users has, so that after dropping seen items at least ``k`` remain.

Results are ``RetrievalResult(items [n, k] int64, scores [n, k] float32)``, best first, -1 /
-inf padding when the catalogue minus the seen items has fewer than k items.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import numpy as np
import scipy.sparse as sp
from flax import nnx

from recsys_jax.data.features import Standardizer
from recsys_jax.retrieval import index as index_lib


@dataclasses.dataclass(frozen=True)
class RetrievalResult:
    """Top-K item ids and scores per query, best first."""

    items: np.ndarray
    scores: np.ndarray


@functools.partial(jax.jit, static_argnums=0)
def _users_by_id(graphdef: nnx.GraphDef, state: nnx.State, ids: jax.Array,
                 item_table: jax.Array | None) -> jax.Array:
    return nnx.merge(graphdef, state).user_embeddings(ids, item_table)


@functools.partial(jax.jit, static_argnums=0)
def _users_by_features(graphdef: nnx.GraphDef, state: nnx.State, features: jax.Array,
                       history_ids: jax.Array, history_mask: jax.Array,
                       item_table: jax.Array | None) -> jax.Array:
    return nnx.merge(graphdef, state).encode_users(
        features, history_ids=history_ids, history_mask=history_mask, item_table=item_table)


class Retriever:
    """Serves a trained two-tower model from a FAISS index of its item embeddings."""

    def __init__(self, model: nnx.Module, index, *, user_scaler: Standardizer | None = None,
                 seen: sp.csr_array | None = None):
        """
        Args:
          model: a ``contract.RetrievalEncoder`` (its ``user_embeddings``, ``encode_users``
            and ``ranking_embeddings`` are used).
          index: FAISS index of the model's item embeddings (row i = item i).
          user_scaler: standardiser of raw user features (needed for feature queries).
          seen: CSR ``[num_users, num_items]`` of each user's training items (for
            ``exclude_seen``).

        Raises:
          ValueError: when the index does not hold one vector per item of the model's dimension.
        """
        index_lib.check_index(index, model.num_items, model.dim)
        if seen is not None and seen.shape != (model.num_users, model.num_items):
            raise ValueError(f"seen matrix {seen.shape} ≠ ({model.num_users}, "
                             f"{model.num_items})")
        self.model, self.index, self.user_scaler = model, index, user_scaler
        self.seen = None if seen is None else sp.csr_array(seen, dtype=bool)
        self._graphdef, self._state = nnx.split(model)
        # Models that pool item embeddings (history towers) read the item table: compute it
        # once, not per query.
        self._item_table = jax.device_put(model.ranking_embeddings()[1])

    def encode_user_ids(self, user_ids: np.ndarray) -> np.ndarray:
        """User-tower embeddings ``[n, d]`` of encoded user ids."""
        ids = np.asarray(user_ids, np.int32).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.model.num_users):
            raise ValueError(f"user ids must lie in [0, {self.model.num_users})")
        return np.asarray(_users_by_id(self._graphdef, self._state, ids, self._item_table))

    def encode_user_features(self, raw_features: np.ndarray,
                             history_items: Sequence[Sequence[int]] | None = None
                             ) -> np.ndarray:
        """User-tower embeddings of raw (unstandardised) feature rows ``[n, d_user]``.

        ``history_items`` gives each user's past items for a model with the history tower.
        """
        if self.user_scaler is None:
            raise ValueError("feature queries need the user_scaler fitted on training data")
        x = self.user_scaler(np.atleast_2d(raw_features))
        n = len(x)
        length = max([1] + [len(h) for h in (history_items or [])])
        hist_ids = np.zeros((n, length), np.int32)
        hist_mask = np.zeros((n, length), np.float32)
        for row, items in enumerate(history_items or []):
            hist_ids[row, :len(items)] = items
            hist_mask[row, :len(items)] = 1.0
        return np.asarray(_users_by_features(self._graphdef, self._state, x, hist_ids,
                                             hist_mask, self._item_table))

    def search_vectors(self, user_vectors: np.ndarray, k: int,
                       seen_rows: Sequence[np.ndarray] | None = None) -> RetrievalResult:
        """Top-``k`` items for user vectors, leaving out each row's ``seen_rows`` items."""
        extra = max([0] + [len(s) for s in seen_rows]) if seen_rows is not None else 0
        depth = min(k + extra, self.model.num_items)
        # One query: one FAISS thread (see index.search); batches use them all.
        scores, ids = index_lib.search(self.index, user_vectors, depth,
                                       num_threads=1 if len(user_vectors) == 1 else None)
        if seen_rows is None:
            return RetrievalResult(ids[:, :k].astype(np.int64), scores[:, :k])
        items = np.full((len(ids), k), -1, np.int64)
        out_scores = np.full((len(ids), k), -np.inf, np.float32)
        for row, (row_ids, row_scores, seen) in enumerate(zip(ids, scores, seen_rows)):
            keep = (row_ids >= 0) & ~np.isin(row_ids, seen)
            kept_ids, kept_scores = row_ids[keep][:k], row_scores[keep][:k]
            items[row, :len(kept_ids)] = kept_ids
            out_scores[row, :len(kept_ids)] = kept_scores
        return RetrievalResult(items, out_scores)

    def retrieve(self, user: int | Sequence[int] | np.ndarray, k: int = 100, *,
                 exclude_seen: bool = True, features: bool | None = None,
                 seen_items: Sequence[Sequence[int]] | None = None,
                 history_items: Sequence[Sequence[int]] | None = None) -> RetrievalResult:
        """Top-``k`` items for one user or a batch.

        Args:
          user: an encoded user id, a sequence of ids, or raw feature rows (1-D for one user,
            ``[n, d_user]`` for several; a float array is taken as features).
          k: list length.
          exclude_seen: drop the users' training items (ids: from ``seen``; feature queries:
            from ``seen_items`` when given).
          features: force the interpretation of ``user`` (None: float arrays are features).
          seen_items: per feature query, items to exclude.
          history_items: per feature query, past items for a model with the history tower.

        Returns:
          ``RetrievalResult`` with ``[n, k]`` arrays (n = 1 for a single user).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        array = np.asarray(user)
        is_features = (np.issubdtype(array.dtype, np.floating) if features is None
                       else features)
        if is_features:
            vectors = self.encode_user_features(array, history_items)
            seen_rows = [np.asarray(s, np.int64) for s in seen_items] if (
                exclude_seen and seen_items is not None) else None
        else:
            ids = array.astype(np.int64).reshape(-1)
            vectors = self.encode_user_ids(ids)
            seen_rows = None
            if exclude_seen and self.seen is not None:
                seen_rows = [self.seen.indices[self.seen.indptr[u]:self.seen.indptr[u + 1]]
                             for u in ids]
        return self.search_vectors(vectors, k, seen_rows)
