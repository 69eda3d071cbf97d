"""Genre-cluster score: finds planted clusters, stays null on random embeddings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys_jax.analysis.genre_clusters import genre_cluster_score, genres_by_row, neighbour_indices
from recsys_jax.analysis.similar import item_rows
from tests.analysis.planted import make_planted


def test_planted_clusters_are_found(planted):
    genres = list(planted.items["genres"])
    score = genre_cluster_score(planted.embeddings, genres, k=10, n_permutations=200)
    assert score.observed > 0.95
    # Four equally common genres: a random neighbour shares one about a quarter of the time.
    assert score.null_mean == pytest.approx(0.25, abs=0.03)
    assert score.p_value == pytest.approx(1 / 201)  # the smallest a permutation test gives
    assert (score.k, score.n_items, score.n_permutations) == (10, 200, 200)


def test_random_embeddings_score_like_the_null(planted):
    genres = list(planted.items["genres"])
    rng = np.random.default_rng(1)
    # Under the null the p-value is uniform, so look at many draws, not one lucky seed.
    scores = [genre_cluster_score(rng.normal(size=(200, 16)), genres, n_permutations=99,
                                  seed=s) for s in range(20)]
    p_values = np.array([s.p_value for s in scores])
    assert np.median(p_values) > 0.2
    assert np.sum(p_values <= 0.05) <= 4
    for s in scores:
        assert abs(s.observed - s.null_mean) < 5 * s.null_std


def test_share_counts_any_common_genre():
    # Two tight pairs; with k=1 each item's neighbour is its pair-mate.
    embeddings = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    genres = [("A", "B"), ("B", "C"), ("D",), ("E",)]
    score = genre_cluster_score(embeddings, genres, k=1, n_permutations=10)
    assert score.observed == pytest.approx(0.5)


def test_items_without_genre_or_embedding_are_left_out(planted):
    embeddings = planted.embeddings.copy()
    genres = list(planted.items["genres"])
    embeddings[:5] = 0.0
    genres[5:8] = [(), (), ()]
    score = genre_cluster_score(embeddings, genres, n_permutations=20)
    assert score.n_items == 192
    assert np.isfinite([score.observed, score.null_mean, score.null_std]).all()


def test_mask_restricts_items(planted):
    mask = np.zeros(200, dtype=bool)
    mask[:50] = True
    score = genre_cluster_score(planted.embeddings, list(planted.items["genres"]),
                                mask=mask, n_permutations=20)
    assert score.n_items == 50


def test_p_value_is_a_permutation_p_value(planted):
    rng = np.random.default_rng(3)
    score = genre_cluster_score(rng.normal(size=(200, 16)), list(planted.items["genres"]),
                                n_permutations=49, seed=4)
    hits = score.p_value * 50 - 1
    assert hits == pytest.approx(round(hits)) and 0 <= round(hits) <= 49


def test_same_seed_same_result(planted):
    genres = list(planted.items["genres"])
    first = genre_cluster_score(planted.embeddings, genres, n_permutations=30, seed=7)
    assert genre_cluster_score(planted.embeddings, genres, n_permutations=30, seed=7) == first


def test_format_names_the_numbers(planted):
    score = genre_cluster_score(planted.embeddings, list(planted.items["genres"]),
                                n_permutations=20)
    text = score.format()
    assert "k=10" in text and "200 items" in text and "20 permutations" in text
    assert f"{score.observed:.3f}" in text


@pytest.mark.parametrize("kwargs, message", [
    ({"k": 200}, "need more than k"),
    ({"n_permutations": 0}, "n_permutations"),
    ({"mask": np.ones(3, dtype=bool)}, "mask has shape"),
])
def test_bad_arguments(planted, kwargs, message):
    with pytest.raises(ValueError, match=message):
        genre_cluster_score(planted.embeddings, list(planted.items["genres"]), **kwargs)


def test_genre_count_must_match_rows(planted):
    with pytest.raises(ValueError, match="199 genre tuples for 200"):
        genre_cluster_score(planted.embeddings, list(planted.items["genres"])[:-1])


def test_neighbours_exclude_self_even_for_duplicates():
    embeddings = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    neighbours = neighbour_indices(embeddings, k=2)
    assert neighbours.shape == (4, 2)
    assert all(row not in neighbours[row] for row in range(4))
    assert neighbours[0, 0] == 1 and neighbours[1, 0] == 0


def test_genres_by_row_aligns_by_item_id():
    items = pd.DataFrame({"item_id": [2, 0], "title": ["b", "a"], "genres": [("X",), ("Y", "Z")]})
    assert genres_by_row(items, 4) == [("Y", "Z"), (), ("X",), ()]
    np.testing.assert_array_equal(item_rows(items, 3), [2, 0])


def test_placeholder_genres_are_not_genres():
    items = pd.DataFrame({"item_id": [0, 1, 2], "title": ["a", "b", "c"],
                          "genres": [("unknown",), ("(no genres listed)",), ("unknown", "War")]})
    assert genres_by_row(items, 3) == [(), (), ("War",)]


def test_item_ids_outside_the_embedding_rows_are_rejected():
    items = pd.DataFrame({"item_id": [0, 5], "title": ["a", "b"], "genres": [(), ()]})
    with pytest.raises(ValueError, match="same id mapping"):
        genres_by_row(items, 5)


def test_larger_planted_set_with_multi_genre_items():
    planted = make_planted(n_items=300, seed=2)
    # Give every item a second, random genre: clusters still share their planted genre.
    rng = np.random.default_rng(0)
    extra = rng.choice(["Romance", "War", "Crime"], size=300)
    genres = [g + (e,) for g, e in zip(planted.items["genres"], extra)]
    score = genre_cluster_score(planted.embeddings, genres, n_permutations=100)
    assert score.observed > 0.95
    assert score.p_value == pytest.approx(1 / 101)


def test_true_factors_of_the_synthetic_generator_cluster_by_genre():
    # The generator derives genres from item-factor directions, so its true factors must score
    # far above the null, and the same factors given to the wrong items must not.
    from recsys_jax.data.synthetic import generate_synthetic_with_truth

    dataset, truth = generate_synthetic_with_truth(50, 300, 2000, seed=0)
    genres = genres_by_row(dataset.items, 300)
    score = genre_cluster_score(truth.item_factors, genres, n_permutations=100)
    assert score.p_value == pytest.approx(1 / 101)
    assert score.observed > score.null_mean + 10 * score.null_std
    shuffled = np.random.default_rng(0).permutation(truth.item_factors)
    assert genre_cluster_score(shuffled, genres, n_permutations=100).p_value > 0.05
