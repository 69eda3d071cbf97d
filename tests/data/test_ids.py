"""Tests for contiguous id encoding (recsys_jax.data.ids)."""

import json

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from recsys_jax.data.dataset import Dataset
from recsys_jax.data.errors import DataError, UnknownIdError
from recsys_jax.data.ids import (
    IdEncoder,
    IdMapping,
    IdOutOfRangeError,
    check_ids_in_range,
    encode_dataset,
)

int_ids = st.lists(st.integers(-2**62, 2**62), min_size=1, max_size=40)
str_ids = st.lists(st.text(max_size=6), min_size=1, max_size=40)


@given(st.one_of(int_ids, str_ids))
def test_round_trip_is_contiguous_and_order_preserving(values):
    encoder = IdEncoder.fit(values, "user")
    codes = encoder.transform(values)
    distinct = sorted(set(values))
    assert len(encoder) == len(distinct)
    assert codes.dtype == np.int32
    assert codes.min() >= 0 and codes.max() < len(encoder)
    assert encoder.inverse_transform(codes).tolist() == list(values)
    # Codes are ranks in sorted order.
    np.testing.assert_array_equal(encoder.transform(distinct), np.arange(len(distinct)))


@given(st.one_of(int_ids, str_ids))
def test_json_round_trip(tmp_path_factory, values):
    path = tmp_path_factory.mktemp("ids") / "ids.json"
    encoder = IdEncoder.fit(values, "item")
    encoder.save(path)
    loaded = IdEncoder.load(path)
    assert loaded == encoder
    assert loaded.kind == "item" and loaded.id_type == encoder.id_type
    np.testing.assert_array_equal(loaded.transform(values), encoder.transform(values))
    assert IdEncoder.from_json(json.loads(json.dumps(encoder.to_json()))) == encoder


def test_transform_keeps_shape_and_accepts_series():
    encoder = IdEncoder.fit(pd.Series([30, 10, 20]), "item")
    np.testing.assert_array_equal(encoder.transform(np.array([[10, 30], [20, 20]])),
                                  [[0, 2], [1, 1]])
    np.testing.assert_array_equal(encoder.transform(pd.Series([20, 10])), [1, 0])
    assert encoder.inverse_transform(np.array([[2], [0]])).tolist() == [[30], [10]]


def test_unknown_ids_are_reported_by_value():
    encoder = IdEncoder.fit([1, 2, 3], "user")
    with pytest.raises(UnknownIdError) as info:
        encoder.transform([1, 99, 7, 99, 2])
    assert info.value.kind == "user"
    assert info.value.unknown == [99, 7]  # distinct, in order of first appearance
    assert info.value.total_unknown == 2
    assert str(info.value) == "2 unknown user id(s): 99, 7"
    assert not isinstance(info.value, IndexError)


def test_many_unknown_ids_are_summarised():
    encoder = IdEncoder.fit(["a"], "item")
    with pytest.raises(UnknownIdError, match=r"8 unknown item id\(s\): 'b', 'c', 'd', 'e', 'f' "
                                             r"\(and 3 more\)"):
        encoder.transform(list("abcdefghi"))


def test_ids_of_the_wrong_type_are_unknown_not_converted():
    with pytest.raises(UnknownIdError, match="'1'"):
        IdEncoder.fit([1, 2], "user").transform(["1"])
    with pytest.raises(UnknownIdError, match="1"):
        IdEncoder.fit(["1", "2"], "user").transform([1])


def test_out_of_range_codes_are_rejected():
    encoder = IdEncoder.fit([5, 6], "item")
    with pytest.raises(IdOutOfRangeError, match=r"2 item id\(s\) outside \[0, 2\): 2, -1") as info:
        encoder.inverse_transform([0, 2, -1, 2])
    assert isinstance(info.value, UnknownIdError) and isinstance(info.value, ValueError)
    assert info.value.unknown == [2, -1]
    with pytest.raises(ValueError, match="integers"):
        encoder.inverse_transform(np.array([0.0, 1.0]))


def test_check_ids_in_range():
    check_ids_in_range(np.array([0, 3, 4]), 5, "user")
    check_ids_in_range(jnp.array([[0, 1], [2, 3]]), 4, "item")
    check_ids_in_range(np.array([], dtype=np.float32), 0, "item")
    with pytest.raises(IdOutOfRangeError, match=r"1 user id\(s\) outside \[0, 5\): 5"):
        check_ids_in_range(jnp.array([4, 5, 5]), 5, "user")
    with pytest.raises(ValueError, match="integers"):
        check_ids_in_range(np.array([0.5]), 5, "user")


@pytest.mark.parametrize("values", [[1, "a"], [1.0, 2.0], [True, False], ["a", None]])
def test_fit_refuses_mixed_float_bool_or_missing_ids(values):
    with pytest.raises(TypeError, match="user ids"):
        IdEncoder.fit(np.array(values, dtype=object) if None in values else values, "user")


def test_load_rejects_damaged_files(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        IdEncoder.load(bad_json)
    unsorted = tmp_path / "unsorted.json"
    unsorted.write_text(json.dumps({**IdEncoder.fit([1, 2], "user").to_json(), "ids": [2, 1]}))
    with pytest.raises(DataError, match="sorted and distinct"):
        IdEncoder.load(unsorted)


def test_mapping_save_load(tmp_path):
    mapping = IdMapping(users=IdEncoder.fit(["u2", "u1"], "user"),
                        items=IdEncoder.fit([10, 30, 20], "item"))
    mapping.save(tmp_path)
    loaded = IdMapping.load(tmp_path)
    assert loaded == mapping
    assert (loaded.num_users, loaded.num_items) == (2, 3)
    with pytest.raises(DataError, match="missing"):
        IdMapping.load(tmp_path / "elsewhere")


def _dataset(users: pd.DataFrame | None) -> Dataset:
    interactions = pd.DataFrame({
        "user_id": np.array([7, 3, 7, 9], dtype=np.int64),
        "item_id": np.array([200, 100, 100, 300], dtype=np.int64),
        "rating": np.array([4, 5, 3, 1], dtype=np.float32),
        "timestamp": np.array([1, 2, 3, 4], dtype=np.int64)})
    items = pd.DataFrame({  # item 50 has no ratings; the catalogue is not sorted
        "item_id": np.array([300, 50, 100, 200], dtype=np.int64),
        "title": ["C (2001)", "Unrated (1999)", "A (1990)", "B (2000)"],
        "year": pd.array([2001, 1999, 1990, 2000], dtype="Int64"),
        "genres": [("Drama",), (), ("Comedy",), ("Drama", "Comedy")]})
    return Dataset(name="tiny", interactions=interactions, items=items, users=users,
                   genre_names=("Comedy", "Drama"), rating_scale=(1.0, 5.0)).validate()


def test_encode_dataset_without_user_table():
    dataset = _dataset(users=None)
    encoded, mapping = encode_dataset(dataset)
    assert mapping.num_items == 4 and mapping.num_users == 3
    # Catalogue sorted by raw id, code == row position; the unrated item keeps a code.
    assert encoded.items["item_id"].tolist() == [0, 1, 2, 3]
    assert encoded.items["title"].tolist() == ["Unrated (1999)", "A (1990)", "B (2000)",
                                               "C (2001)"]
    assert mapping.items.transform([50])[0] == 0
    inter = encoded.interactions
    assert inter["user_id"].dtype == np.int64 and inter["item_id"].dtype == np.int64
    assert inter["user_id"].tolist() == [1, 0, 1, 2]
    assert inter["item_id"].tolist() == [2, 1, 1, 3]
    np.testing.assert_array_equal(mapping.users.inverse_transform(inter["user_id"]),
                                  dataset.interactions["user_id"])
    np.testing.assert_array_equal(mapping.items.inverse_transform(inter["item_id"]),
                                  dataset.interactions["item_id"])
    pd.testing.assert_series_equal(inter["rating"], dataset.interactions["rating"])
    assert encoded.users is None
    encoded.validate()


def test_encode_dataset_with_user_table_keeps_profileless_users():
    users = pd.DataFrame({"user_id": np.array([9, 5, 3], dtype=np.int64),
                          "age": np.array([30, 40, 50], dtype=np.int64),
                          "gender": ["F", "M", "F"]})
    encoded, mapping = encode_dataset(_dataset(users))
    # Users: table {3, 5, 9} plus interaction user 7 (no profile): codes 3->0 5->1 7->2 9->3.
    assert mapping.users.raw_ids.tolist() == [3, 5, 7, 9]
    assert encoded.users["user_id"].tolist() == [0, 1, 2, 3]
    assert encoded.users["age"].tolist()[:2] == [50, 40]
    assert encoded.users["age"].isna().tolist() == [False, False, True, False]
    assert encoded.users["gender"].tolist()[3] == "F"
    assert encoded.interactions["user_id"].tolist() == [2, 0, 2, 3]


def test_encode_dataset_refuses_uncatalogued_items():
    dataset = _dataset(users=None)
    broken = Dataset(name="broken", interactions=dataset.interactions.assign(
        item_id=[200, 100, 100, 999]), items=dataset.items, users=None,
        genre_names=dataset.genre_names, rating_scale=dataset.rating_scale)
    with pytest.raises(UnknownIdError, match="999"):
        encode_dataset(broken)
