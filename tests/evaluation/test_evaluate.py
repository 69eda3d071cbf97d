"""Targets built from split parts, and one source evaluated end to end."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys_jax.evaluation.evaluate import evaluate_ranking, target_from_arrays, target_from_split
from recsys_jax.evaluation.interactions import binary_union, interaction_matrix
from recsys_jax.evaluation.ranking import RankingStats
from recsys_jax.evaluation.sources import ScoreMatrix

# user 0: train {0, 1}, val {2}, test {3}; user 1: train {0}, test {4}; user 2: train {5}.
TRAIN = ([0, 0, 1, 2], [0, 1, 0, 5], [5.0, 4.0, 3.0, 1.0])
VAL = ([0], [2], [2.0])
TEST = ([0, 1], [3, 4], [5.0, 1.0])


def test_test_target_excludes_train_and_val():
    t = target_from_arrays(TRAIN, VAL, TEST, 3, 6, part="test")
    assert t.exclude.toarray().astype(int).tolist() == [[1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0],
                                                       [0, 0, 0, 0, 0, 1]]
    assert t.users.tolist() == [0, 1]
    assert t.relevant.toarray()[0, 3] == 5.0  # ratings kept as gains
    assert t.train_counts.tolist() == [2, 1, 0, 0, 0, 1]
    assert t.interacted.sum() == 7


def test_val_target_excludes_train_only():
    t = target_from_arrays(TRAIN, VAL, TEST, 3, 6, part="val")
    assert t.exclude.toarray()[0].astype(int).tolist() == [1, 1, 0, 0, 0, 0]
    assert t.users.tolist() == [0]
    with pytest.raises(ValueError, match="part"):
        target_from_arrays(TRAIN, VAL, TEST, 3, 6, part="train")


@pytest.mark.parametrize("part, leak", [("test", ([1], [4])), ("test", ([0], [3])),
                                        ("val", ([0], [2]))])
def test_a_held_out_pair_also_in_an_excluded_part_is_refused(part, leak):
    # Leak into train (test and val) or into val (test): the held-out item would be masked.
    train = tuple(list(a) + b for a, b in zip(TRAIN[:2], leak))
    val = VAL[:2]
    if part == "test" and leak == ([0], [3]):
        train, val = TRAIN[:2], ([0, 0], [2, 3])
    with pytest.raises(ValueError, match=rf"1 \(user, item\) pair\(s\) of the {part} part.*"
                       rf"user {leak[0][0]}, item {leak[1][0]}"):
        target_from_arrays(train, val, TEST[:2], 3, 6, part=part)


def test_a_pair_in_test_and_train_is_fine_when_evaluating_val():
    # Only the part evaluated must be disjoint from what it excludes.
    t = target_from_arrays((TRAIN[0] + [1], TRAIN[1] + [4]), VAL[:2], TEST[:2], 3, 6, part="val")
    assert t.users.tolist() == [0]


def test_seen_matrices_for_baselines():
    t = target_from_arrays(TRAIN, VAL, TEST, 3, 6)
    assert (t.seen(("train",)) != t.train).nnz == 0
    both = t.seen(("train", "val")).toarray()
    assert both[0].tolist() == [5.0, 4.0, 2.0, 0, 0, 0] and both.sum() == 5 + 4 + 3 + 1 + 2
    with pytest.raises(ValueError, match="evaluating"):
        target_from_arrays(TRAIN, VAL, TEST, 3, 6, part="val").seen(("train", "val"))


def test_target_from_split_frames():
    def frame(p):
        return pd.DataFrame({"user_id": p[0], "item_id": p[1], "rating": p[2]})

    class FakeSplit:
        train, val, test = frame(TRAIN), frame(VAL), frame(TEST)

    a = target_from_split(FakeSplit, 3, 6)
    b = target_from_arrays(TRAIN, VAL, TEST, 3, 6)
    assert (a.exclude != b.exclude).nnz == 0 and (a.relevant != b.relevant).nnz == 0


def test_evaluate_ranking_by_hand():
    t = target_from_arrays(TRAIN, VAL, TEST, 3, 6)
    # Every user scores items by id descending: 5, 4, 3, ...
    scores = np.tile(np.arange(6, dtype=np.float32), (3, 1))
    stats = RankingStats()
    res = evaluate_ranking(ScoreMatrix(scores), t, [1, 2], stats=stats)
    # user 0 (excl. 0, 1, 2): list [5, 4, 3] → hit at rank 3; user 1 (excl. 0): [5, 4] → rank 2.
    assert res.users.tolist() == [0, 1] and res.num_skipped == 1
    assert res.values["hr@2"].tolist() == [0.0, 1.0]
    assert res.values["mrr@2"].tolist() == [0.0, 0.5]
    assert res.aggregates["coverage@2"] == pytest.approx(2 / 6)  # items 4 and 5
    assert "novelty@2" in res.values and stats.num_chunks == 1
    with pytest.raises(ValueError, match="protocol"):
        evaluate_ranking(ScoreMatrix(scores), t, [1], protocol="approx")


def test_interaction_helpers():
    m = interaction_matrix([1, 1, 0], [2, 2, 0], 2, 3, values=[1.0, 4.0, 2.0])
    assert m.toarray().tolist() == [[2.0, 0, 0], [0, 0, 4.0]]  # duplicate keeps the largest
    u = binary_union(m, interaction_matrix([0], [1], 2, 3))
    assert u.toarray().tolist() == [[1, 1, 0], [0, 0, 1]]
    with pytest.raises(ValueError, match="item id"):
        interaction_matrix([0], [3], 2, 3)


def test_interaction_matrix_of_shuffled_pairs_with_repeats_matches_a_dict():
    # Rows arrive in any order, pairs repeat: one entry per pair (its largest value), columns
    # sorted in every row.
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 30, 2000), rng.integers(0, 25, 2000)
    values = rng.choice([1.0, 2.5, 4.0, 5.0], 2000)
    expected = {}
    for u, i, v in zip(users.tolist(), items.tolist(), values.tolist()):
        expected[(u, i)] = max(v, expected.get((u, i), v))
    m = interaction_matrix(users, items, 31, 25, values)
    assert m.has_sorted_indices and m.nnz == len(expected) and m.shape == (31, 25)
    coo = m.tocoo()
    assert dict(zip(zip(coo.row.tolist(), coo.col.tolist()), coo.data.tolist())) == expected
    # The union is the set of stored pairs; explicitly stored zeros are not among them.
    other = sp.csr_array((np.array([0.0, 3.0]), np.array([24, 0]), np.array([0, 2] + [2] * 30)),
                         shape=(31, 25))
    union = binary_union(m, other)
    assert set(zip(*union.nonzero())) == set(expected) | {(0, 0)}
    assert union.has_sorted_indices and (union.data == 1.0).all()
