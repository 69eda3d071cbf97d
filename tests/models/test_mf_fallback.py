"""The ``unseen_user`` / ``unseen_item`` fallbacks of the MF model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recsys_jax.models.mf import MatrixFactorization, build_mf


def _model(**kwargs) -> MatrixFactorization:
    model = MatrixFactorization(4, 3, 2, rngs=nnx.Rngs(0), global_mean=3.0, **kwargs)
    model.load_arrays({"user_embeddings": [[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [9.0, 9.0]],
                       "item_embeddings": [[1.0, 1.0], [0.5, 0.0], [7.0, 7.0]],
                       "user_bias": [0.3, 0.0, -0.6, 5.0], "item_bias": [0.1, -0.2, 4.0]})
    model.mark_seen(users=np.array([0, 1, 2]), items=np.array([0, 1]))  # User 3, item 2 unseen.
    return model


def test_mean_user_fallback_uses_the_average_seen_user():
    model = _model(unseen_user="mean")
    pred = np.asarray(model(jnp.array([3, 3, 0]), jnp.array([0, 2, 0])))
    mean_p, mean_bu = np.array([4.0 / 3, 2.0 / 3]), -0.1
    np.testing.assert_allclose(pred, [3.0 + mean_bu + 0.1 + mean_p.sum(),  # item 0 = [1, 1]
                                      3.0 + mean_bu,     # unseen item keeps the zero fallback
                                      3.0 + 0.3 + 0.1 + 1.0], rtol=1e-6)  # seen pair unchanged


def test_mean_item_fallback_and_zero_default():
    pred = np.asarray(_model(unseen_item="mean")(jnp.array([0]), jnp.array([2])))
    np.testing.assert_allclose(pred, [3.0 + 0.3 - 0.05 + 0.75], rtol=1e-6)
    pred = np.asarray(_model()(jnp.array([3, 0]), jnp.array([0, 2])))
    np.testing.assert_allclose(pred, [3.0 + 0.1, 3.0 + 0.3], rtol=1e-6)


def test_fallback_does_not_change_training_gradients():
    def loss(model, users, items):
        return jnp.sum(model(users, items) ** 2)

    users, items = jnp.array([0, 1, 2]), jnp.array([0, 1, 0])  # Training pairs: all seen.
    grads = [nnx.grad(loss)(_model(unseen_user=m, unseen_item=m), users, items)
             for m in ("zero", "mean")]
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_build_mf_reads_and_checks_the_fallback():
    train = {"user": np.array([0, 1]), "item": np.array([0, 1]), "rating": np.array([4.0, 2.0])}
    model = build_mf({"dim": 2, "unseen_user": "mean"}, num_users=3, num_items=3, train=train,
                     rngs=nnx.Rngs(0))
    assert (model.unseen_user, model.unseen_item) == ("mean", "zero")
    with pytest.raises(ValueError, match="unseen_item"):
        build_mf({"dim": 2, "unseen_item": "median"}, num_users=3, num_items=3, train=train,
                 rngs=nnx.Rngs(0))
