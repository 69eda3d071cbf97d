import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from recsys_jax.data import stats
from recsys_jax.data.dataset import Dataset
from recsys_jax.data.errors import DataError

DAY = 86_400
T0 = 946_684_800  # 2000-01-01 00:00:00 UTC


def _tiny(users: pd.DataFrame | None = None, **interaction_overrides) -> Dataset:
    # user -> items: 1 -> 10, 11, 12;  2 -> 10, 10 (a repeat);  3 -> 12, 10.
    interactions = pd.DataFrame({
        "user_id": np.array([1, 1, 1, 2, 2, 3, 3], dtype=np.int64),
        "item_id": np.array([10, 11, 12, 10, 10, 12, 10], dtype=np.int64),
        "rating": np.array([4, 5, 3, 4, 2, 4.5, 1], dtype=np.float32),
        "timestamp": np.array([T0, T0 + DAY, T0 + 2 * DAY, T0 + 10 * DAY, T0 + 11 * DAY,
                               T0 + 36 * DAY + DAY // 2, T0 + 5 * DAY], dtype=np.int64),
    })
    for column, values in interaction_overrides.items():
        interactions[column] = values
    items = pd.DataFrame({
        "item_id": np.array([10, 11, 12, 13], dtype=np.int64),  # 13 is never rated
        "title": ["A (1990)", "B (1991)", "C (1992)", "D (1993)"],
        "year": pd.array([1990, 1991, 1992, 1993], dtype="Int64"),
        "genres": [("Drama",), ("Comedy", "Drama"), (), ("Horror",)],
    })
    return Dataset(name="tiny", interactions=interactions, items=items, users=users,
                   genre_names=("Comedy", "Drama", "Horror"), rating_scale=(0.5, 5.0),
                   source="hand-built")


@pytest.fixture
def tiny_stats() -> stats.DatasetStats:
    users = pd.DataFrame({"user_id": np.array([1, 2, 3, 4], dtype=np.int64)})
    return stats.describe_dataset(_tiny(users=users))


def test_sizes_and_density(tiny_stats):
    assert (tiny_stats.name, tiny_stats.source) == ("tiny", "hand-built")
    assert tiny_stats.num_ratings == 7
    assert (tiny_stats.num_users, tiny_stats.num_items) == (3, 3)
    assert (tiny_stats.catalogue_users, tiny_stats.catalogue_items) == (4, 4)
    assert tiny_stats.density == pytest.approx(7 / 9)
    assert tiny_stats.num_genres == 3
    assert tiny_stats.repeated_pairs == 1  # user 2 rated item 10 twice


def test_rating_histogram_and_mean(tiny_stats):
    assert tiny_stats.rating_histogram == {1.0: 1, 2.0: 1, 3.0: 1, 4.0: 2, 4.5: 1, 5.0: 1}
    assert list(tiny_stats.rating_histogram) == sorted(tiny_stats.rating_histogram)
    assert tiny_stats.mean_rating == pytest.approx(23.5 / 7)


def test_time_range(tiny_stats):
    assert (tiny_stats.first_timestamp, tiny_stats.last_timestamp) == (T0, T0 + 36.5 * DAY)
    assert (tiny_stats.first_date, tiny_stats.last_date) == ("2000-01-01", "2000-02-06")
    assert tiny_stats.span_days == pytest.approx(36.5)


def test_dates_are_utc():
    one_second_before_2000 = np.full(7, T0 - 1, dtype=np.int64)
    result = stats.describe_dataset(_tiny(timestamp=one_second_before_2000))
    assert result.first_date == result.last_date == "1999-12-31"
    assert result.span_days == 0


def test_activity_quantiles(tiny_stats):
    # Ratings per user: [2, 2, 3]; linear interpolation at position q * (n - 1) = 2q.
    assert tiny_stats.ratings_per_user.to_dict() == pytest.approx(
        dict(min=2, p5=2, p25=2, p50=2, p75=2.5, p95=2.9, max=3))
    # Ratings per item: [1, 2, 4] (item 13 has none and is not counted).
    expected = dict(min=1, p5=1.1, p25=1.5, p50=2, p75=3, p95=3.8, max=4)
    assert tiny_stats.ratings_per_item.to_dict() == pytest.approx(expected)


def test_format_starts_with_the_users_items_line(tiny_stats):
    text = stats.format_stats(tiny_stats)
    lines = text.splitlines()
    assert lines[0] == "Users: 3, Items: 3"
    assert "Ratings: 7 (density 77.7778%)" in lines
    assert "Catalogue: 4 items, 4 users" in lines
    assert "Mean rating: 3.357" in lines
    assert "  4.5: 1 (14.3%)" in lines
    assert "Time range: 2000-01-01 to 2000-02-06 (36.5 days, UTC)" in lines
    assert "Ratings per item: min 1, 5% 1.1, 25% 1.5, median 2, 75% 3, 95% 3.8, max 4" in lines
    assert "Genres: 3" in lines
    assert "Repeated (user, item) pairs: 1" in lines


def test_first_line_has_no_thousands_separators(tiny_stats):
    large = dataclasses.replace(tiny_stats, num_users=200_000, num_items=1_000_000)
    assert stats.format_stats(large).splitlines()[0] == "Users: 200000, Items: 1000000"


def test_without_a_user_table():
    result = stats.describe_dataset(_tiny())
    assert result.catalogue_users is None
    assert "Catalogue: 4 items" in stats.format_stats(result).splitlines()


def test_to_dict_is_json_ready(tiny_stats):
    as_dict = json.loads(json.dumps(tiny_stats.to_dict()))
    assert as_dict["rating_histogram"] == {"1": 1, "2": 1, "3": 1, "4": 2, "4.5": 1, "5": 1}
    assert as_dict["ratings_per_user"]["p75"] == 2.5
    assert as_dict["first_date"] == "2000-01-01"
    assert as_dict["num_users"] == 3 and as_dict["catalogue_users"] == 4


def test_empty_dataset_is_an_error():
    empty = _tiny().interactions.iloc[:0]
    dataset = dataclasses.replace(_tiny(), interactions=empty)
    with pytest.raises(DataError, match="no interactions"):
        stats.describe_dataset(dataset)


def test_long_histograms_are_cut_in_the_text(tiny_stats):
    many = dataclasses.replace(tiny_stats, rating_histogram={float(v): 1 for v in range(1, 31)})
    lines = stats.format_stats(many).splitlines()
    assert "  20: 1 (14.3%)" in lines and "  21: 1 (14.3%)" not in lines
    assert "  ... and 10 more values up to 30" in lines
