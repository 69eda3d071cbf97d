import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recsys_jax.evaluation.comparison_table import BootstrapSettings
from recsys_jax.models.mf import MatrixFactorization
from recsys_jax.tasks.rating import RatingData
from recsys_jax.tasks.rating_baselines import compare_with_rating_baselines
from tests.tasks.planted import NUM_ITEMS, NUM_USERS, planted_ratings


def _model():
    model = MatrixFactorization(5, 6, 3, rngs=nnx.Rngs(0), init_std=1.0, global_mean=3.0)
    model.load_arrays({"user_bias": np.linspace(-1, 1, 5), "item_bias": np.linspace(1, -1, 6)})
    model.mark_seen(users=np.array([0, 1, 2, 3]), items=np.array([0, 1, 2, 3, 4]))
    return model


def test_ranking_embeddings_order_items_as_the_model_does():
    model = _model()
    users, items = model.ranking_embeddings()
    assert users.shape == (5, 4) and items.shape == (6, 4)
    all_users, all_items = np.meshgrid(np.arange(5), np.arange(6), indexing="ij")
    pred = np.asarray(model(jnp.asarray(all_users), jnp.asarray(all_items)))
    scores = users @ items.T
    # Equal up to a per-user constant (μ + b_u, or μ for an unseen user).
    offsets = pred - scores
    np.testing.assert_allclose(offsets, offsets[:, :1].repeat(6, axis=1), atol=1e-5)


def test_comparison_with_rating_baselines(tmp_path):
    parts = {name: planted_ratings(n, seed) for name, n, seed in
             (("train", 800, 0), ("val", 100, 1), ("test", 200, 2))}
    data = RatingData.from_arrays({k: (v["user"], v["item"], v["rating"])
                                   for k, v in parts.items()},
                                  num_users=NUM_USERS, num_items=NUM_ITEMS, rating_scale=(1, 5))
    perfect = parts["test"]["rating"]
    markdown = compare_with_rating_baselines(data, perfect, tmp_path, model_name="oracle",
                                             bootstrap=BootstrapSettings(n_resamples=50))
    assert "| rmse | oracle | 0.0000" in markdown
    for kind in ("global_mean", "user_mean", "item_mean", "user_item_bias"):
        assert f"| {kind} |" in markdown
    assert any(p.suffix == ".csv" for p in tmp_path.iterdir())


def test_baselines_are_fitted_on_the_parts_the_model_saw(tmp_path):
    # Train ratings all 1, val all 5: the global mean is 1 on train, 3 on train + val, so a
    # test rating of 3 is off by 2 or by 0 (known answers, by hand).
    def part(n, rating, offset):
        users = np.arange(n) % NUM_USERS
        return users, (users + offset) % NUM_ITEMS, np.full(n, rating, np.float32)
    data = RatingData.from_arrays({"train": part(50, 1.0, 0), "val": part(50, 5.0, 1),
                                   "test": part(10, 3.0, 2)},
                                  num_users=NUM_USERS, num_items=NUM_ITEMS, rating_scale=(1, 5))
    settings = BootstrapSettings(n_resamples=20)
    predictions = np.full(10, 3.0, np.float32)
    train_only = compare_with_rating_baselines(data, predictions, None, model_name="m",
                                               bootstrap=settings)
    folded = compare_with_rating_baselines(data, predictions, None, model_name="m",
                                           seen_parts=("train", "val"), bootstrap=settings)
    assert "| rmse | global_mean | 2.0000" in train_only and "fitted on train)" in train_only
    assert "| rmse | global_mean | 0.0000" in folded and "fitted on train + val)" in folded
    with pytest.raises(ValueError, match="seen_parts"):
        compare_with_rating_baselines(data, predictions, None, model_name="m",
                                      seen_parts=("val",))
