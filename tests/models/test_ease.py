"""EASE against its formula worked independently in NumPy, recency weights, user refits."""

import numpy as np
import pytest
from flax import nnx

from recsys_jax.models import ease, item_item
from recsys_jax.models.fitted import recency_weights

# 5 users × 4 items, binary.
X = np.array([[1, 1, 0, 0],
              [0, 1, 1, 0],
              [1, 0, 1, 1],
              [0, 0, 1, 1],
              [1, 1, 1, 0]], np.float64)


def _columns(matrix):
    users, items = np.nonzero(matrix)
    return {"user": users.astype(np.int32), "item": items.astype(np.int32)}


def _numpy_ease(x, lam):
    """Steck (2019), eq. (8): B = I − P · diag(1 ⊘ diag(P)), P = (XᵀX + λI)⁻¹."""
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    return np.eye(x.shape[1]) - p @ np.diag(1.0 / np.diag(p))


def test_ease_weights_equal_the_formula():
    b = ease.ease_weights(X, 2.0)
    np.testing.assert_allclose(b, _numpy_ease(X, 2.0), atol=1e-10)
    assert np.all(np.diag(b) == 0)
    # B minimises ‖X − XB‖² + λ‖B‖² under diag(B) = 0: the gradient vanishes off the diagonal.
    grad = -2 * X.T @ (X - X @ b) + 2 * 2.0 * b
    np.testing.assert_allclose(grad - np.diag(np.diag(grad)), 0, atol=1e-10)


def test_ease_model_scores_and_ranks_as_numpy():
    model = ease.build({"l2": 3.0}, num_users=5, num_items=4, train=_columns(X),
                       rngs=nnx.Rngs(0))
    facts = model.fit(_columns(X), None)
    assert facts["l2"] == 3.0 and facts["events"] == int(X.sum())
    expected = X @ _numpy_ease(X, 3.0)
    scores = model.user_scores(np.arange(5))
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    ranked = np.lexsort((np.arange(4)[None, :].repeat(5, 0), -scores), axis=1)
    np.testing.assert_array_equal(ranked, np.lexsort(
        (np.arange(4)[None, :].repeat(5, 0), -expected), axis=1))
    pairs = model(np.array([0, 2, 4]), np.array([3, 1, 0]))
    np.testing.assert_allclose(pairs, expected[[0, 2, 4], [3, 1, 0]], atol=1e-5)


def test_recency_weights_by_distinct_later_timestamps():
    users = np.array([0, 0, 0, 0, 1])
    times = np.array([10, 20, 20, 30, 5])
    np.testing.assert_allclose(recency_weights(users, times, 0.5), [0.25, 0.5, 0.5, 1, 1])
    np.testing.assert_array_equal(recency_weights(users, None, 1.0), np.ones(5))
    with pytest.raises(ValueError, match="needs event timestamps"):
        recency_weights(users, None, 0.5)


def test_refit_users_replaces_only_their_rows_with_weighted_events():
    model = ease.build({"l2": 1.0, "recency_weight": 0.5}, num_users=5, num_items=4,
                       train=_columns(X), rngs=nnx.Rngs(0))
    train = {**_columns(X), "timestamp": np.arange(int(X.sum()))}
    model.fit(train, None)
    b = np.asarray(model.item_weights[...])
    before = model.rows.matrix().toarray()
    # User 0 now has items 0, 1 (old) and 3 (newest); user 1 is not refitted.
    events = {"user": np.array([0, 0, 0, 1]), "item": np.array([0, 1, 3, 0]),
              "timestamp": np.array([1, 1, 7, 9])}
    facts = model.refit_users(events, np.array([0]))
    assert facts == {"users": 1, "rows": 3}
    after = model.rows.matrix().toarray()
    np.testing.assert_allclose(after[0], [0.5, 0.5, 0, 1])
    np.testing.assert_array_equal(after[1:], before[1:])
    np.testing.assert_array_equal(np.asarray(model.item_weights[...]), b)  # B is frozen
    np.testing.assert_allclose(model.user_scores(np.array([0]))[0], after[0] @ b, atol=1e-6)


def test_catalogue_above_the_bound_is_refused_before_allocation():
    with pytest.raises(ValueError, match="model.max_items = 100"):
        ease.build({"max_items": 100}, num_users=2, num_items=101, train={},
                   rngs=nnx.Rngs(0))
    assert item_item.DEFAULT_MAX_ITEMS >= 1682
