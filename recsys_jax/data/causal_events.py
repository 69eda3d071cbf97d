"""Each training pair's causal user inputs as a pointer into O(events) tables.

``features.build_causal_user_inputs`` materialises, for every training pair, the user tower's
inputs as of just before the pair: ``d_user`` feature values plus ``L`` history ids and ``L``
mask values, events × (d_user + 2L) numbers (4.9 GB at the ML-20M shape). ``CausalEventTables``
holds the same information in arrays of O(events × a few + blocks × genres + users + items), and
a pair is one int: its *position* ``p`` in the training events sorted by (user, time, item id),
the tie order of ``features.causal_histories``. The rows are computed inside the jitted training
step (``tasks.pair_inputs.causal_pair_inputs``) and equal the materialised ones (tested).

Layout, for E training events in that order, U users, N items, G genres, K = ``block``:

  event_item         int32 [E]          the events' items; a pair's history is
                                        ``event_item[max(s, p - L) : p]``, newest first
  event_rating       float32 [E]        the events' ratings
  event_stats        float32 [E, 2 (+3)] raw mean and std of the user's ratings before each
                                        event (+ first, mean and last day: ``activity``)
  user_start         int32 [U]          s: position of each user's first event
  user_block         int32 [U]          each user's first row of the block tables
  block_genre_count  float32 [C, G]     per user and every K events, the per-genre count and
  block_genre_total  float32 [C, G]     rating sum of the user's events before the block;
                                        C = Σ_u ceil(n_u / K) ≤ E / K + U
  user_static        float32 [U, d]     raw per-user columns (demographics; d may be 0)
  item_genres        float32 [N, G]     genre one-hot of the catalogue
  user_mean, user_std float32 [d_user]  the user scaler (``TwoTowerFeatures.user_scaler``)

For a pair at position p of user u (s = user_start[u], n = p − s earlier events): log(1 + n);
the mean and std from ``event_stats[p]``; the per-genre count and rating sum from block row
``user_block[u] + n // K`` plus the fewer than K events from ``s + K·(n // K)`` to ``p − 1``;
share and per-genre mean from those (the user's mean where a genre has no event); the
demographics from ``user_static[u]``; the activity days from ``event_stats[p]``. Assembled in
the column order of ``TwoTowerFeatures.user_names`` and standardised. The mean and std are stored
per event, not summed, because their float32 difference of sums would lose digits that the
float64 host computation keeps.

Exactness: the counts are integers and, for ratings on a grid such as MovieLens's half stars,
the rating sums are too, so the float32 sums are exact; shares, means and the standardisation
then differ from the materialised rows by float32 rounding only (a few ulps).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_jax import fileio
from recsys_jax.data.features import (
    TwoTowerFeatures,
    demographic_features,
    genre_matrix,
    history_feature_names,
    rating_statistics,
    sorted_causal_activity,
    sums_before,
    user_time_order,
)

# Every GENRE_BLOCK events of a user the genre sums are stored; a pair adds the < GENRE_BLOCK
# events since (B × GENRE_BLOCK × G numbers per step, against storing E × 2G).
GENRE_BLOCK = 16

_ARRAYS = ("event_item", "event_rating", "event_stats", "user_start", "user_block",
           "block_genre_count", "block_genre_total", "user_static", "item_genres", "user_mean",
           "user_std")


@dataclasses.dataclass(frozen=True)
class CausalEventTables:
    """The O(events) tables each training pair's causal user inputs are gathered from (see the
    module docstring for the layout).

    Attributes:
      event_item, event_rating, event_stats, user_start, user_block, block_genre_count,
        block_genre_total, user_static, item_genres, user_mean, user_std: the arrays.
      history_len: L, the history ids gathered per pair (0: no history tower).
      block: K, the events between stored genre sums.
      activity: whether ``event_stats`` carries the three activity columns.
    """

    event_item: np.ndarray
    event_rating: np.ndarray
    event_stats: np.ndarray
    user_start: np.ndarray
    user_block: np.ndarray
    block_genre_count: np.ndarray
    block_genre_total: np.ndarray
    user_static: np.ndarray
    item_genres: np.ndarray
    user_mean: np.ndarray
    user_std: np.ndarray
    history_len: int
    block: int
    activity: bool

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays by name (what a training step reads: ``loop.fit``'s ``tables``)."""
        return {name: getattr(self, name) for name in _ARRAYS}

    @property
    def nbytes(self) -> int:
        """Bytes of all arrays."""
        return sum(a.nbytes for a in self.arrays().values())

    def save(self, path: str | os.PathLike) -> None:
        """Writes everything to one ``.npz`` (no pickles), atomically."""
        with fileio.atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, **self.arrays(), history_len=self.history_len, block=self.block,
                     activity=self.activity)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CausalEventTables:
        """Reads a file written by ``save``."""
        with np.load(Path(path), allow_pickle=False) as z:
            return cls(**{name: z[name] for name in _ARRAYS},
                       history_len=int(z["history_len"]), block=int(z["block"]),
                       activity=bool(z["activity"]))


def build_causal_event_tables(train: pd.DataFrame, features: TwoTowerFeatures, *,
                              users: pd.DataFrame | None, items: pd.DataFrame,
                              genre_names: Sequence[str], num_users: int,
                              use_demographics: bool = True, activity: bool = False,
                              block: int = GENRE_BLOCK
                              ) -> tuple[CausalEventTables, np.ndarray]:
    """The tables of ``train``'s events, with the columns, scaler and history length of
    ``features`` (built by ``build_two_tower_features`` with the same settings).

    Args:
      train: the training events (``user_id``, ``item_id``, ``rating``, ``timestamp``).
      features: the features the model is built from.
      users, items, genre_names, num_users, use_demographics, activity: as for
        ``build_two_tower_features``.
      block: K, the events between stored genre sums.

    Returns:
      ``(tables, position)``: ``position[r]`` is the position of ``train``'s row r in the
      tables' event order (int32; the pointer a training pair carries).

    Raises:
      ValueError: when the columns come out differently from ``features.user_names``.
    """
    if block <= 0:
        raise ValueError(f"block must be positive, got {block}")
    demographics = (demographic_features(users, num_users) if use_demographics else None)
    names = (history_feature_names(genre_names)
             + (demographics.names if demographics is not None else ())
             + (("user_first_day", "user_mean_day", "user_last_day") if activity else ()))
    if names != features.user_names:
        raise ValueError("causal user columns differ from the features' columns: "
                         f"{names} vs {features.user_names}")
    u = train["user_id"].to_numpy(np.int64)
    i = train["item_id"].to_numpy(np.int64)
    t = train["timestamp"].to_numpy()
    r = train["rating"].to_numpy(np.float64)
    order, first = user_time_order(u, i, t)
    su, si, sr = u[order], i[order], r[order]
    earlier = (np.arange(len(order)) - first).astype(np.float64)
    mean, std = rating_statistics(earlier, sums_before(sr, first), sums_before(sr * sr, first),
                                  global_mean=float(r.mean()) if len(r) else 0.0)
    stats = [mean, std]
    if activity:
        stats += list(sorted_causal_activity(np.asarray(t, np.float64)[order], first).values.T)
    genres = genre_matrix(items["genres"], genre_names)
    count, total, user_block = _block_genre_sums(su, si, sr, genres, num_users, block)
    position = np.empty(len(order), np.int32)
    position[order] = np.arange(len(order), dtype=np.int32)
    tables = CausalEventTables(
        event_item=si.astype(np.int32), event_rating=sr.astype(np.float32),
        event_stats=np.column_stack(stats).astype(np.float32),
        user_start=np.searchsorted(su, np.arange(num_users)).astype(np.int32),
        user_block=user_block, block_genre_count=count, block_genre_total=total,
        user_static=(demographics.values.astype(np.float32) if demographics is not None
                     else np.zeros((num_users, 0), np.float32)),
        item_genres=genres.astype(np.float32),
        user_mean=np.asarray(features.user_scaler.mean, np.float32),
        user_std=np.asarray(features.user_scaler.std, np.float32),
        history_len=int(features.history_ids.shape[1]), block=int(block),
        activity=bool(activity))
    return tables, position


def _block_genre_sums(sorted_users: np.ndarray, sorted_items: np.ndarray,
                      sorted_ratings: np.ndarray, genres: np.ndarray, num_users: int,
                      block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per user and block of ``block`` events, the per-genre count and rating sum of the user's
    events before the block: ``(count [C, G], total [C, G], user_block [U])``. One genre at a
    time, so the host never holds an events × genres array."""
    events = np.bincount(sorted_users, minlength=num_users)
    blocks = -(-events // block)                                   # ceil(n_u / K)
    user_block = np.concatenate([[0], np.cumsum(blocks)[:-1]]).astype(np.int32)
    owner = np.repeat(np.arange(num_users), blocks)
    starts = (np.searchsorted(sorted_users, owner)
              + block * (np.arange(len(owner)) - user_block[owner]))
    count = np.zeros((len(owner), genres.shape[1]), np.float32)
    total = np.zeros_like(count)
    if len(owner) == 0:
        return count, total, user_block
    for g in range(genres.shape[1]):
        has = genres[sorted_items, g].astype(np.float64)
        for out, values in ((count, has), (total, has * sorted_ratings)):
            per_block = np.add.reduceat(values, starts)          # blocks tile the events
            before = np.cumsum(per_block) - per_block            # all earlier blocks
            out[:, g] = before - before[user_block[owner]]       # ... of the same user
    return count, total, user_block
