"""k-core filtering: keep only users and items with at least k events, iterated to a fixed point.

Dropping a rare item can push a user below its minimum, and dropping that user can push another
item below its own, so the filter repeats until every remaining user has at least
``min_user_interactions`` events and every remaining item at least ``min_item_interactions``.
The result is the largest such subset (the k-core), so applying it twice changes nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from recsys_jax.data.errors import DataError


def k_core_params(min_user_interactions: int, min_item_interactions: int) -> dict[str, int]:
    """The split params a k-core adds: ``{}`` when off (both <= 1), else both minimums.

    A minimum of 0 or 1 is stored as 0, so equal filters give equal fingerprints.

    Raises:
      ValueError: for a minimum that is not a non-negative integer.
    """
    for name, value in (("min_user_interactions", min_user_interactions),
                        ("min_item_interactions", min_item_interactions)):
        _check_minimum(name, value)
    if min_user_interactions <= 1 and min_item_interactions <= 1:
        return {}
    return {"min_user_interactions": _off_as_zero(min_user_interactions),
            "min_item_interactions": _off_as_zero(min_item_interactions)}


def k_core(interactions: pd.DataFrame, min_user_interactions: int = 0,
           min_item_interactions: int = 0) -> pd.DataFrame:
    """The rows of ``interactions`` in its k-core (every row counts as one event).

    Pass deduplicated interactions (as :func:`recsys_jax.data.splits.make_split` does), so a
    repeated (user, item) pair does not count twice. Kept rows stay in file order with a fresh
    ``RangeIndex``; the result may be empty.

    Raises:
      ValueError: for a minimum that is not a non-negative integer.
      DataError: if ``user_id``/``item_id`` are missing or hold missing values.
    """
    for name, value in (("min_user_interactions", min_user_interactions),
                        ("min_item_interactions", min_item_interactions)):
        _check_minimum(name, value)
    missing = [c for c in ("user_id", "item_id") if c not in interactions.columns]
    if missing:
        raise DataError(f"interactions lack column(s) {missing}; found "
                        f"{list(interactions.columns)}")
    users = _codes(interactions["user_id"], "user")
    items = _codes(interactions["item_id"], "item")
    keep = np.ones(len(interactions), dtype=bool)
    while True:
        user_counts = np.bincount(users[keep], minlength=users.max(initial=-1) + 1)
        item_counts = np.bincount(items[keep], minlength=items.max(initial=-1) + 1)
        still = (keep & (user_counts[users] >= min_user_interactions)
                 & (item_counts[items] >= min_item_interactions))
        if still.sum() == keep.sum():
            break
        keep = still
    return interactions[keep].reset_index(drop=True)


def _off_as_zero(minimum: int) -> int:
    return int(minimum) if minimum > 1 else 0


def _codes(column: pd.Series, kind: str) -> np.ndarray:
    codes, _ = pd.factorize(column)
    if codes.size and codes.min() < 0:
        raise DataError(f"{int((codes < 0).sum())} interactions have a missing {kind} id")
    return codes.astype(np.int64, copy=False)


def _check_minimum(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer (0 or 1 = off), got {value!r}")
