import numpy as np
import pytest
from flax import nnx

from recsys_jax.data.columns import check_id_range, rating_columns
from recsys_jax.evaluation.validators import RatingEvaluator, predict_ratings
from recsys_jax.models.mf import MatrixFactorization


def _model():
    model = MatrixFactorization(6, 7, 3, rngs=nnx.Rngs(0), global_mean=3.0)
    model.load_arrays({"user_bias": np.linspace(-3, 3, 6)})  # Push some out of scale.
    return model


def test_metrics_match_numpy_with_clipping_and_chunking():
    model = _model()
    rng = np.random.default_rng(0)
    cols = rating_columns(rng.integers(0, 6, 50), rng.integers(0, 7, 50),
                          rng.integers(1, 6, 50).astype(float), num_users=6, num_items=7)
    pred = predict_ratings(model, cols["user"], cols["item"], chunk_size=16)
    assert pred.shape == (50,) and (pred > 5).any() and (pred < 1).any()
    err = np.clip(pred, 1, 5) - cols["rating"]
    for chunk in (16, 50, 1000):
        metrics = RatingEvaluator(cols, (1, 5), prefix="test", chunk_size=chunk)(model)
        assert metrics["test_rmse"] == pytest.approx(np.sqrt(np.mean(err ** 2)), rel=1e-5)
        assert metrics["test_mae"] == pytest.approx(np.mean(np.abs(err)), rel=1e-5)


def test_ids_are_checked_before_any_gather():
    model = _model()
    with pytest.raises(ValueError, match="item id.*outside"):
        predict_ratings(model, np.array([0]), np.array([7]))
    cols = {"user": np.array([6]), "item": np.array([0]), "rating": np.array([3.0])}
    with pytest.raises(ValueError, match="user id.*outside"):
        RatingEvaluator(cols, (1, 5))(model)
    with pytest.raises(ValueError, match="integers"):
        check_id_range(np.array([0.5]), 3, "user")
    with pytest.raises(ValueError, match="NaN"):
        rating_columns([0], [0], [np.nan], num_users=1, num_items=1)
    with pytest.raises(ValueError, match="differ in length"):
        rating_columns([0, 0], [0], [1.0], num_users=1, num_items=1)
    assert predict_ratings(model, np.array([], int), np.array([], int)).shape == (0,)
