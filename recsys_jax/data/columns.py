"""Training data as a dict of equal-length NumPy columns, checked before it reaches a gather.

The training machinery sees data only as ``{name: array}`` with a shared leading dimension
(e.g. ``user``, ``item``, ``rating``; a two-tower model adds feature columns). Ids are checked
here because JAX clamps out-of-range gathers without an error.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

Columns = dict[str, np.ndarray]


def check_id_range(ids: np.ndarray, n: int, kind: str) -> None:
    """Raises ``ValueError`` unless every id is an integer in ``[0, n)``."""
    ids = np.asarray(ids)
    if ids.size == 0:
        return
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{kind} ids must be integers, got dtype {ids.dtype}")
    bad = (ids < 0) | (ids >= n)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} {kind} id(s) outside [0, {n}), "
                         f"e.g. {int(ids[bad][0])}; encode ids before training")


def num_rows(columns: Mapping[str, np.ndarray]) -> int:
    """The shared length of the columns (``ValueError`` when they differ or there are none)."""
    lengths = {name: len(col) for name, col in columns.items()}
    if not lengths:
        raise ValueError("no columns")
    if len(set(lengths.values())) != 1:
        raise ValueError(f"columns differ in length: {lengths}")
    return next(iter(lengths.values()))


def rating_columns(users: np.ndarray, items: np.ndarray, ratings: np.ndarray, *,
                   num_users: int, num_items: int) -> Columns:
    """Validated ``{"user": int32, "item": int32, "rating": float32}`` columns.

    Raises:
      ValueError: for mismatched lengths, ids out of range or non-finite ratings.
    """
    users = np.asarray(users)
    items = np.asarray(items)
    ratings = np.asarray(ratings)
    check_id_range(users, num_users, "user")
    check_id_range(items, num_items, "item")
    if not np.all(np.isfinite(ratings)):
        raise ValueError(f"{int((~np.isfinite(ratings)).sum())} ratings are NaN or inf")
    columns = {"user": users.astype(np.int32), "item": items.astype(np.int32),
               "rating": ratings.astype(np.float32)}
    num_rows(columns)
    return columns
