"""User and item feature matrices for the two-tower model, fitted on training events only.

User features (one row per encoded user):
  * history statistics from the *training* events: log(1 + count), mean and standard deviation
    of the ratings, per-genre share of the user's events and per-genre mean rating (the user's
    own mean where they rated nothing of that genre);
  * demographics where the data set has them: age, gender one-hot, occupation one-hot (from the
    users table, which holds no events).
Item features (one row per encoded item): the title embedding (see ``text_embeddings``), genre
one-hot, release year and a "year unknown" flag.
Optional activity features (``activity=True``), also from training events only: first, mean and
last event day of each user and each item, and each item's log training count.

Nothing here reads validation or test events: every builder takes the training part alone, so a
held-out event cannot change a feature. Users without a training event get the training
population's values (global mean rating, zero shares).

Normalisation: each column is standardised with the mean and standard deviation of the matrix it
was fitted on (users with training events; the catalogue for items), saved next to the model as
``features.npz`` and applied unchanged when a user is encoded at serving time.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_jax import fileio

_MIN_STD = 1e-6


@dataclasses.dataclass(frozen=True)
class FeatureMatrix:
    """Named float32 columns, one row per encoded id."""

    values: np.ndarray
    names: tuple[str, ...]

    def __post_init__(self):
        if self.values.ndim != 2 or self.values.shape[1] != len(self.names):
            raise ValueError(f"{self.values.shape} values for {len(self.names)} names")

    @staticmethod
    def concat(*parts: FeatureMatrix) -> FeatureMatrix:
        """Columns of all ``parts`` side by side (equal row counts)."""
        return FeatureMatrix(np.concatenate([p.values for p in parts], axis=1).astype(np.float32),
                             tuple(n for p in parts for n in p.names))


@dataclasses.dataclass(frozen=True)
class Standardizer:
    """Per-column ``(x - mean) / std`` fitted on training rows (constant columns: std 1)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray, rows: np.ndarray | None = None) -> Standardizer:
        """Fits on ``values[rows]`` (all rows when ``rows`` is None)."""
        fit_on = np.asarray(values, np.float64)
        if rows is not None:
            fit_on = fit_on[rows]
        if len(fit_on) == 0:
            raise ValueError("cannot fit a standardizer on zero rows")
        std = fit_on.std(axis=0)
        return cls(fit_on.mean(axis=0).astype(np.float32),
                   np.where(std < _MIN_STD, 1.0, std).astype(np.float32))

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """The standardised float32 copy of ``values`` (``[..., d]``)."""
        return ((np.asarray(values, np.float32) - self.mean) / self.std).astype(np.float32)


def genre_matrix(genres: Sequence[Sequence[str]], genre_names: Sequence[str]) -> np.ndarray:
    """Bool ``[num_items, num_genres]``; unknown genre names raise ``ValueError``."""
    index = {g: j for j, g in enumerate(genre_names)}
    out = np.zeros((len(genres), len(genre_names)), bool)
    for row, names in enumerate(genres):
        for g in names:
            if g not in index:
                raise ValueError(f"item row {row}: genre {g!r} not in {list(genre_names)}")
            out[row, index[g]] = True
    return out


def user_history_features(users: np.ndarray, items: np.ndarray, ratings: np.ndarray, *,
                          num_users: int, item_genres: np.ndarray,
                          genre_names: Sequence[str]) -> FeatureMatrix:
    """History statistics of each user over the given (training) events.

    Args:
      users, items, ratings: the training events (encoded ids).
      num_users: rows of the result.
      item_genres: bool ``[num_items, num_genres]``.
      genre_names: column labels of ``item_genres``.
    """
    users = np.asarray(users, np.int64)
    items = np.asarray(items, np.int64)
    ratings = np.asarray(ratings, np.float64)
    genres = np.asarray(item_genres, np.float64)[items]            # [events, G]
    genre_count = np.zeros((num_users, genres.shape[1]))
    genre_total = np.zeros((num_users, genres.shape[1]))
    np.add.at(genre_count, users, genres)
    np.add.at(genre_total, users, genres * ratings[:, None])
    return _history_statistics(
        np.bincount(users, minlength=num_users).astype(np.float64),
        np.bincount(users, ratings, minlength=num_users),
        np.bincount(users, ratings * ratings, minlength=num_users),
        genre_count, genre_total, global_mean=float(ratings.mean()) if len(ratings) else 0.0,
        genre_names=genre_names)


def history_feature_names(genre_names: Sequence[str]) -> tuple[str, ...]:
    """The column names of ``user_history_features``, in order."""
    return (("log_count", "rating_mean", "rating_std")
            + tuple(f"share_{g}" for g in genre_names)
            + tuple(f"mean_rating_{g}" for g in genre_names))


def rating_statistics(count: np.ndarray, total: np.ndarray, squares: np.ndarray, *,
                      global_mean: float) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, std)`` of the ratings from per-row count, Σr and Σr² (float64); rows with no
    event get ``global_mean`` and 0."""
    has = count > 0
    mean = np.where(has, total / np.maximum(count, 1), global_mean)
    var = np.where(has, squares / np.maximum(count, 1) - mean * mean, 0.0)
    return mean, np.sqrt(np.maximum(var, 0.0))


def _history_statistics(count: np.ndarray, total: np.ndarray, squares: np.ndarray,
                        genre_count: np.ndarray, genre_total: np.ndarray, *,
                        global_mean: float, genre_names: Sequence[str]) -> FeatureMatrix:
    """The ``user_history_features`` columns from per-row sums (count, Σr, Σr², per-genre
    count and Σr); rows with no event get ``global_mean`` and zero shares."""
    mean, std = rating_statistics(count, total, squares, global_mean=global_mean)
    share = genre_count / np.maximum(count, 1)[:, None]
    genre_mean = np.where(genre_count > 0, genre_total / np.maximum(genre_count, 1),
                          mean[:, None])
    values = np.column_stack([np.log1p(count), mean, std, share, genre_mean])
    return FeatureMatrix(values.astype(np.float32), history_feature_names(genre_names))


def activity_features(ids: np.ndarray, timestamps: np.ndarray, *, num_rows: int,
                      prefix: str) -> FeatureMatrix:
    """When the (training) events of each user or item happened, in days.

    Columns ``<prefix>_first_day``, ``<prefix>_mean_day``, ``<prefix>_last_day`` (Unix days;
    rows without events get the events' mean) and, for items, ``item_log_count`` is added by
    ``item_activity_features``. The split protocols hold out the *latest* events, so when a
    user was active and when an item was being watched is what lets the towers match the two.
    """
    ids = np.asarray(ids, np.int64)
    days = np.asarray(timestamps, np.float64) / 86400.0
    count = np.bincount(ids, minlength=num_rows)
    fill = float(days.mean()) if len(days) else 0.0
    mean = np.where(count > 0, np.bincount(ids, days, minlength=num_rows) / np.maximum(count, 1),
                    fill)
    first = np.full(num_rows, np.inf)
    last = np.full(num_rows, -np.inf)
    np.minimum.at(first, ids, days)
    np.maximum.at(last, ids, days)
    first = np.where(count > 0, first, fill)
    last = np.where(count > 0, last, fill)
    return FeatureMatrix(np.column_stack([first, mean, last]).astype(np.float32),
                         (f"{prefix}_first_day", f"{prefix}_mean_day", f"{prefix}_last_day"))


def item_activity_features(items: np.ndarray, timestamps: np.ndarray,
                           num_items: int) -> FeatureMatrix:
    """``item_log_count`` (log 1 + training events) and the item's ``activity_features``."""
    count = np.bincount(np.asarray(items, np.int64), minlength=num_items)
    return FeatureMatrix.concat(
        FeatureMatrix(np.log1p(count)[:, None].astype(np.float32), ("item_log_count",)),
        activity_features(items, timestamps, num_rows=num_items, prefix="item"))


def demographic_features(users: pd.DataFrame | None, num_users: int) -> FeatureMatrix:
    """Age, gender and occupation one-hots from the (encoded) users table, if any.

    Missing users or values give zeros (age: the table's mean age). Categories come from the
    users table, sorted, so the columns do not depend on any split.
    """
    if users is None or len(users) == 0:
        return FeatureMatrix(np.zeros((num_users, 0), np.float32), ())
    ids = users["user_id"].to_numpy(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= num_users):
        raise ValueError("users table holds ids outside the encoded range; encode it first")
    parts, names = [], []
    if "age" in users and users["age"].notna().any():
        age = pd.to_numeric(users["age"], errors="coerce").to_numpy(np.float64)
        column = np.full(num_users, np.nanmean(age))
        column[ids] = np.where(np.isnan(age), np.nanmean(age), age)
        parts.append(column[:, None])
        names.append("age")
    for field in ("gender", "occupation"):
        if field not in users or users[field].isna().all():
            continue
        labels = users[field].astype("string")
        categories = sorted(labels.dropna().unique())
        onehot = np.zeros((num_users, len(categories)))
        codes = pd.Categorical(labels, categories=categories).codes
        known = codes >= 0
        onehot[ids[known], codes[known]] = 1.0
        parts.append(onehot)
        names += [f"{field}_{c}" for c in categories]
    if not parts:
        return FeatureMatrix(np.zeros((num_users, 0), np.float32), ())
    return FeatureMatrix(np.concatenate(parts, axis=1).astype(np.float32), tuple(names))


def item_content_features(items: pd.DataFrame, genre_names: Sequence[str],
                          title_embeddings: np.ndarray | None = None) -> FeatureMatrix:
    """Title embedding (optional), genre one-hot, release year and a year-unknown flag.

    ``items`` must be the encoded catalogue (``items.item_id`` equals the row position).
    """
    if not np.array_equal(items["item_id"].to_numpy(), np.arange(len(items))):
        raise ValueError("items.item_id must equal the row position (encode the data set)")
    parts = []
    if title_embeddings is not None:
        title_embeddings = np.asarray(title_embeddings, np.float32)
        if title_embeddings.shape[0] != len(items):
            raise ValueError(f"{title_embeddings.shape[0]} title embeddings for {len(items)} "
                             "items")
        parts.append(FeatureMatrix(title_embeddings, tuple(
            f"title_{j}" for j in range(title_embeddings.shape[1]))))
    parts.append(FeatureMatrix(genre_matrix(items["genres"], genre_names).astype(np.float32),
                               tuple(f"genre_{g}" for g in genre_names)))
    year = pd.to_numeric(items["year"], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    missing = np.isnan(year)
    fill = np.nanmean(year) if (~missing).any() else 0.0
    parts.append(FeatureMatrix(np.column_stack([np.where(missing, fill, year),
                                                missing]).astype(np.float32),
                               ("year", "year_unknown")))
    return FeatureMatrix.concat(*parts)


def user_histories(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray, *,
                   num_users: int, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's ``max_len`` most recent (training) items, for the history tower.

    Returns:
      ``(ids [num_users, max_len] int32, mask [num_users, max_len] float32)``; ties in time are
      broken by item id, padding has id 0 and mask 0.
    """
    if max_len <= 0:
        raise ValueError(f"max_len must be positive, got {max_len}")
    users = np.asarray(users, np.int64)
    items = np.asarray(items, np.int64)
    order = np.lexsort((-items, -np.asarray(timestamps, np.int64), users))  # newest first
    users, items = users[order], items[order]
    starts = np.searchsorted(users, np.arange(num_users))
    position = np.arange(len(users)) - starts[users]
    keep = position < max_len
    ids = np.zeros((num_users, max_len), np.int32)
    mask = np.zeros((num_users, max_len), np.float32)
    ids[users[keep], position[keep]] = items[keep]
    mask[users[keep], position[keep]] = 1.0
    return ids, mask


def user_time_order(users: np.ndarray, items: np.ndarray,
                    timestamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Events sorted by (user, time, item id), and each sorted row's group-start position."""
    order = np.lexsort((items, np.asarray(timestamps, np.int64), users))
    sorted_users = users[order]
    first_of_user = np.searchsorted(sorted_users, sorted_users)
    return order, first_of_user


def sums_before(values: np.ndarray, first_of_user: np.ndarray) -> np.ndarray:
    """Per sorted row, the sum of ``values`` over the same user's earlier rows."""
    before_row = np.cumsum(values, axis=0) - values                # sum of all earlier rows
    return before_row - before_row[first_of_user]


def causal_user_features(users: np.ndarray, items: np.ndarray, ratings: np.ndarray,
                         timestamps: np.ndarray, *, item_genres: np.ndarray,
                         genre_names: Sequence[str]) -> FeatureMatrix:
    """For every event, ``user_history_features`` of its user over the user's *earlier* events.

    "Earlier" is the order (time, item id), so ties in time are broken as in ``user_histories``.
    This is how the user looked just before the event: a training pair (user, item) described
    this way is the same task as the held-out events of the temporal protocols (predict the
    next item from the past), and its own item never appears in its inputs.

    Returns:
      One row per event, in the order of the arguments.
    """
    users = np.asarray(users, np.int64)
    items = np.asarray(items, np.int64)
    ratings = np.asarray(ratings, np.float64)
    order, first = user_time_order(users, items, timestamps)
    r = ratings[order]
    genres = np.asarray(item_genres, np.float64)[items[order]]
    stats = _history_statistics(
        (np.arange(len(order)) - first).astype(np.float64),
        sums_before(r, first), sums_before(r * r, first),
        sums_before(genres, first), sums_before(genres * r[:, None], first),
        global_mean=float(ratings.mean()) if len(ratings) else 0.0, genre_names=genre_names)
    return _in_argument_order(stats, order)


def causal_activity_features(users: np.ndarray, items: np.ndarray,
                             timestamps: np.ndarray) -> FeatureMatrix:
    """For every event, the user's ``activity_features`` over their earlier events (first,
    mean and last day; the events' mean day where there is none)."""
    users = np.asarray(users, np.int64)
    order, first = user_time_order(users, np.asarray(items, np.int64), timestamps)
    return _in_argument_order(
        sorted_causal_activity(np.asarray(timestamps, np.float64)[order], first), order)


def sorted_causal_activity(sorted_timestamps: np.ndarray,
                           first_of_user: np.ndarray) -> FeatureMatrix:
    """``causal_activity_features`` of events already in ``user_time_order``."""
    days = np.asarray(sorted_timestamps, np.float64) / 86400.0
    fill = float(days.mean()) if len(days) else 0.0
    position = np.arange(len(days))
    count = position - first_of_user
    has = count > 0
    values = np.column_stack([
        np.where(has, days[first_of_user], fill),
        np.where(has, sums_before(days, first_of_user) / np.maximum(count, 1), fill),
        np.where(has, days[np.maximum(position - 1, 0)], fill)])
    return FeatureMatrix(values.astype(np.float32),
                         ("user_first_day", "user_mean_day", "user_last_day"))


def _in_argument_order(sorted_rows: FeatureMatrix, order: np.ndarray) -> FeatureMatrix:
    values = np.empty_like(sorted_rows.values)
    values[order] = sorted_rows.values
    return FeatureMatrix(values, sorted_rows.names)


def causal_histories(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray, *,
                     max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """For every event, the ``max_len`` items its user had before it, newest first.

    The per-event counterpart of ``user_histories`` (same tie order): for a user's last event
    plus one, it gives the same row.

    Returns:
      ``(ids [events, max_len] int32, mask [events, max_len] float32)`` in argument order.
    """
    if max_len <= 0:
        raise ValueError(f"max_len must be positive, got {max_len}")
    users = np.asarray(users, np.int64)
    items = np.asarray(items, np.int64)
    order, first = user_time_order(users, items, timestamps)
    position = np.arange(len(order))
    back = position[:, None] - np.arange(1, max_len + 1)[None, :]  # [events, L], newest first
    valid = back >= first[:, None]
    ids = np.where(valid, items[order][np.maximum(back, 0)], 0).astype(np.int32)
    out_ids = np.empty_like(ids)
    out_mask = np.empty(ids.shape, np.float32)
    out_ids[order] = ids
    out_mask[order] = valid
    return out_ids, out_mask


@dataclasses.dataclass(frozen=True)
class CausalUserInputs:
    """Per training event, the user tower's inputs as of just before the event.

    Attributes:
      user: float32 ``[events, d_user]`` standardised with the ``TwoTowerFeatures`` scaler.
      history_ids, history_mask: ``[events, L]`` (``L = 0`` without the history tower).
    """

    user: np.ndarray
    history_ids: np.ndarray
    history_mask: np.ndarray

    def subset(self, rows: np.ndarray) -> CausalUserInputs:
        """The inputs of the events selected by ``rows`` (a mask or indices)."""
        return CausalUserInputs(self.user[rows], self.history_ids[rows], self.history_mask[rows])


@dataclasses.dataclass(frozen=True)
class TwoTowerFeatures:
    """Standardised model inputs plus what is needed to encode new users the same way.

    Attributes:
      user: float32 ``[num_users, d_user]`` standardised user features.
      item: float32 ``[num_items, d_item]`` standardised item features.
      user_names, item_names: column labels.
      user_scaler, item_scaler: the fitted standardisers.
      history_ids, history_mask: ``[num_users, L]`` most recent training items (``L = 0``
        when the history tower is off).
    """

    user: np.ndarray
    item: np.ndarray
    user_names: tuple[str, ...]
    item_names: tuple[str, ...]
    user_scaler: Standardizer
    item_scaler: Standardizer
    history_ids: np.ndarray
    history_mask: np.ndarray

    def save(self, path: str | os.PathLike) -> None:
        """Writes everything to one ``.npz`` (no pickles), atomically."""
        with fileio.atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, user=self.user, item=self.item,
                     user_names=np.asarray(self.user_names, str),
                     item_names=np.asarray(self.item_names, str),
                     user_mean=self.user_scaler.mean, user_std=self.user_scaler.std,
                     item_mean=self.item_scaler.mean, item_std=self.item_scaler.std,
                     history_ids=self.history_ids, history_mask=self.history_mask)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TwoTowerFeatures:
        """Reads a file written by ``save``."""
        with np.load(Path(path), allow_pickle=False) as z:
            return cls(user=z["user"], item=z["item"],
                       user_names=tuple(z["user_names"].tolist()),
                       item_names=tuple(z["item_names"].tolist()),
                       user_scaler=Standardizer(z["user_mean"], z["user_std"]),
                       item_scaler=Standardizer(z["item_mean"], z["item_std"]),
                       history_ids=z["history_ids"], history_mask=z["history_mask"])


def build_causal_user_inputs(train: pd.DataFrame, features: TwoTowerFeatures, *,
                             users: pd.DataFrame | None, items: pd.DataFrame,
                             genre_names: Sequence[str], num_users: int,
                             use_demographics: bool = True, activity: bool = False
                             ) -> CausalUserInputs:
    """``CausalUserInputs`` for every row of ``train``, with the columns, scaler and history
    length of ``features`` (built by ``build_two_tower_features`` with the same settings).

    These are the rows materialised, events × (d_user + 2L) numbers: the reference the
    retrieval task's training matches (tested), which itself computes each pair's row inside
    the step from the O(events) tables of ``causal_events.build_causal_event_tables``.

    Raises:
      ValueError: when the columns come out differently from ``features.user_names``.
    """
    u = train["user_id"].to_numpy(np.int64)
    i = train["item_id"].to_numpy(np.int64)
    t = train["timestamp"].to_numpy()
    parts = [causal_user_features(u, i, train["rating"].to_numpy(), t,
                                  item_genres=genre_matrix(items["genres"], genre_names),
                                  genre_names=genre_names)]
    if use_demographics:
        demographics = demographic_features(users, num_users)
        parts.append(FeatureMatrix(demographics.values[u], demographics.names))
    if activity:
        parts.append(causal_activity_features(u, i, t))
    user = FeatureMatrix.concat(*parts)
    if user.names != features.user_names:
        raise ValueError("causal user columns differ from the features' columns: "
                         f"{user.names} vs {features.user_names}")
    history_len = features.history_ids.shape[1]
    if history_len:
        hist_ids, hist_mask = causal_histories(u, i, t, max_len=history_len)
    else:
        hist_ids = np.zeros((len(u), 0), np.int32)
        hist_mask = np.zeros((len(u), 0), np.float32)
    return CausalUserInputs(features.user_scaler(user.values), hist_ids, hist_mask)


def build_two_tower_features(train: pd.DataFrame, *, users: pd.DataFrame | None,
                             items: pd.DataFrame, genre_names: Sequence[str], num_users: int,
                             title_embeddings: np.ndarray | None = None,
                             use_demographics: bool = True,
                             history_len: int = 0, activity: bool = False,
                             scalers: tuple[Standardizer, Standardizer] | None = None
                             ) -> TwoTowerFeatures:
    """All two-tower inputs from the training events and the (encoded) side tables.

    Args:
      train: training events with ``user_id``, ``item_id``, ``rating`` (and ``timestamp`` when
        ``history_len`` > 0), encoded ids. Never pass validation or test events here.
      users: encoded users table or None.
      items: encoded catalogue.
      genre_names: the data set's genres.
      num_users: rows of the user matrix.
      title_embeddings: ``[num_items, d]`` or None to leave titles out.
      use_demographics: include age/gender/occupation.
      history_len: most recent training items per user for the history tower (0: off).
      activity: add when users and items had their training events (``activity_features``)
        and the items' training counts.
      scalers: ``(user, item)`` standardisers fitted before, to encode other events (e.g. train
        + validation when scoring test) exactly as the training rows; None fits them here.
    """
    u = train["user_id"].to_numpy(np.int64)
    i = train["item_id"].to_numpy(np.int64)
    genres = genre_matrix(items["genres"], genre_names)
    user_parts = [user_history_features(u, i, train["rating"].to_numpy(), num_users=num_users,
                                        item_genres=genres, genre_names=genre_names)]
    if use_demographics:
        user_parts.append(demographic_features(users, num_users))
    item = item_content_features(items, genre_names, title_embeddings)
    if activity:
        t = train["timestamp"].to_numpy()
        user_parts.append(activity_features(u, t, num_rows=num_users, prefix="user"))
        item = FeatureMatrix.concat(item, item_activity_features(i, t, len(items)))
    user = FeatureMatrix.concat(*user_parts)
    if scalers is None:
        active = np.flatnonzero(np.bincount(u, minlength=num_users) > 0)
        user_scaler = Standardizer.fit(user.values, active if len(active) else None)
        item_scaler = Standardizer.fit(item.values)
    else:
        user_scaler, item_scaler = scalers
    if history_len > 0:
        hist_ids, hist_mask = user_histories(u, i, train["timestamp"].to_numpy(),
                                             num_users=num_users, max_len=history_len)
    else:
        hist_ids = np.zeros((num_users, 0), np.int32)
        hist_mask = np.zeros((num_users, 0), np.float32)
    return TwoTowerFeatures(user=user_scaler(user.values), item=item_scaler(item.values),
                            user_names=user.names, item_names=item.names,
                            user_scaler=user_scaler, item_scaler=item_scaler,
                            history_ids=hist_ids, history_mask=hist_mask)
