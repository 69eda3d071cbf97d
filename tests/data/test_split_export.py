"""Split.export: plain files (interactions.<ext> + split.json) that other tools can read."""

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

from recsys_jax.data import ids, splits, synthetic
from recsys_jax.data.splits import EXPORT_COLUMNS, make_split


def encoded_split():
    """A split of synthetic data whose raw ids are strings, so raw and encoded ids differ."""
    raw = synthetic.generate_synthetic(40, 30, 700, seed=2).interactions
    raw = raw.assign(user_id="u" + raw["user_id"].astype(str),
                     item_id="i" + raw["item_id"].astype(str))
    mapping = ids.IdMapping(users=ids.IdEncoder.fit(raw["user_id"], "user"),
                            items=ids.IdEncoder.fit(raw["item_id"], "item"))
    encoded = raw.assign(user_id=mapping.users.transform(raw["user_id"]),
                         item_id=mapping.items.transform(raw["item_id"]))
    return make_split(encoded, "user_temporal", seed=4), mapping, raw


def pair_set(frame, user="user_id", item="item_id"):
    return set(zip(frame[user].tolist(), frame[item].tolist()))


def test_csv_round_trip_with_raw_ids(tmp_path):
    split, mapping, raw = encoded_split()
    path = split.export(tmp_path, mapping=mapping)
    assert path == tmp_path / "interactions.csv"
    table = pd.read_csv(path)
    assert list(table.columns) == ["user_id", "item_id", "raw_user_id", "raw_item_id", "rating",
                                   "timestamp", "part"]
    assert table["part"].tolist() == (["train"] * len(split.train) + ["val"] * len(split.val)
                                      + ["test"] * len(split.test))
    for name, part in split.parts().items():
        rows = table[table["part"] == name]
        assert pair_set(rows) == pair_set(part)
        # Raw ids map back to the same codes through the mapping.
        np.testing.assert_array_equal(mapping.users.transform(rows["raw_user_id"].tolist()),
                                      rows["user_id"])
        np.testing.assert_array_equal(mapping.items.transform(rows["raw_item_id"].tolist()),
                                      rows["item_id"])
        np.testing.assert_allclose(rows["rating"], part["rating"])
        np.testing.assert_array_equal(rows["timestamp"], part["timestamp"])
    # And the raw pairs are events of the raw data.
    assert pair_set(table, "raw_user_id", "raw_item_id") <= pair_set(raw)


def test_side_file_names_the_split_and_its_columns(tmp_path):
    split, mapping, _ = encoded_split()
    split.export(tmp_path, mapping=mapping)
    meta = json.loads((tmp_path / "split.json").read_text())
    assert meta["protocol"] == "user_temporal" and meta["params"] == split.params
    assert meta["fingerprint"] == split.fingerprint()
    assert meta["rows"] == {"train": len(split.train), "val": len(split.val),
                            "test": len(split.test)}
    assert meta["file"] == "interactions.csv" and meta["file_format"] == "csv"
    assert meta["column_order"] == list(pd.read_csv(tmp_path / "interactions.csv").columns)
    assert meta["columns"] == {c: EXPORT_COLUMNS[c] for c in meta["column_order"]}


def test_without_mapping_or_ratings_the_columns_shrink(tmp_path):
    frame = synthetic.generate_synthetic(20, 15, 200, seed=0).interactions.drop(columns="rating")
    split = make_split(frame, "random")
    split.export(tmp_path)
    table = pd.read_csv(tmp_path / "interactions.csv")
    assert list(table.columns) == ["user_id", "item_id", "timestamp", "part"]
    assert len(table) == sum(len(p) for p in split.parts().values())


def test_a_mapping_that_does_not_fit_is_refused(tmp_path):
    split, _, _ = encoded_split()
    small = ids.IdMapping(users=ids.IdEncoder.fit(["a"], "user"),
                          items=ids.IdEncoder.fit(["b"], "item"))
    with pytest.raises(ids.IdOutOfRangeError):
        split.export(tmp_path, mapping=small)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_format_errors(tmp_path):
    split, _, _ = encoded_split()
    with pytest.raises(ValueError, match="csv"):
        split.export(tmp_path, format="xlsx")


def test_parquet_round_trip(tmp_path):
    pytest.importorskip("pyarrow")
    split, mapping, _ = encoded_split()
    table = pd.read_parquet(split.export(tmp_path, format="parquet", mapping=mapping))
    for name, part in split.parts().items():
        assert pair_set(table[table["part"] == name]) == pair_set(part)


def test_missing_pyarrow_is_detected_by_import_lookup(tmp_path, monkeypatch):
    split, _, _ = encoded_split()
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(splits.importlib.util, "find_spec",
                        lambda name, *a: None if name == "pyarrow" else real_find_spec(name, *a))
    with pytest.raises(ImportError, match="pip install pyarrow") as error:
        split.export(tmp_path, format="parquet")
    assert "format='csv'" in str(error.value)  # Names the alternative that needs nothing.
    assert not any(tmp_path.iterdir())
