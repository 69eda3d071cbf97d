"""similar_items: cluster-mates first, title/id look-up, zero vectors."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from recsys_jax.analysis.similar import (
    SIMILAR_COLUMNS,
    AmbiguousTitleError,
    ItemNotFoundError,
    cosine_similarities,
    find_item,
    format_similar,
    similar_items,
)


def test_returns_cluster_mates_most_similar_first(planted):
    for query in (0, 17, 123):
        result = similar_items(planted.embeddings, planted.items, query, k=10)
        assert tuple(result.columns) == SIMILAR_COLUMNS
        assert len(result) == 10
        assert query not in set(result["item_id"])
        assert (planted.cluster[result["item_id"]] == planted.cluster[query]).all()
        assert (np.diff(result["similarity"]) <= 0).all()


def test_ranks_the_whole_cluster_before_any_other_item(planted):
    query = 3
    mates = int(np.sum(planted.cluster == planted.cluster[query])) - 1
    result = similar_items(planted.embeddings, planted.items, query, k=mates + 5)
    in_cluster = planted.cluster[result["item_id"]] == planted.cluster[query]
    assert in_cluster[:mates].all() and not in_cluster[mates:].any()


def test_similarity_is_cosine(planted):
    result = similar_items(planted.embeddings, planted.items, 0, k=3)
    e = planted.embeddings.astype(np.float64)
    for item_id, sim in zip(result["item_id"], result["similarity"]):
        expected = e[0] @ e[item_id] / np.linalg.norm(e[0]) / np.linalg.norm(e[item_id])
        assert sim == pytest.approx(expected)


def test_rows_carry_title_and_genres(planted):
    result = similar_items(planted.embeddings, planted.items, "Star Wars (1977)", k=2)
    for row in result.itertuples(index=False):
        source = planted.items.iloc[row.item_id]
        assert row.title == source["title"] and row.genres == source["genres"]


def test_title_lookup_exact_then_case_insensitive(planted):
    assert find_item(planted.items, "Star Wars (1977)") == 0
    assert find_item(planted.items, "  star WARS (1977) ") == 0


def test_exact_title_wins_over_case_insensitive_match():
    items = pd.DataFrame({"item_id": [0, 1], "title": ["Heat (1995)", "heat (1995)"],
                          "genres": [(), ()]})
    assert find_item(items, "heat (1995)") == 1
    with pytest.raises(AmbiguousTitleError):
        find_item(items, "HEAT (1995)")


def test_unknown_title_suggests_close_matches(planted):
    with pytest.raises(ItemNotFoundError, match=r"did you mean 'Star Wars \(1977\)'") as info:
        find_item(planted.items, "Star Wars")
    assert info.value.suggestions[0] == "Star Wars (1977)"
    with pytest.raises(ItemNotFoundError) as info:
        find_item(planted.items, "shawshank")
    assert info.value.suggestions == ["Shawshank Redemption, The (1994)"]


def test_unknown_title_without_close_matches(planted):
    with pytest.raises(ItemNotFoundError, match="no item titled 'qqqqqqqqqqqq'$") as info:
        similar_items(planted.embeddings, planted.items, "qqqqqqqqqqqq")
    assert info.value.suggestions == []


def test_duplicate_title_asks_for_an_id(planted):
    with pytest.raises(AmbiguousTitleError, match=r"\[5, 6\]") as info:
        similar_items(planted.embeddings, planted.items, "Chasing Amy (1997)")
    assert info.value.item_ids == [5, 6]


def test_query_by_id_accepts_numpy_integers(planted):
    by_int = similar_items(planted.embeddings, planted.items, 7, k=5)
    by_numpy = similar_items(planted.embeddings, planted.items, np.int64(7), k=5)
    pd.testing.assert_frame_equal(by_int, by_numpy)


@pytest.mark.parametrize("query", [200, -1])
def test_unknown_id_is_a_clear_error(planted, query):
    with pytest.raises(ItemNotFoundError, match=f"item id {query} is not in the items table"):
        similar_items(planted.embeddings, planted.items, query)


def test_bad_query_type(planted):
    with pytest.raises(TypeError):
        find_item(planted.items, True)
    with pytest.raises(TypeError):
        find_item(planted.items, 1.5)


def test_zero_vectors_get_similarity_zero_not_nan(planted):
    embeddings = planted.embeddings.copy()
    embeddings[planted.cluster != planted.cluster[0]] = 0.0
    mates = int(np.sum(planted.cluster == planted.cluster[0])) - 1
    result = similar_items(embeddings, planted.items, 0, k=mates + 3)
    assert np.isfinite(result["similarity"]).all()
    assert (result["similarity"].iloc[mates:] == 0.0).all()
    # Equal similarities are ordered by item id.
    assert list(result["item_id"].iloc[mates:]) == sorted(result["item_id"].iloc[mates:])


def test_zero_query_warns_and_returns_zeros(planted):
    embeddings = planted.embeddings.copy()
    embeddings[4] = 0.0
    with pytest.warns(UserWarning, match="all-zero embedding"):
        result = similar_items(embeddings, planted.items, 4, k=3)
    assert list(result["similarity"]) == [0.0, 0.0, 0.0]
    assert list(result["item_id"]) == [0, 1, 2]


def test_cosine_similarities_without_warnings():
    embeddings = np.array([[0.0, 0.0], [3.0, 4.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(cosine_similarities(embeddings, 1), [0.0, 1.0])
        np.testing.assert_allclose(cosine_similarities(embeddings, 0), [0.0, 0.0])


def test_only_items_in_the_table_are_candidates(planted):
    items = planted.items.iloc[:20]
    result = similar_items(planted.embeddings, items, 0, k=50)
    assert len(result) == 19
    assert set(result["item_id"]) == set(range(1, 20))


def test_table_encoded_with_another_mapping_is_rejected(planted):
    with pytest.raises(ValueError, match="same id mapping"):
        similar_items(planted.embeddings[:100], planted.items, 0)


def test_k_must_be_positive(planted):
    with pytest.raises(ValueError, match="k must be positive"):
        similar_items(planted.embeddings, planted.items, 0, k=0)


def test_format_similar_lists_rank_similarity_title_genres(planted):
    result = similar_items(planted.embeddings, planted.items, 0, k=3)
    lines = format_similar(result).splitlines()
    assert len(lines) == 4
    first = result.iloc[0]
    assert lines[1].split()[:3] == ["1", f"{first['similarity']:.3f}", str(first["item_id"])]
    assert first["title"] in lines[1] and "|".join(first["genres"]) in lines[1]
