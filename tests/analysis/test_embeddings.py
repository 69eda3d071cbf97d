"""t-SNE maps: primary-genre rule, perplexity guard, PNG output."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_jax.analysis.embeddings import (
    NO_GENRE,
    OTHER,
    max_perplexity,
    plot_item_tsne,
    primary_genres,
    scatter_by_label,
    tsne_2d,
)
from tests.analysis.planted import make_planted

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FAST = {"max_iter": 250}  # scikit-learn's minimum; enough to check plumbing, not quality.


def test_primary_genre_is_the_rarest_with_ties_to_the_first_listed():
    genres = [("Comedy", "Drama"), ("Drama",), ("Comedy", "Drama", "War"), ("Drama", "Romance"),
              ("Comedy", "Romance"), ()]
    # Counts: Drama 4, Comedy 3, Romance 2, War 1.
    assert primary_genres(genres) == ["Comedy", "Drama", "War", "Romance", "Romance", NO_GENRE]
    assert primary_genres([("X", "Y"), ("Y", "X")]) == ["X", "Y"]


def test_primary_genre_first_listed():
    assert primary_genres([("Drama", "War"), (), ("War",)], rule="first") == [
        "Drama", NO_GENRE, "War"]


def test_unknown_primary_genre_rule():
    with pytest.raises(ValueError, match="unknown primary-genre rule"):
        primary_genres([("Drama",)], rule="longest")


def test_tsne_2d_shape_and_zero_rows():
    points = make_planted(n_items=60).embeddings
    points[0] = 0.0
    coords = tsne_2d(points, perplexity=10, **FAST)
    assert coords.shape == (60, 2) and np.isfinite(coords).all()


def test_perplexity_is_clamped_with_a_warning_on_tiny_inputs():
    points = make_planted(n_items=7).embeddings
    assert max_perplexity(7) == 2.0
    with pytest.warns(UserWarning, match=r"perplexity 30 is too large for 7 points; using 2"):
        coords = tsne_2d(points, perplexity=30, **FAST)
    assert coords.shape == (7, 2)


def test_tsne_2d_rejects_unusable_input():
    with pytest.raises(ValueError, match="at least 2 points"):
        tsne_2d(np.ones((1, 4)))
    with pytest.raises(ValueError, match="perplexity must be positive"):
        tsne_2d(np.ones((10, 4)), perplexity=0)


def test_plot_item_tsne_writes_a_png(tmp_path):
    planted = make_planted(n_items=80)
    path = tmp_path / "plots" / "tsne.png"
    points = plot_item_tsne(planted.embeddings, planted.items, path, perplexity=10, **FAST)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert [p.name for p in path.parent.iterdir()] == ["tsne.png"]  # no temporary files left
    assert list(points.columns) == ["item_id", "x", "y", "primary_genre"]
    assert list(points["item_id"]) == list(range(80))
    assert list(points["primary_genre"]) == [g[0] for g in planted.items["genres"]]


def test_plot_item_tsne_filters_by_counts_and_mask(tmp_path):
    planted = make_planted(n_items=80)
    counts = np.arange(80)
    mask = np.arange(80) % 2 == 0
    points = plot_item_tsne(planted.embeddings, planted.items, tmp_path / "t.png",
                            counts=counts, min_count=40, mask=mask, perplexity=5, **FAST)
    assert list(points["item_id"]) == list(range(40, 80, 2))


def test_plot_item_tsne_clamps_perplexity_for_few_items(tmp_path):
    planted = make_planted(n_items=30)
    with pytest.warns(UserWarning, match="too large for 10 points"):
        plot_item_tsne(planted.embeddings, planted.items, tmp_path / "t.png",
                       counts=np.arange(30), min_count=20, **FAST)
    assert (tmp_path / "t.png").read_bytes()[:8] == PNG_SIGNATURE


def test_plot_item_tsne_rejects_bad_filters(tmp_path):
    planted = make_planted(n_items=20)
    with pytest.raises(ValueError, match="min_count needs counts"):
        plot_item_tsne(planted.embeddings, planted.items, tmp_path / "t.png", min_count=5)
    with pytest.raises(ValueError, match="only 1 item"):
        plot_item_tsne(planted.embeddings, planted.items, tmp_path / "t.png",
                       counts=np.arange(20), min_count=19)
    with pytest.raises(ValueError, match="counts has shape"):
        plot_item_tsne(planted.embeddings, planted.items, tmp_path / "t.png",
                       counts=np.arange(3))
    assert not (tmp_path / "t.png").exists()


def test_scatter_lumps_rare_labels_into_other(tmp_path):
    labels = ["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d"] * 2 + [NO_GENRE] * 2
    coords = np.random.default_rng(0).normal(size=(len(labels), 2))
    legend = scatter_by_label(coords, labels, tmp_path / "s.png", max_categories=2)
    assert legend == ["a", "b", OTHER, NO_GENRE]
    assert (tmp_path / "s.png").read_bytes()[:8] == PNG_SIGNATURE
