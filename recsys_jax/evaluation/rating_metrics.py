"""Rating-prediction metrics: RMSE and MAE on predictions clipped to the rating range.

With clipped prediction p̂ = min(max(p, r_min), r_max) and T the held-out ratings:
  RMSE = sqrt((1/|T|) Σ_{(u,i)∈T} (p̂_ui − r_ui)²),   MAE = (1/|T|) Σ_{(u,i)∈T} |p̂_ui − r_ui|.
These headline values are over ratings. Per user u (n_u held-out ratings) the suite also keeps
MSE_u, RMSE_u = sqrt(MSE_u) and MAE_u, from which the headline values follow exactly:
RMSE = sqrt(Σ_u n_u MSE_u / Σ_u n_u), MAE = Σ_u n_u MAE_u / Σ_u n_u. Paired significance tests
run on the per-user values.
"""

from __future__ import annotations

import numpy as np

from recsys_jax.evaluation.results import PerUserMetrics

USER_MSE, USER_RMSE, USER_MAE, NUM_RATINGS = "user_mse", "user_rmse", "user_mae", "num_ratings"
# Label of rating results in tables and file names (ratings have no ranking protocol).
RATING_PROTOCOL = "rating"


def clip_predictions(predictions: np.ndarray, rating_scale: tuple[float, float]) -> np.ndarray:
    """Predictions clipped to [r_min, r_max] (float64)."""
    low, high = rating_scale
    if not low <= high:
        raise ValueError(f"rating scale {rating_scale} has min > max")
    return np.clip(np.asarray(predictions, dtype=np.float64), low, high)


def rating_metrics(users: np.ndarray, predictions: np.ndarray, ratings: np.ndarray,
                   rating_scale: tuple[float, float]) -> PerUserMetrics:
    """Per-user and overall RMSE/MAE of rating predictions.

    Args:
      users: user id of each held-out rating.
      predictions: raw predictions (clipped here).
      ratings: true ratings.
      rating_scale: (r_min, r_max).

    Returns:
      ``PerUserMetrics`` over the users with at least one held-out rating, with per-user
      ``user_mse``, ``user_rmse``, ``user_mae`` and ``num_ratings``, and aggregates ``rmse`` and
      ``mae`` over all ratings.

    Raises:
      ValueError: on length mismatch or NaN predictions.
    """
    users = np.asarray(users, dtype=np.int64).ravel()
    pred = np.asarray(predictions, dtype=np.float64).ravel()
    true = np.asarray(ratings, dtype=np.float64).ravel()
    if not users.shape == pred.shape == true.shape:
        raise ValueError(f"{len(users)} users, {len(pred)} predictions, {len(true)} ratings")
    if np.isnan(pred).any():
        raise ValueError(f"{int(np.isnan(pred).sum())} NaN predictions")
    err = clip_predictions(pred, rating_scale) - true
    ids, inverse, counts = np.unique(users, return_inverse=True, return_counts=True)
    sse = np.bincount(inverse, weights=err ** 2, minlength=len(ids))
    sae = np.bincount(inverse, weights=np.abs(err), minlength=len(ids))
    mse = sse / counts
    values = {USER_MSE: mse, USER_RMSE: np.sqrt(mse), USER_MAE: sae / counts,
              NUM_RATINGS: counts.astype(np.float64)}
    total = max(len(err), 1)
    aggregates = {"rmse": float(np.sqrt(sse.sum() / total)), "mae": float(sae.sum() / total)}
    return PerUserMetrics(users=ids, values=values, aggregates=aggregates,
                          protocol=RATING_PROTOCOL)


def rmse_from_per_user(per_user_mse: np.ndarray, num_ratings: np.ndarray) -> float:
    """RMSE over ratings from per-user MSE_u and n_u: sqrt(Σ n_u MSE_u / Σ n_u)."""
    return float(np.sqrt(np.sum(per_user_mse * num_ratings) / np.sum(num_ratings)))


def mae_from_per_user(per_user_mae: np.ndarray, num_ratings: np.ndarray) -> float:
    """MAE over ratings from per-user MAE_u and n_u: Σ n_u MAE_u / Σ n_u."""
    return float(np.sum(per_user_mae * num_ratings) / np.sum(num_ratings))
