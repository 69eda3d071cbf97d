"""Fixtures of the data tests: a fake GroupLens site, a fake PyPI, no network, tiny copies."""

import pytest

from tests.data import movielens_files


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to reach GroupLens or pip fails the test."""
    movielens_files.forbid_network(monkeypatch)


@pytest.fixture
def grouplens(monkeypatch, tmp_path):
    """A fake GroupLens site (file:// URLs, no pinned MD5); returns its folder."""
    return movielens_files.serve_grouplens(monkeypatch, tmp_path)


@pytest.fixture
def pypi(tmp_path, grouplens, monkeypatch):
    """GroupLens holds nothing; pip hands over a fake recbole wheel. Returns the pip calls."""
    return movielens_files.serve_fake_wheel(monkeypatch, tmp_path)


@pytest.fixture
def small_data(monkeypatch):
    """The copies in these tests are tiny: no check against the published rating counts."""
    movielens_files.ignore_known_sizes(monkeypatch)
