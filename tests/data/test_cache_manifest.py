"""Tests for recsys_jax.data.cache_manifest: manifests round-trip, checks catch every change."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from recsys_jax.data import cache_manifest
from recsys_jax.data.cache_manifest import MANIFEST_FILE, CacheDirError, FileRecord
from recsys_jax.data.errors import DataError


@pytest.fixture
def copy(tmp_path):
    directory = tmp_path / "copy"
    (directory / "sub").mkdir(parents=True)
    (directory / "a.txt").write_bytes(b"alpha\n" * 100)
    (directory / "sub" / "b.txt").write_bytes(b"beta\n")
    return directory


def test_manifest_records_every_file_and_round_trips(copy):
    written = cache_manifest.write_manifest(copy, "https://example.invalid/x.zip", "md5:abc")
    read = cache_manifest.read_manifest(copy)
    assert read == written
    assert read.origin == "https://example.invalid/x.zip" and read.checksum == "md5:abc"
    assert read.files == {
        "a.txt": FileRecord(600, hashlib.sha256(b"alpha\n" * 100).hexdigest()),
        "sub/b.txt": FileRecord(5, hashlib.sha256(b"beta\n").hexdigest())}
    assert sorted(p.name for p in copy.iterdir()) == [MANIFEST_FILE, "a.txt", "sub"]


def test_an_unchanged_copy_has_no_problems(copy):
    manifest = cache_manifest.write_manifest(copy, "o", "c")
    assert cache_manifest.manifest_problems(copy, manifest, ["a.txt", "sub/b.txt", "c.txt"],
                                            rehash=True) == []


def test_each_kind_of_change_is_named(copy):
    manifest = cache_manifest.write_manifest(copy, "o", "c")
    (copy / "a.txt").write_bytes(b"alpha\n" * 99)
    (copy / "sub" / "b.txt").write_bytes(b"BETA\n")
    (copy / "c.txt").write_text("new")
    problems = cache_manifest.manifest_problems(copy, manifest, ["a.txt", "sub/b.txt", "c.txt"])
    assert problems[0] == (f"{copy / 'a.txt'}: has 594 bytes where 600 were recorded: it was "
                           "truncated or changed after it was cached")
    assert problems[1].startswith(f"{copy / 'sub' / 'b.txt'}: has SHA-256 ")
    assert problems[2] == f"{copy / 'c.txt'}: is not in the cache manifest (added after the " \
                          "copy was cached)"
    (copy / "a.txt").unlink()
    assert cache_manifest.manifest_problems(copy, manifest, ["a.txt"]) == [
        f"{copy / 'a.txt'}: is missing"]


def test_digests_are_remembered_per_path_size_mtime_and_inode(copy, monkeypatch):
    path = copy / "a.txt"
    first = cache_manifest.sha256_of(path)
    reads = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: reads.append(a[0]) or real_open(*a, **k))
    assert cache_manifest.sha256_of(path) == first and reads == []
    assert cache_manifest.sha256_of(path, reuse=False) == first and reads == [path]
    os.utime(path, ns=(0, 10**9))  # A new mtime is a new key: hashed again.
    assert cache_manifest.sha256_of(path) == first and len(reads) == 2


def test_verify_is_requested_by_argument_or_environment(monkeypatch):
    monkeypatch.delenv(cache_manifest.VERIFY_ENV_VAR, raising=False)
    assert not cache_manifest.verify_requested()
    assert cache_manifest.verify_requested(True)
    monkeypatch.setenv(cache_manifest.VERIFY_ENV_VAR, "0")
    assert not cache_manifest.verify_requested()
    monkeypatch.setenv(cache_manifest.VERIFY_ENV_VAR, "1")
    assert cache_manifest.verify_requested()


def test_pinned_records_check_a_copy_without_manifest(copy):
    pins = {"a.txt": cache_manifest.record_file(copy / "a.txt")}
    assert cache_manifest.pinned_problems(copy, pins) == []
    pins["a.txt"] = FileRecord(600, "0" * 64)
    assert "has SHA-256" in cache_manifest.pinned_problems(copy, pins)[0]


def test_no_manifest_reads_as_none(copy):
    assert cache_manifest.read_manifest(copy) is None


@pytest.mark.parametrize("content, phrase", [
    ("{", "unreadable cache manifest"),
    ('{"format": 2, "origin": "o", "checksum": "c", "retrieved_utc": "t", "files": {}}',
     "format 2"),
    ('{"format": 1, "origin": "o", "checksum": "c", "retrieved_utc": "t", '
     '"files": {"a": {"size": -1, "sha256": "x"}}}', "not a byte count"),
    ('{"format": 1, "origin": "o", "checksum": "c", "files": {}}', "retrieved_utc"),
])
def test_malformed_manifest_is_a_data_error_naming_it(copy, content, phrase):
    (copy / MANIFEST_FILE).write_text(content)
    with pytest.raises(DataError, match=phrase) as info:
        cache_manifest.read_manifest(copy)
    assert info.value.path == str(copy / MANIFEST_FILE)


def test_manifest_is_valid_json_with_a_format(copy):
    cache_manifest.write_manifest(copy, "o", "c")
    assert json.loads((copy / MANIFEST_FILE).read_text())["format"] == 1


def test_writable_dir_creates_the_folder_and_refuses_a_file(tmp_path):
    assert cache_manifest.writable_dir(tmp_path / "new" / "cache").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(CacheDirError, match="RECSYS_JAX_DATA") as info:
        cache_manifest.writable_dir(tmp_path / "file" / "cache")
    assert str(tmp_path / "file" / "cache") in str(info.value)
