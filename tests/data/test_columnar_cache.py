"""Tests for recsys_jax.data.columnar_cache: entries keyed by their sources, stored atomically,
read back identical. Corrupt entries are in tests/bad_input/test_data_cache.py."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from recsys_jax.data import cache_manifest, columnar_cache
from recsys_jax.data.columnar_cache import ColumnarCache, cached_frame, read_entry, source_key
from recsys_jax.data.errors import DataError

COLUMNS = (("user_id", np.dtype(np.int64)), ("rating", np.dtype(np.float32)))


def frame(n: int = 5) -> pd.DataFrame:
    return pd.DataFrame({"user_id": np.arange(n, dtype=np.int64) * 2 ** 40,
                         "rating": np.linspace(0.5, 5.0, n, dtype=np.float32)})


class Parser:
    """A parse function that counts its calls."""

    def __init__(self, result: pd.DataFrame | Exception):
        self.result = result
        self.calls = 0

    def __call__(self) -> pd.DataFrame:
        self.calls += 1
        if isinstance(self.result, Exception):
            raise self.result
        return self.result.copy()


def test_parsed_once_then_read_back_identical(tmp_path, caplog):
    cache = ColumnarCache(tmp_path / "columnar")
    parse = Parser(frame())
    first = cached_frame(cache, "t", "k1", COLUMNS, parse, origin="src")
    with caplog.at_level(logging.INFO, logger=columnar_cache.__name__):
        second = cached_frame(cache, "t", "k1", COLUMNS, parse, origin="src")
    assert parse.calls == 1
    pd.testing.assert_frame_equal(first, frame())
    pd.testing.assert_frame_equal(second, frame())  # dtypes, order, index
    assert any("from the columnar cache" in r.getMessage() for r in caplog.records)
    entry = tmp_path / "columnar" / "t"
    assert sorted(p.name for p in entry.iterdir()) == [
        cache_manifest.MANIFEST_FILE, "rating.npy", "user_id.npy"]
    manifest = cache_manifest.read_manifest(entry)
    assert manifest.checksum == "sources-sha256:k1" and manifest.origin == "src"
    np.testing.assert_array_equal(np.load(entry / "user_id.npy", allow_pickle=False),
                                  frame()["user_id"].to_numpy())
    assert [p.name for p in (tmp_path / "columnar").iterdir()] == ["t"]  # no temp folders


def test_another_key_is_stale_and_replaced(tmp_path):
    cache = ColumnarCache(tmp_path / "columnar")
    cached_frame(cache, "t", "k1", COLUMNS, Parser(frame(5)), origin="src")
    assert read_entry(cache.entry("t"), "k2", COLUMNS) is None
    parse = Parser(frame(3))
    assert len(cached_frame(cache, "t", "k2", COLUMNS, parse, origin="src")) == 3
    assert parse.calls == 1
    assert len(read_entry(cache.entry("t"), "k2", COLUMNS)) == 3
    assert read_entry(cache.entry("t"), "k1", COLUMNS) is None


def test_no_entry_reads_as_none(tmp_path):
    assert read_entry(tmp_path / "nothing", "k", COLUMNS) is None


def test_parse_errors_propagate_and_store_nothing(tmp_path):
    cache = ColumnarCache(tmp_path / "columnar")
    with pytest.raises(DataError, match="line 7"):
        cached_frame(cache, "t", "k", COLUMNS, Parser(DataError("bad", "f", 7)), origin="f")
    assert not cache.entry("t").exists()


def test_a_parser_returning_other_columns_is_a_bug(tmp_path):
    cache = ColumnarCache(tmp_path / "columnar")
    wrong = frame().astype({"rating": np.float64})
    with pytest.raises(TypeError, match="expected"):
        cached_frame(cache, "t", "k", COLUMNS, Parser(wrong), origin="f")
    assert not cache.entry("t").exists()


def test_an_unwritable_cache_still_returns_the_parse(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = ColumnarCache(blocker / "columnar")
    with caplog.at_level(logging.WARNING, logger=columnar_cache.__name__):
        result = cached_frame(cache, "t", "k", COLUMNS, Parser(frame()), origin="f")
    pd.testing.assert_frame_equal(result, frame())
    assert any("Could not store" in r.getMessage() and "RECSYS_JAX_DATA" in r.getMessage()
               for r in caplog.records)


def test_source_key_follows_content_parser_and_names(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("1,2\n")
    b.write_text("3,4\n")
    key = source_key([a, b], "p1")
    assert key == source_key([a, b], "p1")
    assert len(key) == 64 and key != source_key([a, b], "p2") != source_key([b, a], "p1")
    a.write_text("1,3\n")  # same size, other bytes
    assert source_key([a, b], "p1", rehash=True) != key
