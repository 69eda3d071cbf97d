"""The title-embedding cache with a stand-in model: what is written, what is read back.

The bad-input cases (truncated, NaN-filled, foreign or legacy entries) are in
tests/bad_input/test_data_cache.py.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from recsys_jax.data import text_embeddings

TITLES = ["Star Wars (1977)", "Toy Story (1995)"]


@pytest.fixture
def calls(monkeypatch):
    calls = []

    def embed(titles, model_name, batch_size, prefer_package):
        calls.append(list(titles))
        return np.eye(len(titles), 3, dtype=np.float64)  # Cast to float32 by the caller.

    monkeypatch.setattr(text_embeddings, "embed_with_model", embed)
    return calls


def test_cache_entry_has_a_sidecar_with_key_shape_size_and_sha256(tmp_path, calls):
    vectors = text_embeddings.encode_titles(TITLES, cache_dir=tmp_path)
    assert vectors.dtype == np.float32 and vectors.shape == (2, 3)
    key = text_embeddings.titles_key(TITLES, "all-MiniLM-L6-v2")
    npy = tmp_path / f"{key}.npy"
    sidecar = json.loads((tmp_path / f"{key}.json").read_text())
    assert sidecar == {
        "format": 1, "key": text_embeddings.titles_digest(TITLES, "all-MiniLM-L6-v2"),
        "model_name": "all-MiniLM-L6-v2", "shape": [2, 3], "dtype": "float32",
        "size": npy.stat().st_size, "sha256": hashlib.sha256(npy.read_bytes()).hexdigest()}
    assert key.endswith(sidecar["key"][:16])


def test_second_call_reads_the_cache(tmp_path, calls):
    first = text_embeddings.encode_titles(TITLES, cache_dir=tmp_path)
    second = text_embeddings.encode_titles(TITLES, cache_dir=tmp_path, verify=True)
    np.testing.assert_array_equal(first, second)
    assert calls == [TITLES]


def test_use_cache_false_writes_nothing(tmp_path, calls):
    text_embeddings.encode_titles(TITLES, cache_dir=tmp_path, use_cache=False)
    assert list(tmp_path.iterdir()) == []


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_JAX_DATA", str(tmp_path))
    assert text_embeddings.default_cache_dir() == tmp_path / "text_embeddings"
