"""``Retriever.retrieve``: user (id or raw features) → user tower → FAISS search → top-K items.

A user is given either by encoded id (their training-time feature row, stored in the model) or
by *raw* feature vectors, which are standardised with the scaler fitted on the training data
(``features.npz``) exactly as the training rows were. The user tower runs as one jitted call;
the index returns the best ``k + s`` candidates, where ``s`` is the most seen items any of the
queried users has, so that after dropping seen items at least ``k`` remain.

Results are ``RetrievalResult(items [n, k] int64, scores [n, k] float32)``, best first: always
exactly ``k`` columns, with and without ``exclude_seen``; where fewer than ``k`` items are left
(``k`` beyond the catalogue, or the catalogue minus the seen items) the row ends in id -1 with
score -inf.

Every input is checked on the host before any gather (JAX clamps an out-of-range gather to the
last row without an error): ids must be integers (a float is never an id) in ``[0, N)``, checked
before any cast (2**32 + 3 is not 3); feature rows must have the model's width and be finite.
Bad input raises ``QueryError`` naming the argument, the offending value(s) and the valid range.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import scipy.sparse as sp
from flax import nnx

from recsys_jax.data.features import Standardizer
from recsys_jax.retrieval import index as index_lib

_SHOWN = 5  # Offending values quoted in an error message.


class QueryError(ValueError):
    """A serving input (id, history, feature row, k) that cannot be answered correctly."""


@dataclasses.dataclass(frozen=True)
class RetrievalResult:
    """Top-K item ids and scores per query, best first."""

    items: np.ndarray
    scores: np.ndarray


def check_ids(values: Any, n: int, name: str) -> np.ndarray:
    """``values`` as int64 after checking every one is an integer id in ``[0, n)``.

    Checked before any cast, so 2**32 + 3 is refused rather than wrapped to 3; floats (3.0
    too), booleans and strings are refused.

    Raises:
      QueryError: naming ``name``, the offending values and the range.
    """
    try:
        array = np.asarray(values)
    except (ValueError, TypeError) as e:  # Ragged nesting and the like.
        raise QueryError(f"{name}: not an array of ids ({e})") from None
    if array.size == 0:
        return array.astype(np.int64)
    if array.dtype == object:  # Python ints beyond uint64, or mixed objects.
        flat = array.reshape(-1)
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in flat):
            raise QueryError(f"{name}: ids must be integers, got {_quote(flat)}")
        bad = [v for v in flat if not 0 <= v < n]
    elif np.issubdtype(array.dtype, np.integer):
        bad = array[(array < 0) | (array >= n)].tolist()
    else:
        raise QueryError(f"{name}: ids must be integers in [0, {n}), got dtype {array.dtype} "
                         f"({_quote(array.reshape(-1))}); a float is never an id")
    if bad:
        raise QueryError(f"{name}: {len(bad)} id(s) outside [0, {n}): {_quote(bad)}")
    return array.astype(np.int64)


def _quote(values: Sequence[Any]) -> str:
    shown = ", ".join(repr(v.item() if isinstance(v, np.generic) else v)
                      for v in list(values)[:_SHOWN])
    return shown + (", …" if len(values) > _SHOWN else "")


def _check_k(k: Any) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise QueryError(f"k must be a positive integer, got {k!r}")
    return int(k)


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
          IndexMismatchError: when the index holds another model's item vectors (checked on
            sampled rows where the index can reconstruct them: flat and HNSW).
        """
        index_lib.check_index(index, model.num_items, model.dim)
        if seen is not None and seen.shape != (model.num_users, model.num_items):
            raise ValueError(f"seen matrix {seen.shape} ≠ ({model.num_users}, "
                             f"{model.num_items})")
        user_dim = getattr(model, "user_dim", None)
        if user_scaler is not None and user_dim is not None and \
                np.shape(user_scaler.mean)[-1] != user_dim:
            raise ValueError(f"user_scaler standardises {np.shape(user_scaler.mean)[-1]} "
                             f"columns, the model's user features have {user_dim}: use the "
                             f"features.npz of the run the model comes from")
        self.model, self.index, self.user_scaler = model, index, user_scaler
        self.seen = None if seen is None else sp.csr_array(seen, dtype=bool)
        self._graphdef, self._state = nnx.split(model)
        items = model.ranking_embeddings()[1]
        index_lib.check_index_holds(index, items, what="this model's item embeddings")
        # Models that pool item embeddings (history towers) read the item table: compute it
        # once, not per query.
        self._item_table = jax.device_put(items)

    def encode_user_ids(self, user_ids: Any) -> np.ndarray:
        """User-tower embeddings ``[n, d]`` of encoded user ids (checked by ``check_ids``)."""
        ids = check_ids(user_ids, self.model.num_users, "user ids").reshape(-1)
        return np.asarray(_users_by_id(self._graphdef, self._state, ids.astype(np.int32),
                                       self._item_table))

    def _feature_rows(self, raw_features: Any) -> np.ndarray:
        """Raw feature rows as float ``[n, d_user]`` after checking width and finiteness."""
        if self.user_scaler is None:
            raise QueryError("feature queries need the user_scaler fitted on training data "
                             "(features.npz of the run)")
        width = int(np.shape(self.user_scaler.mean)[-1])
        array = np.asarray(raw_features)
        if array.dtype.kind not in "iuf" or array.ndim not in (1, 2):
            raise QueryError(
                f"user: raw feature rows must be a numeric [n, {width}] array (or one row of "
                f"{width}), got {array.dtype} of shape {array.shape}; to query by id pass "
                f"integer ids")
        rows = np.atleast_2d(array).astype(np.float64)
        if rows.shape[1] != width:
            raise QueryError(f"user: raw feature rows must have {width} columns (the user "
                             f"features the model was trained on), got {rows.shape[1]}")
        bad = ~np.isfinite(rows).all(axis=1)
        if bad.any():
            raise QueryError(f"user: feature row(s) {_quote(np.flatnonzero(bad))} hold NaN or "
                             f"infinity")
        return rows

    def _history_arrays(self, history_items: Sequence[Any] | None, n: int
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Padded ``[n, L]`` ids and mask of per-row histories (checked, newest first)."""
        rows = self._per_row(history_items, n, "history_items")
        if rows is not None and not getattr(self.model, "use_history", False):
            raise QueryError("history_items given, but this model has no history tower")
        rows = rows or []
        # Position weights exist for the trained length only (longer would not broadcast).
        limit = (int(np.shape(self.model.history_position_logits[...])[0])
                 if getattr(self.model, "history_positions", False) else None)
        if limit is not None:
            for row, items in enumerate(rows):
                if len(items) > limit:
                    raise QueryError(f"history_items[{row}] has {len(items)} items; this model "
                                     f"weighs at most {limit} positions (newest first)")
        length = max([1] + [len(items) for items in rows])
        hist_ids = np.zeros((n, length), np.int32)
        hist_mask = np.zeros((n, length), np.float32)
        for row, items in enumerate(rows):
            hist_ids[row, :len(items)] = items
            hist_mask[row, :len(items)] = 1.0
        return hist_ids, hist_mask

    def _per_row(self, lists: Sequence[Any] | None, n: int, name: str
                 ) -> list[np.ndarray] | None:
        """Checked item-id lists, one per query row (None stays None)."""
        if lists is None:
            return None
        if len(lists) != n:
            raise QueryError(f"{name} has {len(lists)} rows for {n} queries: give one list of "
                             f"item ids per query")
        return [check_ids(items, self.model.num_items, f"{name}[{row}]").reshape(-1)
                for row, items in enumerate(lists)]

    def encode_user_features(self, raw_features: Any,
                             history_items: Sequence[Sequence[int]] | None = None
                             ) -> np.ndarray:
        """User-tower embeddings of raw (unstandardised) feature rows ``[n, d_user]``.

        ``history_items`` gives each user's past items (newest first) for a model with the
        history tower; ids are checked like ``check_ids``.
        """
        rows = self._feature_rows(raw_features)
        x = self.user_scaler(rows)
        hist_ids, hist_mask = self._history_arrays(history_items, len(x))
        return np.asarray(_users_by_features(self._graphdef, self._state, x, hist_ids,
                                             hist_mask, self._item_table))

    def search_vectors(self, user_vectors: np.ndarray, k: int,
                       seen_rows: Sequence[np.ndarray] | None = None) -> RetrievalResult:
        """Top-``k`` items for user vectors, leaving out each row's ``seen_rows`` items.

        Always ``[n, k]``: rows with fewer than ``k`` items left end in id -1, score -inf.
        """
        k = _check_k(k)
        if seen_rows is not None and len(seen_rows) != len(user_vectors):
            raise QueryError(f"seen_rows has {len(seen_rows)} rows for {len(user_vectors)} "
                             f"queries")
        extra = max([0] + [len(s) for s in seen_rows]) if seen_rows is not None else 0
        depth = min(k + extra, self.model.num_items)
        # One query: one FAISS thread (see index.search); batches use them all.
        scores, ids = index_lib.search(self.index, user_vectors, depth,
                                       num_threads=1 if len(user_vectors) == 1 else None)
        items = np.full((len(ids), k), -1, np.int64)
        out_scores = np.full((len(ids), k), -np.inf, np.float32)
        if seen_rows is None:
            width = min(k, ids.shape[1])
            items[:, :width] = ids[:, :width]
            out_scores[:, :width] = np.where(ids[:, :width] >= 0, scores[:, :width], -np.inf)
            return RetrievalResult(items, out_scores)
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
            ``[n, d_user]`` for several; a float array is taken as features, and must have the
            model's feature width: a float scalar such as 3.0 is neither an id nor a row).
          k: list length (a positive integer; beyond the catalogue the rows are padded).
          exclude_seen: drop the users' training items (ids: from ``seen``; feature queries:
            from ``seen_items`` when given).
          features: force the interpretation of ``user`` (None: float arrays are features).
          seen_items: per feature query, items to exclude.
          history_items: per feature query, past items for a model with the history tower.

        Returns:
          ``RetrievalResult`` with ``[n, k]`` arrays (n = 1 for a single user), padded with
          id -1 / score -inf where fewer than ``k`` items are left.

        Raises:
          QueryError: a bad id, history, feature row or k (see the module docstring).
        """
        k = _check_k(k)
        try:
            array = np.asarray(user)
        except (ValueError, TypeError) as e:  # Ragged nesting and the like.
            raise QueryError(f"user: neither ids nor feature rows ({e})") from None
        if features is None:
            is_features = array.dtype.kind == "f" and array.size > 0
        else:
            is_features = bool(features)
        if is_features:
            if array.ndim == 0:
                raise QueryError(f"user: {user!r} is a float scalar: user ids are integers "
                                 f"and a feature row is a 1-D array")
            vectors = self.encode_user_features(array, history_items)
            seen_rows = self._per_row(seen_items, len(vectors), "seen_items") \
                if exclude_seen else None
        else:
            if history_items is not None or seen_items is not None:
                raise QueryError("history_items and seen_items apply to feature queries; id "
                                 "queries use the model's stored histories and `seen`")
            ids = check_ids(array, self.model.num_users, "user ids").reshape(-1)
            if ids.size == 0:
                return RetrievalResult(np.zeros((0, k), np.int64),
                                       np.zeros((0, k), np.float32))
            vectors = self.encode_user_ids(ids)
            seen_rows = None
            if exclude_seen and self.seen is not None:
                seen_rows = [self.seen.indices[self.seen.indptr[u]:self.seen.indptr[u + 1]]
                             for u in ids]
        return self.search_vectors(vectors, k, seen_rows)
