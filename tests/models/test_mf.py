import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recsys_jax.models import registry
from recsys_jax.models.mf import MatrixFactorization, SeenMask, build_mf


def _model(**kwargs) -> MatrixFactorization:
    args = dict(num_users=7, num_items=11, dim=5, rngs=nnx.Rngs(0), global_mean=3.5)
    args.update(kwargs)
    return MatrixFactorization(**args)


def test_shapes_and_initial_values():
    model = _model()
    assert model.user_embedding[...].shape == (7, 5)
    assert model.item_embedding[...].shape == (11, 5)
    assert model.user_bias[...].shape == (7,)
    assert model.item_bias[...].shape == (11,)
    assert model.global_mean[...].shape == ()
    assert float(model.global_mean[...]) == 3.5
    np.testing.assert_array_equal(model.user_bias[...], 0)
    np.testing.assert_array_equal(model.item_bias[...], 0)
    users = jnp.array([[0, 1, 2], [3, 4, 6]])
    assert model(users, users).shape == (2, 3)


def test_init_std():
    model = MatrixFactorization(500, 400, 64, rngs=nnx.Rngs(1), init_std=0.01)
    table = np.asarray(model.user_embedding[...])
    assert abs(table.std() - 0.01) < 5e-4
    assert abs(table.mean()) < 5e-4
    assert not np.allclose(model.user_embedding[...][:400], model.item_embedding[...])


def test_prediction_is_mean_plus_biases_plus_dot():
    model = _model()
    model.user_bias[...] = jnp.arange(7, dtype=jnp.float32) / 10
    model.item_bias[...] = -jnp.arange(11, dtype=jnp.float32) / 20
    users = np.array([0, 3, 6, 6])
    items = np.array([1, 10, 0, 5])
    p = np.asarray(model.user_embedding[...])[users]
    q = np.asarray(model.item_embedding[...])[items]
    expected = 3.5 + users / 10 - items / 20 + (p * q).sum(-1)
    np.testing.assert_allclose(model(jnp.asarray(users), jnp.asarray(items)), expected,
                               rtol=1e-6)


def test_unseen_ids_fall_back_to_biases_and_global_mean():
    model = _model()
    model.user_bias[...] = jnp.full((7,), 0.25)
    model.item_bias[...] = jnp.full((11,), -0.5)
    # Large rows so any leak of an untrained embedding would show.
    model.user_embedding[...] = jnp.ones((7, 5))
    model.item_embedding[...] = jnp.ones((11, 5))
    model.mark_seen(users=np.array([0, 1]), items=np.array([2]))
    pred = np.asarray(model(jnp.array([0, 5, 0, 5]), jnp.array([2, 2, 9, 9])))
    np.testing.assert_allclose(pred, [3.5 + 0.25 - 0.5 + 5.0,  # both seen
                                      3.5 - 0.5,                # unseen user
                                      3.5 + 0.25,               # unseen item
                                      3.5])                     # neither
    assert isinstance(model.user_seen, SeenMask)
    # Seen masks are state but not trainable parameters.
    assert "user_seen" not in nnx.state(model, nnx.Param)
    assert "user_seen" in nnx.state(model)


def test_row_l2_sums_the_rows_used():
    model = _model()
    model.user_bias[...] = jnp.full((7,), 2.0)
    users, items = jnp.array([1, 2]), jnp.array([3, 3])
    p = np.asarray(model.user_embedding[...])[[1, 2]]
    q = np.asarray(model.item_embedding[...])[[3, 3]]
    expected = (p ** 2).sum(-1) + (q ** 2).sum(-1) + 4.0
    np.testing.assert_allclose(model.row_l2(users, items), expected, rtol=1e-6)


def test_export_arrays():
    arrays = _model().export_arrays()
    assert arrays["user_embeddings"].shape == (7, 5)
    assert arrays["item_bias"].shape == (11,)
    assert arrays["global_mean"].shape == ()
    assert arrays["item_seen"].dtype == np.bool_


def test_build_mf_uses_train_mean_and_seen_ids():
    train = {"user": np.array([0, 0, 2], np.int32), "item": np.array([1, 3, 3], np.int32),
             "rating": np.array([1.0, 2.0, 4.5], np.float32)}
    model = build_mf({"dim": 4, "init_std": 0.01}, num_users=4, num_items=5, train=train,
                     rngs=nnx.Rngs(0))
    assert float(model.global_mean[...]) == pytest.approx(2.5)
    np.testing.assert_array_equal(model.user_seen[...], [True, False, True, False])
    np.testing.assert_array_equal(model.item_seen[...], [False, True, False, True, False])


def test_registry_builds_by_name_and_rejects_unknown():
    train = {"user": np.array([0]), "item": np.array([0]), "rating": np.array([3.0])}
    model = registry.build_model({"name": "mf", "dim": 3}, num_users=2, num_items=2,
                                 train=train, rngs=nnx.Rngs(0))
    assert isinstance(model, MatrixFactorization)
    with pytest.raises(ValueError, match="registered models.*mf"):
        registry.build_model({"name": "nope", "dim": 3}, num_users=2, num_items=2,
                             train=train, rngs=nnx.Rngs(0))


def test_rejects_empty_sizes():
    with pytest.raises(ValueError):
        MatrixFactorization(0, 3, 2, rngs=nnx.Rngs(0))
