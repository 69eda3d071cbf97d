"""Full ranking: tie-breaking, masking, chunking, and agreement between input kinds.

Both selections (``"top_k"``, the accelerators' default, and ``"blocked"``, the CPU's) are
held to the same lists.
"""

import warnings

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from recsys_jax.evaluation.interactions import interaction_matrix
from recsys_jax.evaluation.ranking import (
    SELECTIONS,
    RankingStats,
    default_chunk_size,
    default_selection,
    full_ranking,
)
from recsys_jax.evaluation.sources import (
    Embeddings,
    Float64ScoresWarning,
    RankedLists,
    ScoreFunction,
    ScoreMatrix,
)


def _reference_top_k(scores, exclude, k):
    """NumPy reference: sort by (-score, item id), drop excluded and -inf, pad with -1."""
    out = np.full((len(scores), k), -1)
    dense = exclude.toarray() > 0
    for u, row in enumerate(scores):
        order = np.lexsort((np.arange(len(row)), -row))
        order = [i for i in order if not dense[u, i] and row[i] != -np.inf][:k]
        out[u, :len(order)] = order
    return out


def _random_exclusions(rng, num_users, num_items, max_per_user):
    users, items = [], []
    for u in range(num_users):
        n = int(rng.integers(0, max_per_user + 1))
        items += rng.choice(num_items, size=n, replace=False).tolist()
        users += [u] * n
    return interaction_matrix(users, items, num_users, num_items)


@pytest.mark.parametrize("selection", SELECTIONS)
def test_all_equal_scores_give_lowest_ids_minus_seen(selection):
    num_users, num_items, k = 6, 40, 10
    exclude = interaction_matrix([0, 0, 0, 3, 3], [0, 2, 5, 9, 1], num_users, num_items)
    source = Embeddings(np.zeros((num_users, 4)), np.zeros((num_items, 4)))
    top = full_ranking(source, np.arange(num_users), k, exclude=exclude, chunk_size=4,
                       selection=selection)
    assert top.items[0].tolist() == [1, 3, 4, 6, 7, 8, 9, 10, 11, 12]
    assert top.items[3].tolist() == [0, 2, 3, 4, 5, 6, 7, 8, 10, 11]
    assert top.items[1].tolist() == list(range(10))


@pytest.mark.parametrize("selection", SELECTIONS)
def test_negative_zero_ties_with_positive_zero(selection):
    # top_k orders -0.0 below +0.0; the kernel must treat them as a tie (lower id first).
    scores = np.array([[-0.0, 0.0, -0.0, 0.0, -1.0]], dtype=np.float32)
    top = full_ranking(ScoreMatrix(scores), np.array([0]), 5, selection=selection)
    assert top.items[0].tolist() == [0, 1, 2, 3, 4]
    # In a catalogue long enough for blocks (of 16 here): a block of -0.0 ties with +0.0.
    scores = np.full((1, 512), -1.0, np.float32)
    scores[0, :16], scores[0, 16:48] = -0.0, 0.0
    top = full_ranking(ScoreMatrix(scores), np.array([0]), 3, selection=selection)
    assert top.items[0].tolist() == [0, 1, 2]


@pytest.mark.parametrize("selection", SELECTIONS)
@pytest.mark.parametrize("seed,num_items,k", [(0, 300, 50), (1, 300, 50), (2, 2000, 7)])
def test_many_exact_ties_match_lexsort_reference(selection, seed, num_items, k):
    # 2000 items and K = 7 is long enough for the blocked selection's blocks (of 16).
    rng = np.random.default_rng(seed)
    num_users = 37
    scores = rng.integers(-2, 3, size=(num_users, num_items)).astype(np.float32)
    exclude = _random_exclusions(rng, num_users, num_items, 40)
    for source in (ScoreMatrix(scores), ScoreFunction(lambda u: jnp.asarray(scores[u]),
                                                      num_items)):
        top = full_ranking(source, np.arange(num_users), k, exclude=exclude, chunk_size=8,
                           selection=selection)
        np.testing.assert_array_equal(top.items, _reference_top_k(scores, exclude, k))


@pytest.mark.parametrize("selection", SELECTIONS)
@pytest.mark.parametrize("num_items,k", [(200, 60), (3000, 5)])
def test_embedding_path_ties_match_reference(selection, num_items, k):
    # Integer embeddings make exact, heavily tied dot products.
    rng = np.random.default_rng(3)
    users = rng.integers(-1, 2, size=(29, 3)).astype(np.float32)
    items = rng.integers(-1, 2, size=(num_items, 3)).astype(np.float32)
    exclude = _random_exclusions(rng, 29, num_items, 30)
    top = full_ranking(Embeddings(users, items), np.arange(29), k, exclude=exclude,
                       chunk_size=16, selection=selection)
    np.testing.assert_array_equal(top.items, _reference_top_k(users @ items.T, exclude, k))


@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 70), chunk=st.sampled_from([1, 3, 8]))
def test_seen_items_never_appear(seed, k, chunk):
    rng = np.random.default_rng(seed)
    num_users, num_items = 9, 50
    exclude = _random_exclusions(rng, num_users, num_items, num_items)  # some users see all
    source = Embeddings(rng.standard_normal((num_users, 4)), rng.standard_normal((num_items, 4)))
    top = full_ranking(source, np.arange(num_users), k, exclude=exclude, chunk_size=chunk)
    dense = exclude.toarray() > 0
    for u in range(num_users):
        listed = top.items[u][top.items[u] >= 0]
        assert not dense[u, listed].any()
        # Every unseen item is listed until the list is full.
        assert len(listed) == min(k, int((~dense[u]).sum()))
        assert len(set(listed.tolist())) == len(listed)


def test_chunked_equals_unchunked_and_user_order_is_kept():
    rng = np.random.default_rng(4)
    num_users, num_items, k = 50, 120, 15
    source = Embeddings(rng.standard_normal((num_users, 8)), rng.standard_normal((num_items, 8)),
                        similarity="cosine")
    exclude = _random_exclusions(rng, num_users, num_items, 30)
    users = rng.permutation(num_users)[:40]
    full = full_ranking(source, users, k, exclude=exclude, chunk_size=64)
    for chunk in (1, 7, 16):
        part = full_ranking(source, users, k, exclude=exclude, chunk_size=chunk)
        np.testing.assert_array_equal(part.items, full.items)
        # XLA may sum a dot product in another order for another chunk shape: last-bit only.
        np.testing.assert_allclose(part.scores, full.scores, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(full.users, users)


def test_all_score_sources_agree():
    rng = np.random.default_rng(5)
    u, it = rng.standard_normal((20, 6)), rng.standard_normal((70, 6))
    exclude = _random_exclusions(rng, 20, 70, 10)
    scores = (u.astype(np.float32) @ it.astype(np.float32).T)
    users = np.arange(20)
    by_emb = full_ranking(Embeddings(u, it), users, 10, exclude=exclude)
    by_matrix = full_ranking(ScoreMatrix(scores), users, 10, exclude=exclude)
    by_fn = full_ranking(ScoreFunction(lambda ids: scores[ids], 70), users, 10,
                         exclude=exclude)
    np.testing.assert_array_equal(by_emb.items, by_matrix.items)
    np.testing.assert_array_equal(by_fn.items, by_matrix.items)
    np.testing.assert_array_equal(by_matrix.items, _reference_top_k(scores, exclude, 10))


def test_cosine_normalises_both_sides():
    users = np.array([[10.0, 0.0]])
    items = np.array([[1.0, 0.0], [100.0, 100.0], [0.0, 0.0], [0.0, 5.0]])
    assert full_ranking(Embeddings(users, items), [0], 4).items[0].tolist() == [1, 0, 2, 3]
    top = full_ranking(Embeddings(users, items, similarity="cosine"), [0], 4)
    assert top.items[0].tolist() == [0, 1, 2, 3]  # items 2 and 3 tie at cosine 0
    np.testing.assert_allclose(top.scores[0], [1.0, np.sqrt(0.5), 0.0, 0.0], rtol=1e-6)


@pytest.mark.parametrize("selection", SELECTIONS)
def test_k_beyond_catalogue_and_neg_inf_scores_pad_with_minus_one(selection):
    scores = np.array([[0.5, -np.inf, 0.2], [1.0, 2.0, 3.0]], dtype=np.float32)
    exclude = interaction_matrix([1], [2], 2, 3)
    top = full_ranking(ScoreMatrix(scores), np.arange(2), 5, exclude=exclude,
                       selection=selection)
    assert top.items.tolist() == [[0, 2, -1, -1, -1], [1, 0, -1, -1, -1]]
    assert np.isneginf(top.scores[0, 2:]).all()
    # Blocks (of 16 over 700 items): three finite candidates, one in the short last block.
    scores = np.full((2, 700), -np.inf, np.float32)
    scores[:, [5, 300, 699]] = [[1.0, 3.0, 2.0]]
    exclude = interaction_matrix([1], [300], 2, 700)
    top = full_ranking(ScoreMatrix(scores), np.arange(2), 5, exclude=exclude,
                       selection=selection)
    assert top.items.tolist() == [[300, 699, 5, -1, -1], [699, 5, -1, -1, -1]]


@pytest.mark.parametrize("selection", SELECTIONS)
@pytest.mark.parametrize("num_items", [20, 700])
def test_nan_scores_raise(selection, num_items):
    scores = np.zeros((3, num_items), np.float32)
    scores[1, 7] = np.nan
    scores[1, 9] = np.nan
    with pytest.raises(ValueError, match=r"NaN scores for user\(s\) \[1\] \(first NaN: "
                                         r"user 1 item 7\)"):
        full_ranking(ScoreMatrix(scores), np.arange(3), 2, selection=selection)
    with pytest.raises(ValueError, match="NaN"):
        full_ranking(Embeddings(np.full((1, 2), np.nan), np.ones((3, 2))), [0], 2,
                     selection=selection)


@pytest.mark.parametrize("selection", SELECTIONS)
@pytest.mark.parametrize("num_items", [20, 700])
@pytest.mark.parametrize("wrap", [ScoreMatrix, lambda s: ScoreFunction(lambda u: s[u],
                                                                       s.shape[1])])
def test_nan_on_an_excluded_item_raises_naming_user_and_item(wrap, num_items, selection):
    # Item 7 is excluded for user 1: masking would hide its NaN, a model bug all the same.
    # User 2's row, in the next chunk, has a NaN too: the first chunk's is the one reported.
    scores = np.zeros((3, num_items), np.float32)
    scores[1, 7] = scores[1, 12] = scores[2, 3] = np.nan
    exclude = interaction_matrix([1, 1], [7, 3], 3, num_items)
    with pytest.raises(ValueError, match=r"user\(s\) \[1\].*user 1 item 7\)"):
        full_ranking(wrap(scores), np.arange(3), 2, exclude=exclude, chunk_size=2,
                     selection=selection)


def test_nan_in_an_unranked_user_row_is_not_reported():
    scores = np.zeros((3, 20), np.float32)
    scores[2, 0] = np.nan  # user 2 is not ranked
    assert full_ranking(ScoreMatrix(scores), np.arange(2), 2).items.tolist() == [[0, 1]] * 2


def test_float64_scores_warn_only_when_float32_changes_them():
    rng = np.random.default_rng(0)
    lossy = rng.normal(size=(4, 30))  # float64 with bits float32 cannot hold
    with pytest.warns(Float64ScoresWarning, match="lower item id"):
        full_ranking(ScoreMatrix(lossy), np.arange(4), 3)
    with pytest.warns(Float64ScoresWarning):
        full_ranking(ScoreFunction(lambda u: lossy[u], 30), np.arange(4), 3)
    with pytest.warns(Float64ScoresWarning, match="user embeddings"):
        full_ranking(Embeddings(lossy, np.ones((5, 30), np.float32)), np.arange(4), 3)
    exact = np.round(lossy * 8) / 8  # multiples of 1/8: exact in float32
    with warnings.catch_warnings():
        warnings.simplefilter("error", Float64ScoresWarning)
        full_ranking(ScoreMatrix(exact), np.arange(4), 3)
        full_ranking(ScoreMatrix(lossy.astype(np.float32)), np.arange(4), 3)


def test_float64_near_tie_resolves_by_item_id():
    # 1 + 1e-12 and 1 are distinct in float64 but tie in float32: the lower id comes first.
    scores = np.array([[1.0, 1.0 + 1e-12]])
    with pytest.warns(Float64ScoresWarning):
        top = full_ranking(ScoreMatrix(scores), [0], 2)
    assert top.items.tolist() == [[0, 1]]


def test_ranked_lists_drop_excluded_items_and_move_the_rest_up():
    lists = np.array([[4, 1, 2, 3, -1], [0, 1, 2, 3, 4]])
    exclude = interaction_matrix([0, 0, 1], [1, 3, 4], 2, 6)
    stats = RankingStats()
    top = full_ranking(RankedLists(lists, users=np.array([1, 0])), np.array([0, 1]), 3,
                       exclude=exclude, stats=stats)
    # User 0 is row 1 minus {1, 3}; user 1 is row 0 minus {4}.
    assert top.items.tolist() == [[0, 2, 4], [1, 2, 3]]
    assert stats.removed_excluded == 3
    with pytest.raises(ValueError, match="lack user"):
        full_ranking(RankedLists(lists), np.array([2]), 3)


def test_input_validation():
    with pytest.raises(ValueError, match="dimension"):
        Embeddings(np.zeros((2, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="no embedding"):
        full_ranking(Embeddings(np.zeros((2, 3)), np.zeros((4, 3))), [5], 2)
    with pytest.raises(ValueError, match="columns"):
        full_ranking(ScoreFunction(lambda u: np.zeros((len(u), 3)), 4), [0], 2)


def test_selection_defaults_to_blocked_on_cpu_and_is_checked():
    assert default_selection() == "blocked"  # the tests run on the CPU backend
    with pytest.raises(ValueError, match="selection"):
        full_ranking(ScoreMatrix(np.zeros((1, 3))), [0], 2, selection="approx")


def test_default_chunk_size_is_bounded():
    assert default_chunk_size(50_000, 100_000) == 64
    assert default_chunk_size(1682, 943) == 1024
    assert default_chunk_size(10, 3) == 4
    # A large catalogue keeps 64 users a chunk (the item side is streamed once per chunk);
    # never more than the users.
    assert default_chunk_size(1_000_000, 200_000) == 64
    assert default_chunk_size(1_000_000, 5) == 8
