"""TwoTower: unit-norm towers, positive temperature, history pooling, save/load, registry."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recsys_jax.data.features import Standardizer, TwoTowerFeatures
from recsys_jax.models import two_tower
from recsys_jax.models.registry import build_model, load_model, save_model
from recsys_jax.models.two_tower import TwoTower


def _features(num_users=7, num_items=9, history_len=3, seed=0):
    rng = np.random.default_rng(seed)
    user, item = rng.normal(size=(num_users, 5)), rng.normal(size=(num_items, 4))
    hist = rng.integers(0, num_items, size=(num_users, history_len)).astype(np.int32)
    mask = (rng.random((num_users, history_len)) < 0.7).astype(np.float32)
    return TwoTowerFeatures(user=user.astype(np.float32), item=item.astype(np.float32),
                            user_names=tuple("abcde"), item_names=tuple("wxyz"),
                            user_scaler=Standardizer.fit(user), item_scaler=Standardizer.fit(item),
                            history_ids=hist, history_mask=mask)


@pytest.mark.parametrize("config", [dict(), dict(history=True), dict(user_id_dim=3,
                                                                     item_id_dim=2)])
def test_outputs_are_unit_norm(config):
    f = _features()
    model = build_model({"name": "two_tower", "hidden_dim": 16, "dim": 8, **config},
                        num_users=7, num_items=9, train={}, rngs=nnx.Rngs(0), features=f)
    arrays = model.export_arrays(chunk_size=4)  # Chunks that do not divide the counts.
    assert arrays["user_embeddings"].shape == (7, 8)
    assert arrays["item_embeddings"].shape == (9, 8)
    for a in arrays.values():
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(arrays["item_embeddings"][3],
                               np.asarray(model.item_embeddings(jnp.array([3])))[0], rtol=1e-5)
    scores = model(jnp.array([0, 1]), jnp.array([2, 3]))
    np.testing.assert_allclose(scores, np.sum(arrays["user_embeddings"][[0, 1]]
                                              * arrays["item_embeddings"][[2, 3]], 1),
                               rtol=1e-4, atol=1e-6)


def test_temperature_starts_at_init_and_stays_positive():
    f = _features()
    model = TwoTower(f.user, f.item, rngs=nnx.Rngs(0), hidden_dim=8, dim=4)
    assert float(model.temperature) == pytest.approx(0.07, rel=1e-6)
    model.log_temperature[...] = jnp.float32(-50.0)
    assert float(model.temperature) == pytest.approx(two_tower.MIN_TEMPERATURE, rel=1e-5)
    model.log_temperature[...] = jnp.float32(50.0)
    assert float(model.temperature) == pytest.approx(two_tower.MAX_TEMPERATURE, rel=1e-5)


def test_history_pooling_is_masked_mean_of_item_embeddings():
    f = _features()
    model = TwoTower(f.user, f.item, rngs=nnx.Rngs(0), hidden_dim=8, dim=4,
                     history_ids=f.history_ids, history_mask=f.history_mask)
    items = np.asarray(model.item_embeddings(jnp.arange(9)))
    pooled = np.asarray(model.pooled_history(jnp.asarray(f.history_ids),
                                             jnp.asarray(f.history_mask)))
    for u in range(7):
        m = f.history_mask[u] > 0
        want = items[f.history_ids[u][m]].mean(0) if m.any() else np.zeros(4)
        np.testing.assert_allclose(pooled[u], want, rtol=1e-5, atol=1e-6)
    # Precomputed item table (serving) gives the same user vectors.
    np.testing.assert_allclose(model.user_embeddings(jnp.arange(7), jnp.asarray(items)),
                               model.user_embeddings(jnp.arange(7)), rtol=1e-5, atol=1e-6)


def test_history_position_weights_are_a_masked_softmax():
    f = _features()
    model = TwoTower(f.user, f.item, rngs=nnx.Rngs(0), hidden_dim=8, dim=4,
                     history_ids=f.history_ids, history_mask=f.history_mask,
                     history_positions=True)
    items = np.asarray(model.item_embeddings(jnp.arange(9)))
    ids_, mask = jnp.asarray(f.history_ids), jnp.asarray(f.history_mask)
    uniform = TwoTower(f.user, f.item, rngs=nnx.Rngs(0), hidden_dim=8, dim=4,
                       history_ids=f.history_ids, history_mask=f.history_mask)
    # Zero logits: the plain masked mean.
    np.testing.assert_allclose(model.pooled_history(ids_, mask),
                               uniform.pooled_history(ids_, mask), rtol=1e-5, atol=1e-6)
    params = np.array([0.2, 0.0, -0.1], np.float32)
    model.history_position_logits[...] = jnp.asarray(params)
    pooled = np.asarray(model.pooled_history(ids_, mask))
    for u in range(7):
        w = np.exp(two_tower.HISTORY_POSITION_SCALE * params) * f.history_mask[u]
        want = (w[:, None] * items[f.history_ids[u]]).sum(0) / w.sum() if w.sum() else 0.0
        np.testing.assert_allclose(pooled[u], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("history_positions", [False, True])
def test_save_load_round_trip(tmp_path, history_positions):
    f = _features()
    model = TwoTower(f.user, f.item, rngs=nnx.Rngs(3), hidden_dim=8, dim=4,
                     history_ids=f.history_ids, history_mask=f.history_mask, item_id_dim=2,
                     history_positions=history_positions)
    if history_positions:
        model.history_position_logits[...] = jnp.array([1.0, -2.0, 0.5])
    config = {"name": "two_tower", "hidden_dim": 8, "dim": 4, "item_id_dim": 2,
              "history": True, "history_positions": history_positions}
    save_model(model, tmp_path, model_config=config, num_users=7, num_items=9)
    loaded = load_model(tmp_path, features=f)
    for name, array in model.export_arrays().items():
        np.testing.assert_allclose(loaded.export_arrays()[name], array, rtol=1e-6)
    # The stored inputs travel with the model: other feature values of the same shapes are
    # replaced by the saved ones.
    shifted = dataclasses.replace(f, user=f.user + 1.0)
    again = load_model(tmp_path, features=shifted)
    np.testing.assert_allclose(again.export_arrays()["user_embeddings"],
                               model.export_arrays()["user_embeddings"], rtol=1e-6)


def test_builder_checks_feature_sizes():
    with pytest.raises(ValueError, match="features cover"):
        build_model({"name": "two_tower"}, num_users=8, num_items=9, train={},
                    rngs=nnx.Rngs(0), features=_features())
    with pytest.raises(ValueError, match="needs features"):
        build_model({"name": "two_tower"}, num_users=7, num_items=9, train={},
                    rngs=nnx.Rngs(0))
