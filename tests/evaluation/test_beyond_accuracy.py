"""Coverage, exposure Gini, intra-list diversity and novelty on hand-worked examples."""

import itertools

import numpy as np
import pytest

from recsys_jax.evaluation import beyond_accuracy as ba


def test_coverage():
    ranked = np.array([[0, 1, -1], [1, 2, 3]])
    assert ba.catalogue_coverage(ranked, 10, 2) == pytest.approx(0.3)
    assert ba.catalogue_coverage(ranked, 10, 3) == pytest.approx(0.4)
    assert ba.catalogue_coverage(ranked, 10, 8) == pytest.approx(0.4)


def test_gini_by_hand_and_by_mean_absolute_difference():
    # Exposure [0, 0, 1, 3]: Σ(2j − n − 1) e_(j) = 1·1 + 3·3 = 10, n Σe = 16.
    assert ba.gini(np.array([3, 0, 1, 0])) == pytest.approx(10 / 16)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, 50).astype(float)
    mad = np.abs(x[:, None] - x[None, :]).sum() / (2 * len(x) ** 2 * x.mean())
    assert ba.gini(x) == pytest.approx(mad)
    assert ba.gini(np.ones(7)) == pytest.approx(0.0)
    assert ba.gini(np.array([0, 0, 0, 5])) == pytest.approx(3 / 4)  # (n − 1)/n
    assert np.isnan(ba.gini(np.zeros(3)))
    # Exposure counts unexposed catalogue items too: one item shown to both users.
    assert ba.exposure_gini(np.array([[2], [2]]), 4, 1) == pytest.approx(3 / 4)


def test_intra_list_diversity_on_genres():
    genres = ba.genre_matrix([("A",), ("A", "B"), ("C",), ()], ["A", "B", "C"])
    np.testing.assert_array_equal(genres, [[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0]])
    ranked = np.array([[0, 1, 2], [0, 3, -1], [0, -1, -1]])
    ild = ba.intra_list_diversity(ranked, genres, 3)
    assert ild[0] == pytest.approx((3 - 1 / np.sqrt(2)) / 3)
    assert ild[1] == pytest.approx(1.0)  # a genre-less item is unlike everything
    assert np.isnan(ild[2])
    with pytest.raises(ValueError, match="genre 'D'"):
        ba.genre_matrix([("D",)], ["A"])


def test_intra_list_diversity_matches_pairwise_definition():
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((40, 5))
    vectors[3] = 0.0
    ranked = np.array([rng.choice(40, 8, replace=False) for _ in range(30)])
    ranked[0, 5:] = -1
    ild = ba.intra_list_diversity(ranked, vectors, 6)
    for row, items in zip(ild, ranked):
        items = [i for i in items[:6] if i >= 0]
        dists = []
        for i, j in itertools.combinations(items, 2):
            ni, nj = np.linalg.norm(vectors[i]), np.linalg.norm(vectors[j])
            cos = 0.0 if ni == 0 or nj == 0 else vectors[i] @ vectors[j] / (ni * nj)
            dists.append(1 - cos)
        assert row == pytest.approx(np.mean(dists))


def test_novelty():
    counts = np.array([3, 1, 0, 0])  # p = (c + 1)/(4 + 4) = 1/2, 1/4, 1/8, 1/8
    np.testing.assert_allclose(ba.popularity_share(counts), [0.5, 0.25, 0.125, 0.125])
    nov = ba.novelty(np.array([[0, 2], [1, -1], [-1, -1]]), counts, 2)
    assert nov[0] == pytest.approx(2.0) and nov[1] == pytest.approx(2.0)
    assert np.isnan(nov[2])


def test_all_metrics_at_every_k():
    ranked = np.array([[0, 1], [1, 2]])
    per_user, agg = ba.beyond_accuracy_metrics(
        ranked, [1, 2], 4, train_counts=np.array([3, 1, 0, 0]),
        item_vectors={"genres": np.eye(4)})
    assert sorted(per_user) == ["ild_genres@1", "ild_genres@2", "novelty@1", "novelty@2"]
    assert sorted(agg) == ["coverage@1", "coverage@2", "gini@1", "gini@2"]
    assert agg["coverage@2"] == pytest.approx(0.75)
    np.testing.assert_allclose(per_user["ild_genres@2"], [1.0, 1.0])
