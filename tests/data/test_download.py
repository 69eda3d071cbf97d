"""Tests for recsys_jax.data.download: verified downloads and safe, atomic zip extraction."""

from __future__ import annotations

import hashlib
import io
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from recsys_jax.data import download
from recsys_jax.data.download import DownloadError
from recsys_jax.data.errors import ChecksumError, DataError


def _zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _write_zip(path: Path, members: dict[str, bytes], **kwargs) -> Path:
    path.write_bytes(_zip_bytes(members, **kwargs))
    return path


class _FlakyResponse(io.BytesIO):
    """Serves some bytes, then fails like a dropped connection."""

    def read(self, size: int = -1) -> bytes:
        data = super().read(min(size, 10) if size and size > 0 else 10)
        if not data:
            raise ConnectionResetError("connection reset by peer")
        return data


# --- cache location ---------------------------------------------------------------------------

def test_data_cache_dir_prefers_argument_then_env_then_default(monkeypatch, tmp_path):
    monkeypatch.setenv(download.CACHE_ENV_VAR, str(tmp_path / "env"))
    assert download.data_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert download.data_cache_dir() == tmp_path / "env"
    monkeypatch.delenv(download.CACHE_ENV_VAR)
    assert download.data_cache_dir() == Path("~/.cache/recsys_jax").expanduser()


# --- checksums ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "MD5 (ml-100k.zip) = 0E33842E24A9C977BE4E0107933C0723\n",
    "0e33842e24a9c977be4e0107933c0723  ml-100k.zip\n",
])
def test_parse_md5_file_reads_bsd_and_gnu_formats(text):
    assert download.parse_md5_file(text) == "0e33842e24a9c977be4e0107933c0723"


def test_parse_md5_file_without_digest_is_none():
    assert download.parse_md5_file("<html>404 Not Found</html>") is None


def test_published_md5_is_fetched_beside_the_url_or_none(tmp_path):
    (tmp_path / "a.zip.md5").write_text("MD5 (a.zip) = " + "ab" * 16 + "\n")
    assert download.published_md5((tmp_path / "a.zip").as_uri()) == "ab" * 16
    assert download.published_md5((tmp_path / "missing.zip").as_uri()) is None


def test_file_digest_matches_hashlib(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 3_000_000)
    assert download.file_digest(path, "md5") == hashlib.md5(b"x" * 3_000_000).hexdigest()
    assert download.file_digest(path, "sha256") == hashlib.sha256(b"x" * 3_000_000).hexdigest()


# --- downloads ---------------------------------------------------------------------------------

def test_download_verified_writes_the_file(tmp_path):
    source = tmp_path / "served" / "data.zip"
    source.parent.mkdir()
    source.write_bytes(b"payload" * 1000)
    target = tmp_path / "cache" / "data.zip"
    result = download.download_verified(
        source.as_uri(), target, hashlib.md5(b"payload" * 1000).hexdigest().upper())
    assert result == target
    assert target.read_bytes() == b"payload" * 1000
    assert sorted(p.name for p in target.parent.iterdir()) == ["data.zip"]


def test_download_verified_deletes_a_mismatching_download(tmp_path):
    source = tmp_path / "data.zip"
    source.write_bytes(b"tampered")
    target = tmp_path / "cache" / "data.zip"
    with pytest.raises(ChecksumError) as info:
        download.download_verified(source.as_uri(), target, "0" * 32)
    assert source.as_uri() in str(info.value)
    assert "does not match" in str(info.value) and "deleted" in str(info.value)
    assert list(target.parent.iterdir()) == []


def test_download_verified_leaves_nothing_after_a_dropped_connection(monkeypatch, tmp_path):
    monkeypatch.setattr(download, "open_url", lambda url, timeout=None: _FlakyResponse(b"abc"))
    target = tmp_path / "cache" / "data.zip"
    with pytest.raises(DownloadError, match="failed after 3 bytes"):
        download.download_verified("https://example.invalid/data.zip", target, "0" * 32)
    assert list(target.parent.iterdir()) == []


def test_open_url_reports_unreachable_urls_as_download_errors(tmp_path):
    with pytest.raises(DownloadError, match="cannot open"):
        download.open_url((tmp_path / "absent.zip").as_uri())


# --- zip extraction ------------------------------------------------------------------------------

def test_extracted_zip_extracts_and_cleans_up(tmp_path):
    archive = _write_zip(tmp_path / "a.zip", {"ml/x.txt": b"x", "ml/sub/y.txt": b"y"})
    work = tmp_path / "work"
    with download.extracted_zip(archive, work) as root:
        assert (root / "ml" / "x.txt").read_bytes() == b"x"
        assert (root / "ml" / "sub" / "y.txt").read_bytes() == b"y"
        assert root.parent == work
    assert list(work.iterdir()) == []


def test_extracted_zip_can_select_members(tmp_path):
    archive = _write_zip(tmp_path / "a.zip", {"keep.txt": b"k", "skip.txt": b"s"})
    with download.extracted_zip(archive, tmp_path / "work", members=["keep.txt"]) as root:
        assert sorted(p.name for p in root.iterdir()) == ["keep.txt"]
    with pytest.raises(DataError, match=r"lacks member\(s\) \['absent.txt'\]"):
        with download.extracted_zip(archive, tmp_path / "work", members=["absent.txt"]):
            pass


@pytest.mark.parametrize("name", [
    "../evil.txt", "ml/../../evil.txt", "/etc/evil.txt", "C:/evil.txt", "..\\evil.txt",
])
def test_extracted_zip_refuses_members_escaping_the_target(tmp_path, name):
    archive = _write_zip(tmp_path / "a.zip", {"ok.txt": b"fine", name: b"evil"})
    work = tmp_path / "work"
    with pytest.raises(DataError) as info, download.extracted_zip(archive, work):
        pytest.fail("an unsafe archive must not be extracted")
    assert str(archive) in str(info.value) and "outside" in str(info.value)
    assert list(work.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()


def test_extracted_zip_refuses_symlinks(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("ml/link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    path = tmp_path / "a.zip"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match="symlink"):
        with download.extracted_zip(path, tmp_path / "work"):
            pass
    assert list((tmp_path / "work").iterdir()) == []


def test_extracted_zip_reports_a_truncated_archive(tmp_path):
    data = _zip_bytes({"ml/x.txt": b"x" * 10_000})
    path = tmp_path / "truncated.zip"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as info, download.extracted_zip(path, tmp_path / "work"):
        pass
    assert info.value.path == str(path)
    assert "truncated or corrupted" in str(info.value)
    assert list((tmp_path / "work").iterdir()) == []


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_extracted_zip_reports_a_corrupted_member(tmp_path, compression):
    payload = bytes(range(256)) * 64
    data = bytearray(_zip_bytes({"ml/x.bin": payload}, compression=compression))
    data[len(data) // 3] ^= 0xFF  # Inside the member's data, before the central directory.
    path = tmp_path / "corrupt.zip"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="truncated or corrupted") as info:
        with download.extracted_zip(path, tmp_path / "work"):
            pass
    assert info.value.path == str(path)
    assert list((tmp_path / "work").iterdir()) == []


# --- pip -----------------------------------------------------------------------------------------

def test_pip_download_command_fetches_one_wheel_without_installing(tmp_path):
    command = download.pip_download_command("recbole==1.2.1", tmp_path)
    assert command[:5] == [sys.executable, "-m", "pip", "download", "--no-deps"]
    assert "recbole==1.2.1" in command
    assert command[-2:] == ["-d", str(tmp_path)]


def test_run_pip_download_returns_the_wheel(monkeypatch, tmp_path):
    def fake_run(command, **kwargs):
        dest = Path(command[command.index("-d") + 1])
        (dest / "pkg-1.0-py3-none-any.whl").write_bytes(b"wheel")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(download.subprocess, "run", fake_run)
    wheel = download.run_pip_download("pkg==1.0", tmp_path)
    assert wheel == tmp_path / "pkg-1.0-py3-none-any.whl"


def test_run_pip_download_reports_pip_failures(monkeypatch, tmp_path):
    monkeypatch.setattr(download.subprocess, "run", lambda command, **kwargs:
                        subprocess.CompletedProcess(command, 1, "", "ERROR: no matching dist"))
    with pytest.raises(DownloadError, match="no matching dist"):
        download.run_pip_download("pkg==1.0", tmp_path)


def test_replace_directory_swaps_in_the_new_copy_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "cache" / "data"
    target.mkdir(parents=True)
    (target / "old").write_text("old")
    new = tmp_path / "cache" / "new"
    new.mkdir()
    (new / "f").write_text("new")
    download.replace_directory(new, target)
    assert sorted(p.name for p in target.iterdir()) == ["f"]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["data"]


def test_download_verified_names_where_the_digest_came_from(tmp_path):
    source = tmp_path / "data.zip"
    source.write_bytes(b"x")
    with pytest.raises(ChecksumError, match="does not match the pinned 0{32}"):
        download.download_verified(source.as_uri(), tmp_path / "c" / "d.zip", "0" * 32,
                                   digest_source="pinned")
