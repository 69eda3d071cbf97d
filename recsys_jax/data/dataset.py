"""The in-memory data set every loader produces and every later stage consumes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from recsys_jax.data.errors import DataError

INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
ITEM_COLUMNS = ("item_id", "title", "year", "genres")
USER_COLUMNS = ("user_id", "age", "gender", "occupation", "zip")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Ratings plus item and user side information.

    Attributes:
      name: data set name, e.g. ``"ml-100k"``.
      interactions: one row per event with columns ``user_id`` (int64), ``item_id`` (int64),
        ``rating`` (float32) and ``timestamp`` (int64, Unix seconds), in file order.
      items: the catalogue, one row per item: ``item_id`` (int64), ``title`` (str, as the
        data set prints it, year included, e.g. ``"Star Wars (1977)"``), ``year`` (nullable
        Int64) and ``genres`` (tuple of genre names, possibly empty).
      users: ``user_id`` plus whichever of ``age``, ``gender``, ``occupation``, ``zip`` the data
        set has; ``None`` when it has no user table.
      genre_names: every genre the data set defines, in its canonical order.
      rating_scale: (lowest, highest) rating the data set allows.
      source: where the data came from (a directory, the cache, a URL or a wheel).
      notes: things a run's report should show about this copy, one sentence each, e.g. an
        optional file that was missing and what was lost with it (each was also logged as a
        warning when the data was read).
      missing_optional: the optional files (names relative to the data set's folder) that
        were absent, e.g. ``("u.user",)``: no user table, so no demographic features.
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None
    genre_names: tuple[str, ...]
    rating_scale: tuple[float, float]
    source: str = ""
    notes: tuple[str, ...] = ()
    missing_optional: tuple[str, ...] = ()

    @property
    def num_users(self) -> int:
        """Distinct users that have at least one interaction."""
        return int(self.interactions["user_id"].nunique())

    @property
    def num_items(self) -> int:
        """Distinct items that have at least one interaction."""
        return int(self.interactions["item_id"].nunique())

    def validate(self) -> Dataset:
        """Checks columns, dtypes, rating range and that every interaction's item is catalogued.

        Returns ``self`` so loaders can end with ``return Dataset(...).validate()``.

        Raises:
          DataError: naming the data set and what is wrong.
        """
        where = f"data set {self.name!r}"
        _require_columns(self.interactions, INTERACTION_COLUMNS, f"{where} interactions")
        _require_columns(self.items, ITEM_COLUMNS, f"{where} items")
        if self.users is not None:
            _require_columns(self.users, ("user_id",), f"{where} users")
        if len(self.interactions) == 0:
            raise DataError(f"{where} has no interactions")
        ratings = self.interactions["rating"].to_numpy()
        if not np.all(np.isfinite(ratings)):
            raise DataError(f"{where} has {int((~np.isfinite(ratings)).sum())} NaN/inf ratings")
        low, high = self.rating_scale
        outside = (ratings < low) | (ratings > high)
        if outside.any():
            raise DataError(f"{where} has {int(outside.sum())} ratings outside "
                            f"[{low}, {high}], e.g. {ratings[outside][0]}")
        if self.items["item_id"].duplicated().any():
            raise DataError(f"{where} lists some items twice in its catalogue")
        missing = ~self.interactions["item_id"].isin(self.items["item_id"])
        if missing.any():
            example = int(self.interactions["item_id"][missing].iloc[0])
            raise DataError(f"{where} has {int(missing.sum())} interactions with items missing "
                            f"from the catalogue, e.g. item {example}")
        return self

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, interactions={len(self.interactions)}, "
                f"users={self.num_users}, items={len(self.items)}, source={self.source!r})")


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{what} lack column(s) {missing}; found {list(frame.columns)}")
