"""Summary statistics of a data set: sizes, density, rating histogram, time range, activity."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import numpy as np
import pandas as pd

from recsys_jax.data.dataset import Dataset
from recsys_jax.data.errors import DataError

_SECONDS_PER_DAY = 86_400
# Quantile levels of the per-user / per-item counts, as named in ``Quantiles``.
_QUANTILE_LEVELS = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
# Rating scales have a handful of values; continuous scores would flood the text block.
_MAX_HISTOGRAM_LINES = 20


@dataclasses.dataclass(frozen=True)
class Quantiles:
    """Quantiles of a count distribution (NumPy's default linear interpolation)."""

    min: float
    p5: float
    p25: float
    p50: float
    p75: float
    p95: float
    max: float

    @classmethod
    def of(cls, values: np.ndarray) -> Quantiles:
        """Quantiles of a non-empty array."""
        return cls(*(float(q) for q in np.quantile(values, _QUANTILE_LEVELS)))

    def to_dict(self) -> dict[str, float]:
        """Field name -> value."""
        return dataclasses.asdict(self)

    def format(self) -> str:
        """``"min 1, 5% 1.1, 25% 2, median 3, 75% 4, 95% 9.5, max 12"``."""
        return ", ".join(f"{label} {_number(getattr(self, field))}" for label, field in (
            ("min", "min"), ("5%", "p5"), ("25%", "p25"), ("median", "p50"), ("75%", "p75"),
            ("95%", "p95"), ("max", "max")))


@dataclasses.dataclass(frozen=True)
class DatasetStats:
    """What a researcher checks first about a ratings data set.

    Attributes:
      name: the data set's name.
      source: where it came from.
      num_ratings: interactions (rows), repeats included.
      num_users: users with at least one rating.
      num_items: items with at least one rating.
      catalogue_items: items in the catalogue, rated or not.
      catalogue_users: rows of the user table, or ``None`` when there is none.
      density: ``num_ratings / (num_users * num_items)``.
      rating_histogram: rating value -> count, ascending by value.
      mean_rating: mean over all interactions.
      first_timestamp: earliest event, Unix seconds.
      last_timestamp: latest event, Unix seconds.
      first_date: UTC date of the earliest event, ISO format (``"1997-09-20"``).
      last_date: UTC date of the latest event, ISO format.
      span_days: ``(last_timestamp - first_timestamp)`` in days.
      ratings_per_user: quantiles of the ratings per rated user.
      ratings_per_item: quantiles of the ratings per rated item.
      num_genres: genres the data set defines.
      repeated_pairs: interactions that repeat an earlier (user, item) pair.
    """

    name: str
    source: str
    num_ratings: int
    num_users: int
    num_items: int
    catalogue_items: int
    catalogue_users: int | None
    density: float
    rating_histogram: dict[float, int]
    mean_rating: float
    first_timestamp: int
    last_timestamp: int
    first_date: str
    last_date: str
    span_days: float
    ratings_per_user: Quantiles
    ratings_per_item: Quantiles
    num_genres: int
    repeated_pairs: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; histogram keys become strings such as ``"4"`` or ``"4.5"``."""
        result = dataclasses.asdict(self)
        result["rating_histogram"] = {f"{value:g}": count
                                      for value, count in self.rating_histogram.items()}
        return result


def describe_dataset(dataset: Dataset) -> DatasetStats:
    """Computes :class:`DatasetStats` for ``dataset`` (seconds for 10M interactions).

    Raises:
      DataError: when the data set has no interactions.
    """
    interactions = dataset.interactions
    if len(interactions) == 0:
        raise DataError(f"data set {dataset.name!r} has no interactions to describe")
    per_user = interactions["user_id"].value_counts(sort=False).to_numpy()
    per_item = interactions["item_id"].value_counts(sort=False).to_numpy()
    ratings = interactions["rating"].to_numpy()
    histogram = pd.Series(ratings).value_counts(sort=False).sort_index()
    timestamps = interactions["timestamp"].to_numpy()
    first, last = int(timestamps.min()), int(timestamps.max())
    num_ratings, num_users, num_items = len(interactions), per_user.size, per_item.size
    return DatasetStats(
        name=dataset.name,
        source=dataset.source,
        num_ratings=num_ratings,
        num_users=num_users,
        num_items=num_items,
        catalogue_items=len(dataset.items),
        catalogue_users=None if dataset.users is None else len(dataset.users),
        density=num_ratings / (num_users * num_items),
        rating_histogram={float(value): int(count) for value, count in histogram.items()},
        # float64 accumulation: a float32 sum over millions of ratings drifts.
        mean_rating=float(ratings.mean(dtype=np.float64)),
        first_timestamp=first,
        last_timestamp=last,
        first_date=_utc_date(first),
        last_date=_utc_date(last),
        span_days=(last - first) / _SECONDS_PER_DAY,
        ratings_per_user=Quantiles.of(per_user),
        ratings_per_item=Quantiles.of(per_item),
        num_genres=len(dataset.genre_names),
        repeated_pairs=int(interactions.duplicated(["user_id", "item_id"]).sum()),
    )


def format_stats(stats: DatasetStats) -> str:
    """A readable block; the first line is exactly ``"Users: 943, Items: 1682"``."""
    lines = [
        f"Users: {stats.num_users}, Items: {stats.num_items}",
        f"Data set: {stats.name}",
        f"Ratings: {stats.num_ratings:,} (density {stats.density:.4%})",
        "Catalogue: " + f"{stats.catalogue_items:,} items"
        + ("" if stats.catalogue_users is None else f", {stats.catalogue_users:,} users"),
        f"Mean rating: {stats.mean_rating:.3f}",
        "Rating histogram:",
    ]
    histogram = list(stats.rating_histogram.items())
    for value, count in histogram[:_MAX_HISTOGRAM_LINES]:
        lines.append(f"  {_number(value)}: {count:,} ({count / stats.num_ratings:.1%})")
    if len(histogram) > _MAX_HISTOGRAM_LINES:
        lines.append(f"  ... and {len(histogram) - _MAX_HISTOGRAM_LINES} more values "
                     f"up to {_number(histogram[-1][0])}")
    lines += [
        f"Time range: {stats.first_date} to {stats.last_date} ({stats.span_days:.1f} days, UTC)",
        f"Ratings per user: {stats.ratings_per_user.format()}",
        f"Ratings per item: {stats.ratings_per_item.format()}",
        f"Genres: {stats.num_genres}",
        f"Repeated (user, item) pairs: {stats.repeated_pairs:,}",
    ]
    return "\n".join(lines)


def _utc_date(timestamp: int) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).date().isoformat()


def _number(value: float) -> str:
    """``4.0`` -> ``"4"``, ``4.5`` -> ``"4.5"``, ``1234.567`` -> ``"1,234.57"``."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")
