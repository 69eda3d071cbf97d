import numpy as np
import pandas as pd
import pytest

from recsys_jax.data.dataset import Dataset
from recsys_jax.data.errors import DataError


def _dataset(**overrides) -> Dataset:
    fields = dict(
        name="tiny",
        interactions=pd.DataFrame({
            "user_id": np.array([1, 1, 2], dtype=np.int64),
            "item_id": np.array([10, 11, 10], dtype=np.int64),
            "rating": np.array([4.0, 5.0, 1.0], dtype=np.float32),
            "timestamp": np.array([3, 1, 2], dtype=np.int64),
        }),
        items=pd.DataFrame({
            "item_id": np.array([10, 11, 12], dtype=np.int64),
            "title": ["A (1990)", "B (1991)", "C (1992)"],
            "year": pd.array([1990, 1991, 1992], dtype="Int64"),
            "genres": [("Drama",), ("Comedy", "Drama"), ()],
        }),
        users=None,
        genre_names=("Comedy", "Drama"),
        rating_scale=(1.0, 5.0),
    )
    fields.update(overrides)
    return Dataset(**fields)


def test_valid_dataset_counts():
    dataset = _dataset().validate()
    assert (dataset.num_users, dataset.num_items) == (2, 2)
    assert "interactions=3" in repr(dataset)


@pytest.mark.parametrize("rating, message", [(np.nan, "NaN"), (6.0, "outside"), (0.5, "outside")])
def test_bad_ratings_are_rejected(rating, message):
    interactions = _dataset().interactions.copy()
    interactions.loc[1, "rating"] = rating
    with pytest.raises(DataError, match=message):
        _dataset(interactions=interactions).validate()


def test_missing_column_named():
    with pytest.raises(DataError, match=r"lack column\(s\) \['timestamp'\]"):
        _dataset(interactions=_dataset().interactions.drop(columns="timestamp")).validate()


def test_empty_and_uncatalogued_items_rejected():
    empty = _dataset().interactions.iloc[:0]
    with pytest.raises(DataError, match="no interactions"):
        _dataset(interactions=empty).validate()
    stray = _dataset().interactions.copy()
    stray.loc[2, "item_id"] = 99
    with pytest.raises(DataError, match="e.g. item 99"):
        _dataset(interactions=stray).validate()
