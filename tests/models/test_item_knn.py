"""ItemKNN on a tiny example worked by hand."""

import numpy as np
from flax import nnx

from recsys_jax.models import item_knn

# users × items: u0 {0, 1}, u1 {0, 1, 2}, u2 {1}.
X = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 0]], np.float64)


def test_shrunk_cosine_top_k_by_hand():
    # Co-occurrences c01 = 2, c02 = 1, c12 = 1; norms √2, √3, 1; shrink 1.
    s01, s02, s12 = 2 / (np.sqrt(6) + 1), 1 / (np.sqrt(2) + 1), 1 / (np.sqrt(3) + 1)
    full = item_knn.cosine_neighbours(X, k=2, shrink=1.0)
    np.testing.assert_allclose(full, [[0, s01, s02], [s01, 0, s12], [s02, s12, 0]])
    # k = 1: each row keeps its largest (s01 > s02; s10 > s12; s20 > s21).
    np.testing.assert_allclose(item_knn.cosine_neighbours(X, k=1, shrink=1.0),
                               [[0, s01, 0], [s01, 0, 0], [s02, 0, 0]])


def test_equal_similarities_keep_the_lower_item_id():
    x = np.array([[1, 1, 1, 0], [0, 1, 1, 1]], np.float64)  # item 0 is as close to 1 as to 2
    sims = item_knn.cosine_neighbours(x, k=1)
    assert sims[0, 1] > 0 and sims[0, 2] == 0  # s01 == s02: item 1 kept


def test_user_scores_sum_the_neighbours_of_the_users_items():
    columns = {"user": np.array([0, 0, 1, 1, 1, 2]), "item": np.array([0, 1, 0, 1, 2, 1])}
    model = item_knn.build({"k": 1, "shrink": 1.0}, num_users=3, num_items=3, train=columns,
                           rngs=nnx.Rngs(0))
    assert model.fit(columns, None)["k"] == 1
    s01, s02 = 2 / (np.sqrt(6) + 1), 1 / (np.sqrt(2) + 1)
    np.testing.assert_allclose(model.user_scores(np.arange(3)),
                               [[s01, s01, 0], [s01 + s02, s01, 0], [s01, 0, 0]], rtol=1e-6)
