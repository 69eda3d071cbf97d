import jax
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
    model.load_arrays({"user_bias": np.arange(7) / 10, "item_bias": -np.arange(11) / 20})
    users = np.array([0, 3, 6, 6])
    items = np.array([1, 10, 0, 5])
    p = np.asarray(model.user_embedding[...])[users]
    q = np.asarray(model.item_embedding[...])[items]
    expected = 3.5 + users / 10 - items / 20 + (p * q).sum(-1)
    np.testing.assert_allclose(model(jnp.asarray(users), jnp.asarray(items)), expected,
                               rtol=1e-6)


def test_unseen_ids_fall_back_to_biases_and_global_mean():
    model = _model()
    # Large rows so any leak of an untrained embedding would show.
    model.load_arrays({"user_bias": np.full(7, 0.25), "item_bias": np.full(11, -0.5),
                       "user_embeddings": np.ones((7, 5)), "item_embeddings": np.ones((11, 5))})
    model.mark_seen(users=np.array([0, 1]), items=np.array([2]))
    pred = np.asarray(model(jnp.array([0, 5, 0, 5]), jnp.array([2, 2, 9, 9])))
    np.testing.assert_allclose(pred, [3.5 + 0.25 - 0.5 + 5.0,  # both seen
                                      3.5 - 0.5,                # unseen user
                                      3.5 + 0.25,               # unseen item
                                      3.5])                     # neither
    assert isinstance(model.seen, SeenMask)
    # The seen mask is state but not a trainable parameter.
    assert "seen" not in nnx.state(model, nnx.Param)
    assert "seen" in nnx.state(model)


def test_row_l2_sums_the_rows_used():
    model = _model()
    model.load_arrays({"user_bias": np.full(7, 2.0)})
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


def test_one_table_holds_user_rows_then_item_rows_drawn_as_two_tables():
    model = _model(init_std=0.1)
    rngs = nnx.Rngs(0)
    init = jax.nn.initializers.normal(stddev=0.1)
    users = init(rngs.params(), (7, 5), jnp.float32)
    items = init(rngs.params(), (11, 5), jnp.float32)
    table = np.asarray(model.embedding[...])
    assert table.shape == (18, 5) and model.bias[...].shape == (18,)
    np.testing.assert_array_equal(table[:7], users)
    np.testing.assert_array_equal(table[7:], items)
    np.testing.assert_array_equal(model.item_embedding, items)
    # Item i is row num_users + i: its prediction uses that row and that bias.
    model.load_arrays({"item_bias": np.arange(11) / 4})
    pred = model(jnp.array([2]), jnp.array([9]))
    np.testing.assert_allclose(pred, 3.5 + 9 / 4 + table[2] @ table[7 + 9], rtol=1e-6)


def test_load_arrays_round_trips_export_arrays_and_checks_names_and_shapes():
    source, target = _model(), _model(rngs=nnx.Rngs(5), global_mean=1.0)
    source.load_arrays({"user_bias": np.linspace(0, 1, 7)})
    source.mark_seen(np.array([1, 3]), np.array([0]))
    target.load_arrays(source.export_arrays())
    for name, value in source.export_arrays().items():
        np.testing.assert_array_equal(target.export_arrays()[name], value, err_msg=name)
    with pytest.raises(ValueError, match="unknown MF arrays"):
        target.load_arrays({"user_embedding": np.zeros((7, 5))})
    with pytest.raises(ValueError, match="item_bias has shape"):
        target.load_arrays({"item_bias": np.zeros(7)})
