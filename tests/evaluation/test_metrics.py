"""Ranking metrics: hand-worked examples and agreement with a plain-Python implementation."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_jax.evaluation import metrics as m
from recsys_jax.evaluation.interactions import interaction_matrix

L2_3 = math.log2(3)


def _relevant(sets, num_items=10, gains=None):
    users = [u for u, s in enumerate(sets) for _ in s]
    items = [i for s in sets for i in s]
    values = None if gains is None else [g for gs in gains for g in gs]
    return interaction_matrix(users, items, len(sets), num_items, values)


def _metrics(lists, sets, ks, **kw):
    width = max(len(x) for x in lists)
    ranked = np.array([x + [-1] * (width - len(x)) for x in lists])
    return m.ranking_metrics(ranked, _relevant(sets), ks, **kw)


def test_two_hits_in_four():
    # R = {2, 5}, L = [5, 1, 2, 7]: hits at ranks 1 and 3.
    r = _metrics([[5, 1, 2, 7]], [{2, 5}], [1, 2, 4])
    v = {k: float(a[0]) for k, a in r.values.items()}
    assert v["hr@1"] == v["hr@4"] == 1
    assert v["precision@1"] == 1 and v["precision@2"] == 0.5 and v["precision@4"] == 0.5
    assert v["recall@1"] == 0.5 and v["recall@4"] == 1
    assert v["ndcg@1"] == 1
    assert v["ndcg@4"] == pytest.approx((1 + 1 / 2) / (1 + 1 / L2_3))
    assert v["map@2"] == pytest.approx(0.5)            # (1/2)(P@1)
    assert v["map@4"] == pytest.approx((1 + 2 / 3) / 2)  # (1/2)(P@1 + P@3)
    assert v["mrr@1"] == v["mrr@4"] == 1


def test_more_relevant_items_than_k():
    # |R| = 5 > K: R = {0..4}, L = [9, 0, 8, 1]: hits at ranks 2 and 4.
    r = _metrics([[9, 0, 8, 1]], [{0, 1, 2, 3, 4}], [2, 4])
    v = {k: float(a[0]) for k, a in r.values.items()}
    assert v["hr@2"] == 1 and v["precision@2"] == 0.5 and v["recall@2"] == pytest.approx(0.2)
    assert v["ndcg@2"] == pytest.approx((1 / L2_3) / (1 + 1 / L2_3))  # IDCG: 2 ideal hits
    assert v["map@2"] == pytest.approx(0.5 * 0.5)  # 1/min(2,5) · P@2
    assert v["mrr@2"] == 0.5
    assert v["recall@4"] == pytest.approx(0.4)
    idcg4 = 1 + 1 / L2_3 + 1 / 2 + 1 / math.log2(5)
    assert v["ndcg@4"] == pytest.approx((1 / L2_3 + 1 / math.log2(5)) / idcg4)
    assert v["map@4"] == pytest.approx((0.5 + 0.5) / 4)


def test_fewer_relevant_items_than_k_and_perfect_list():
    # |R| = 2 < K = 5; the two relevant items first: every metric but precision is 1.
    r = _metrics([[3, 7, 0, 1, 2]], [{3, 7}], [5])
    v = {k: float(a[0]) for k, a in r.values.items()}
    assert v["precision@5"] == pytest.approx(0.4)
    for name in ("hr@5", "recall@5", "ndcg@5", "map@5", "mrr@5"):
        assert v[name] == pytest.approx(1.0), name


def test_k_larger_than_candidate_set():
    # One candidate left (the rest -1 padding), K = 5: precision still divides by K.
    r = _metrics([[3, -1, -1]], [{3}], [5])
    v = {k: float(a[0]) for k, a in r.values.items()}
    assert v["precision@5"] == pytest.approx(0.2)
    for name in ("hr@5", "recall@5", "ndcg@5", "map@5", "mrr@5"):
        assert v[name] == pytest.approx(1.0), name


def test_miss_scores_zero_and_empty_relevant_set_is_skipped_and_counted():
    r = _metrics([[1, 2, 3], [1, 2, 3], [4, 5, 6]], [{4}, set(), set()], [3],
                 users=np.array([0, 1, 2]))
    assert r.users.tolist() == [0] and r.num_skipped == 2
    assert all(float(a[0]) == 0 for a in r.values.values())


def test_rows_are_reordered_by_user_id_with_their_values():
    rel = _relevant([{1}, set(), {2}])
    r = m.ranking_metrics(np.array([[2, 0], [0, 1]]), rel, [1], users=np.array([2, 0]))
    assert r.users.tolist() == [0, 2] and r.num_skipped == 0
    assert r.values["hr@1"].tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="twice"):
        m.ranking_metrics(np.array([[2], [1]]), rel, [1], users=np.array([0, 0]))


def test_graded_ndcg_uses_ratings_as_gains():
    # R = {2: rating 5, 5: rating 3}, L = [5, 1, 2].
    rel = _relevant([{2, 5}], gains=[[5, 3]])  # items sorted: 2 → 5, 5 → 3
    r = m.ranking_metrics(np.array([[5, 1, 2]]), rel, [3], graded=True)
    dcg = 3 + 5 / 2
    idcg = 5 + 3 / L2_3
    assert r.values["ndcg_graded@3"][0] == pytest.approx(dcg / idcg)
    assert r.values["ndcg@3"][0] == pytest.approx((1 + 1 / 2) / (1 + 1 / L2_3))


def test_lists_longer_than_k_are_cut():
    r = _metrics([[1, 2, 3, 4, 5, 6]], [{6}], [5])
    assert all(float(a[0]) == 0 for a in r.values.values())


def test_rejects_bad_lists():
    rel = _relevant([{1}])
    with pytest.raises(ValueError, match="twice"):
        m.ranking_metrics(np.array([[1, 2, 1]]), rel, [3])
    with pytest.raises(ValueError, match="outside"):
        m.ranking_metrics(np.array([[1, 10]]), rel, [2])
    with pytest.raises(ValueError, match="integer"):
        m.ranking_metrics(np.array([[1.0, 2.0]]), rel, [2])
    with pytest.raises(ValueError, match="unknown"):
        m.ranking_metrics(np.array([[1, 2]]), rel, [2], metrics=["auc"])
    with pytest.raises(ValueError, match="≥ 1"):
        m.ranking_metrics(np.array([[1, 2]]), rel, [0])


def test_list_hits_finds_items_and_their_gains():
    # Rows of 3 and 1 relevant items (gains are the stored values); -1 is padding.
    rel = _relevant([{1, 4, 7}, {2}], gains=[[5.0, 3.0, 1.0], [2.0]])
    hits, gains = m.list_hits(np.array([[7, 0, 4, -1], [2, 7, -1, -1]]), rel)
    assert hits.tolist() == [[True, False, True, False], [True, False, False, False]]
    assert gains.tolist() == [[1.0, 0.0, 3.0, 0.0], [2.0, 0.0, 0.0, 0.0]]
    # A relevant set stored with an item twice (a hand-built CSR) still reads its own gain.
    twice = sp.csr_array((np.array([4.0, 4.0, 6.0]), np.array([3, 3, 5]), np.array([0, 3])),
                         shape=(1, 10))
    hits, gains = m.list_hits(np.array([[5, 3, 0]]), twice)
    assert hits.tolist() == [[True, True, False]] and gains.tolist() == [[6.0, 4.0, 0.0]]


def _reference(ranked_list, relevant, k):
    """Textbook definitions, one user at a time, with Python sets and loops."""
    top = [i for i in ranked_list[:k] if i >= 0]
    rel = [1 if i in relevant else 0 for i in top] + [0] * (k - len(top))
    n_hits = sum(rel)
    dcg = sum(r / math.log2(i + 2) for i, r in enumerate(rel))
    idcg = sum(1 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    ap, hits_so_far = 0.0, 0
    for i, r in enumerate(rel):
        if r:
            hits_so_far += 1
            ap += hits_so_far / (i + 1)
    first = next((i for i, r in enumerate(rel) if r), None)
    return {"hr": float(n_hits > 0), "precision": n_hits / k, "recall": n_hits / len(relevant),
            "ndcg": dcg / idcg, "map": ap / min(k, len(relevant)),
            "mrr": 0.0 if first is None else 1 / (first + 1)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_reference_on_random_runs(seed):
    rng = np.random.default_rng(seed)
    num_users, num_items, width = 150, 60, 25
    sets = [set(rng.choice(num_items, size=rng.integers(0, 12), replace=False).tolist())
            for _ in range(num_users)]
    lists = []
    for _ in range(num_users):
        length = int(rng.integers(0, width + 1))
        lists.append(rng.choice(num_items, size=length, replace=False).tolist()
                     + [-1] * (width - length))
    ks = [1, 3, 10, 25, 40]
    result = m.ranking_metrics(np.array(lists), _relevant(sets, num_items), ks)
    assert result.num_skipped == sum(not s for s in sets)
    for row, u in enumerate(result.users):
        for k in ks:
            expected = _reference(lists[u], sets[u], k)
            for name, value in expected.items():
                assert result.values[m.metric_key(name, k)][row] == pytest.approx(value), (
                    u, name, k)
