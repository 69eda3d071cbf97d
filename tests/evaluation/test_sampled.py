"""Sampled protocol: only unseen items are drawn, reproducibly, and ranked like full ranking."""

import numpy as np
import pytest

from recsys_jax.evaluation.evaluate import evaluate_ranking, target_from_arrays
from recsys_jax.evaluation.interactions import interaction_matrix
from recsys_jax.evaluation.sampled import (
    rank_candidates,
    sample_unseen_items,
    sampled_candidates,
    sampled_ranking,
)
from recsys_jax.evaluation.sources import (
    Embeddings,
    Float64ScoresWarning,
    RankedLists,
    ScoreFunction,
    ScoreMatrix,
)


def _data(seed=0, num_users=40, num_items=300):
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(num_users):
        n = int(rng.integers(1, 120))
        users += [u] * n
        items += rng.choice(num_items, size=n, replace=False).tolist()
    users, items = np.array(users), np.array(items)
    test = rng.random(len(users)) < 0.1
    return (interaction_matrix(users[~test], items[~test], num_users, num_items),
            interaction_matrix(users[test], items[test], num_users, num_items))


def test_negatives_are_unseen_distinct_and_reproducible():
    train, test = _data()
    interacted = train + test
    c = sampled_candidates(test, interacted, 99, seed=7)
    dense = interacted.toarray() > 0
    test_dense = test.toarray() > 0
    for row, u in enumerate(c.users):
        held = int(test_dense[u].sum())
        cands = c.candidates[row][c.candidates[row] >= 0]
        assert set(cands[:held].tolist()) == set(np.flatnonzero(test_dense[u]).tolist())
        negatives = cands[held:]
        assert len(negatives) == 99 and len(set(negatives.tolist())) == 99
        assert not dense[u, negatives].any()
    again = sampled_candidates(test, interacted, 99, seed=7)
    np.testing.assert_array_equal(again.candidates, c.candidates)
    other = sampled_candidates(test, interacted, 99, seed=8)
    assert not np.array_equal(other.candidates, c.candidates)


def test_a_users_negatives_do_not_depend_on_other_users():
    seen = np.array([0, 3, 4, 9])
    a = sample_unseen_items(5, seen, 50, 10, seed=1)
    b = sample_unseen_items(5, seen, 50, 10, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not set(a.tolist()) & set(seen.tolist())


def test_index_mapping_covers_exactly_the_unseen_items():
    seen = np.array([0, 1, 5, 6, 7, 19])
    drawn = sample_unseen_items(0, seen, 20, 100, seed=0)  # asks for more than exist
    assert drawn.tolist() == sorted(set(range(20)) - set(seen.tolist()))


def test_short_users_get_every_unseen_item_and_are_reported():
    train = interaction_matrix([0] * 7, range(7), 2, 10)
    test = interaction_matrix([0, 1], [7, 0], 2, 10)
    c = sampled_candidates(test, train + test, 5, seed=0)
    assert c.short_users.tolist() == [0]
    assert c.candidates[0].tolist() == [7, 8, 9, -1, -1, -1]


def test_ranking_breaks_ties_by_lower_item_id_and_drops_neg_inf():
    cands = np.array([[9, 3, 7, 1, -1], [5, 2, 8, 0, 4]])
    scores = np.array([[1.0, 1.0, 2.0, 1.0, 0.0], [0.0, -0.0, -np.inf, 0.0, 1.0]])
    assert rank_candidates(cands, scores).tolist() == [[7, 1, 3, 9, -1], [4, 0, 2, 5, -1]]
    with pytest.raises(ValueError, match="NaN"):
        rank_candidates(cands, np.where(cands == 3, np.nan, scores))


@pytest.mark.parametrize("wrap", [ScoreMatrix, lambda s: ScoreFunction(lambda u: s[u], 6)])
def test_sampled_nan_outside_the_candidates_raises_naming_user_and_item(wrap):
    # User 0 trained on item 1, so item 1 is never a candidate; its NaN is still a model bug.
    target = target_from_arrays(([0], [1]), ([], []), ([0], [2]), 1, 6)
    scores = np.array([[0.1, np.nan, 0.5, 0.7, 0.2, 0.3]])
    with pytest.raises(ValueError, match=r"user 0 item 1"):
        evaluate_ranking(wrap(scores), target, [1], protocol="sampled", num_negatives=2)


def test_sampled_float64_scores_warn():
    target = target_from_arrays(([0], [1]), ([], []), ([0], [2]), 1, 6)
    scores = np.random.default_rng(0).normal(size=(1, 6))
    with pytest.warns(Float64ScoresWarning):
        evaluate_ranking(ScoreMatrix(scores), target, [1], protocol="sampled", num_negatives=2)


def test_sampled_protocol_is_labelled_and_matches_hand_ranking():
    # One user, held-out item 2; scores rank it second among the candidates.
    train = ([0, 0], [0, 1], [5.0, 4.0])
    val = ([], [], [])
    test = ([0], [2], [3.0])
    target = target_from_arrays(train, val, test, 1, 6)
    scores = np.array([[9.0, 9.0, 0.5, 0.7, 0.1, 0.2]], dtype=np.float32)
    res = evaluate_ranking(ScoreMatrix(scores), target, [1, 2], protocol="sampled",
                           num_negatives=3)
    assert res.protocol == "sampled-3"
    assert res.values["hr@1"][0] == 0 and res.values["hr@2"][0] == 1
    assert res.values["ndcg@2"][0] == pytest.approx(1 / np.log2(3))
    assert not any(name.startswith(("novelty", "ild")) for name in res.values)


def test_sampled_ranking_matches_between_embeddings_and_scores():
    train, test = _data(1)
    c = sampled_candidates(test, train + test, 20, seed=0)
    rng = np.random.default_rng(0)
    u, it = rng.integers(-2, 3, (40, 3)).astype(np.float32), rng.integers(-2, 3, (300, 3)).astype(
        np.float32)
    by_emb = sampled_ranking(Embeddings(u, it), c, chunk_size=7)
    by_scores = sampled_ranking(ScoreMatrix(u @ it.T), c)
    np.testing.assert_array_equal(by_emb, by_scores)
    with pytest.raises(ValueError, match="ranked lists"):
        sampled_ranking(RankedLists(np.zeros((40, 3), np.int64)), c)
