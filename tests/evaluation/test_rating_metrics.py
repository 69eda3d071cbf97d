"""Rating metrics and rating baselines, on hand-worked examples."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg

from recsys_jax.evaluation import baselines, rating_metrics


def test_rmse_and_mae_clip_predictions_to_the_scale():
    users = np.array([0, 0, 1])
    pred = np.array([6.0, 3.0, 0.0])    # clipped to 5, 3, 1
    true = np.array([4.0, 3.0, 2.0])    # errors 1, 0, -1
    r = rating_metrics.rating_metrics(users, pred, true, (1, 5))
    assert r.aggregates["rmse"] == pytest.approx(np.sqrt(2 / 3))
    assert r.aggregates["mae"] == pytest.approx(2 / 3)
    assert r.users.tolist() == [0, 1]
    np.testing.assert_allclose(r.values[rating_metrics.USER_MSE], [0.5, 1.0])
    np.testing.assert_allclose(r.values[rating_metrics.USER_MAE], [0.5, 1.0])
    np.testing.assert_allclose(r.values[rating_metrics.NUM_RATINGS], [2, 1])
    assert rating_metrics.rmse_from_per_user(r.values[rating_metrics.USER_MSE],
                                     r.values[rating_metrics.NUM_RATINGS]) == pytest.approx(
        r.aggregates["rmse"])
    assert rating_metrics.mae_from_per_user(r.values[rating_metrics.USER_MAE],
                                    r.values[rating_metrics.NUM_RATINGS]) == pytest.approx(
        r.aggregates["mae"])
    with pytest.raises(ValueError, match="NaN"):
        rating_metrics.rating_metrics(users, np.array([1.0, np.nan, 2.0]), true, (1, 5))


# Users 0, 1 (2 unseen); items 0, 1 (2 unseen). μ = (5 + 3 + 4) / 3 = 4.
TRAIN = (np.array([0, 0, 1]), np.array([0, 1, 0]), np.array([5.0, 3.0, 4.0]))


def test_mean_baselines_by_hand():
    g = baselines.fit_rating_baseline("global_mean", *TRAIN, 3, 3)
    assert g.predict([0, 2], [1, 2]).tolist() == [4.0, 4.0]
    u = baselines.fit_rating_baseline("user_mean", *TRAIN, 3, 3)
    assert u.predict([0, 1, 2], [2, 2, 0]).tolist() == [4.0, 4.0, 4.0]
    i = baselines.fit_rating_baseline("item_mean", *TRAIN, 3, 3)
    assert i.predict([2, 2, 2], [0, 1, 2]).tolist() == [4.5, 3.0, 4.0]


def test_one_bias_sweep_is_koren_damped_estimate():
    b = baselines.fit_rating_baseline("user_item_bias", *TRAIN, 3, 3, reg_user=10,
                                      reg_item=25, iterations=1)
    # b_i = Σ(r − μ)/(25 + n_i): item 0 → (1 + 0)/27, item 1 → −1/26.
    np.testing.assert_allclose(b.item_bias, [1 / 27, -1 / 26, 0])
    # b_u = Σ(r − μ − b_i)/(10 + n_u).
    bu0 = ((5 - 4 - 1 / 27) + (3 - 4 + 1 / 26)) / 12
    bu1 = (4 - 4 - 1 / 27) / 11
    np.testing.assert_allclose(b.user_bias, [bu0, bu1, 0])
    assert b.predict([0], [1])[0] == pytest.approx(4 + bu0 - 1 / 26)


def test_bias_sweeps_converge_to_regularised_least_squares():
    rng = np.random.default_rng(0)
    n_users, n_items, n = 30, 20, 300
    users, items = rng.integers(0, n_users, n), rng.integers(0, n_items, n)
    r = rng.integers(1, 6, n).astype(float)
    reg_u, reg_i = 3.0, 2.0
    fit = baselines.fit_rating_baseline("user_item_bias", users, items, r, n_users, n_items,
                                        reg_user=reg_u, reg_item=reg_i, iterations=500)
    # Independent solve: min ||A b − (r − μ)||² + λ_u||b_u||² + λ_i||b_i||² as a stacked
    # least-squares problem with sqrt(λ) rows.
    a = sp.hstack([sp.csr_array((np.ones(n), (np.arange(n), users)), shape=(n, n_users)),
                   sp.csr_array((np.ones(n), (np.arange(n), items)), shape=(n, n_items))])
    reg = sp.diags(np.r_[np.full(n_users, np.sqrt(reg_u)), np.full(n_items, np.sqrt(reg_i))])
    sol = scipy.sparse.linalg.lsqr(sp.vstack([a, reg]),
                                   np.r_[r - r.mean(), np.zeros(n_users + n_items)],
                                   atol=1e-12, btol=1e-12)[0]
    np.testing.assert_allclose(fit.user_bias, sol[:n_users], atol=1e-6)
    np.testing.assert_allclose(fit.item_bias, sol[n_users:], atol=1e-6)


def test_baseline_errors():
    with pytest.raises(ValueError, match="unknown rating baseline"):
        baselines.fit_rating_baseline("median", *TRAIN, 3, 3)
    g = baselines.fit_rating_baseline("global_mean", *TRAIN, 3, 3)
    with pytest.raises(ValueError, match="user ids"):
        g.predict([3], [0])
