"""Each user's items in time order, and the fixed-length windows a sequence model reads.

``user_sequences(parts, ...)`` orders the events of each part by (user, timestamp), equal
timestamps by the split's tie rule (``splits.user_time_order``), and concatenates a user's parts
in the order given: ``(train,)`` is what validation users are encoded from, ``(train, val)``
what test users are encoded from. Under the per-user protocols every validation event of a user
is later than their training events, so the concatenation is the user's history in time order.

Windows are left-padded with a padding id (the sequence model's, ``num_items``): position
``L - 1`` always holds the most recent item.

* ``UserSequences.last(L)``: ``[num_users, L]``, each user's L most recent items (the input a
  model encodes a user from);
* ``UserSequences.training_windows(L, "last" | "all")``: rows of L + 1 items; a row's first L
  items are the input, its last L the next-item targets (one per position). ``"last"`` is one
  row per user, their L + 1 most recent items (SASRec's sampler); ``"all"`` cuts the whole
  history into windows from the end, consecutive windows overlapping by one item, so every event
  after a user's first is a target exactly once. Users with fewer than two events have no
  target and no row.

Everything is vectorised over users (no Python loop).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd

from recsys_jax.data.columns import check_id_range
from recsys_jax.data.splits import user_time_order

WINDOWS = ("last", "all")


@dataclasses.dataclass(frozen=True)
class UserSequences:
    """Each user's item ids in time order, as CSR rows.

    Attributes:
      indptr: ``[num_users + 1]`` int64; user u's items are ``items[indptr[u]:indptr[u + 1]]``.
      items: int32 item ids, oldest first within each user.
    """

    indptr: np.ndarray
    items: np.ndarray

    @property
    def num_users(self) -> int:
        return len(self.indptr) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Events per user, ``[num_users]`` int64."""
        return np.diff(self.indptr)

    def of_user(self, user: int) -> np.ndarray:
        """User ``user``'s items, oldest first."""
        return self.items[self.indptr[user]:self.indptr[user + 1]]

    def _windows(self, users: np.ndarray, ends: np.ndarray, width: int, pad: int) -> np.ndarray:
        """``[len(users), width]``: the ``width`` items before position ``ends`` (exclusive)
        of each user's row, left-padded with ``pad`` where the row starts later."""
        positions = ends[:, None] - width + np.arange(width)[None, :]
        inside = positions >= self.indptr[users][:, None]
        taken = self.items[np.clip(positions, 0, max(len(self.items) - 1, 0))] \
            if len(self.items) else np.zeros(positions.shape, np.int32)
        return np.where(inside, taken, pad).astype(np.int32)

    def last(self, length: int, pad: int) -> np.ndarray:
        """``[num_users, length]`` int32: each user's ``length`` most recent items, left-padded
        with ``pad`` (a user without events is all padding)."""
        _check_length(length)
        users = np.arange(self.num_users)
        return self._windows(users, self.indptr[1:], length, pad)

    def training_windows(self, length: int, pad: int, windows: str = "last"
                         ) -> tuple[np.ndarray, np.ndarray]:
        """``(users [n] int32, rows [n, length + 1] int32)``: next-item training rows.

        Row r's input is ``rows[r, :-1]`` and its targets ``rows[r, 1:]``; a target counts
        only where its input holds an item (the first item of a left-padded row is an input
        only). ``windows``: ``"last"`` (each user's ``length + 1`` most recent items) or
        ``"all"`` (every event after the user's first is a target exactly once).

        Raises:
          ValueError: for a length below 1 or an unknown ``windows``.
        """
        _check_length(length)
        if windows not in WINDOWS:
            raise ValueError(f"windows must be one of {WINDOWS}, got {windows!r}")
        targets = np.maximum(self.lengths - 1, 0)
        count = np.minimum(targets, 1) if windows == "last" else -(-targets // length)
        users = np.repeat(np.arange(self.num_users), count)
        # Window k of a user (k = 0 the most recent) ends k·length items before their last.
        k = np.arange(len(users)) - np.repeat(np.cumsum(count) - count, count)
        ends = self.indptr[1:][users] - k * length
        return users.astype(np.int32), self._windows(users, ends, length + 1, pad)


def _check_length(length: int) -> None:
    if int(length) < 1:
        raise ValueError(f"a window length must be >= 1, got {length}")


def user_sequences(parts: Sequence[pd.DataFrame], num_users: int, num_items: int, *,
                   tie_order: str = "random", seed: int = 0) -> UserSequences:
    """Each user's events of ``parts`` in time order, part after part.

    Args:
      parts: frames with encoded ``user_id``, ``item_id`` and ``timestamp`` (a split's parts),
        earliest part first (``(train,)`` or ``(train, val)``).
      num_users, num_items: the id spaces (ids are checked against them).
      tie_order, seed: the order of a user's events with equal timestamps within a part (the
        split's ``tie_order`` and ``seed``; see ``splits.user_time_order``).

    Raises:
      ValueError: for ids outside the id spaces; ``DataError`` for missing timestamps.
    """
    users, items = [], []
    for part in parts:
        order = user_time_order(part, tie_order, seed)
        users.append(part["user_id"].to_numpy()[order].astype(np.int64))
        items.append(part["item_id"].to_numpy()[order])
    users = np.concatenate(users) if users else np.zeros(0, np.int64)
    items = np.concatenate(items) if items else np.zeros(0, np.int64)
    check_id_range(users, num_users, "user")
    check_id_range(items, num_items, "item")
    # A stable sort by user keeps each part's time order and the parts in the order given.
    by_user = np.argsort(users, kind="stable")
    indptr = np.zeros(num_users + 1, np.int64)
    np.cumsum(np.bincount(users, minlength=num_users), out=indptr[1:])
    return UserSequences(indptr=indptr, items=items[by_user].astype(np.int32))
