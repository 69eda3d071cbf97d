import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recsys_jax.models.mf import MatrixFactorization
from recsys_jax.tasks.rating import make_rating_loss
from recsys_jax.training.losses import weighted_mean


def _model():
    return MatrixFactorization(4, 5, 3, rngs=nnx.Rngs(0), global_mean=3.0)


def test_mse_ignores_zero_weight_rows():
    model = _model()
    batch = {"user": jnp.array([0, 1, 2]), "item": jnp.array([0, 1, 2]),
             "rating": jnp.array([3.0, 5.0, 1.0])}
    pred = np.asarray(model(batch["user"], batch["item"]))
    loss, aux = make_rating_loss("mse")(model, batch, jax.random.key(0))
    np.testing.assert_allclose(loss, np.mean((pred - [3.0, 5.0, 1.0]) ** 2), rtol=1e-6)
    padded = dict(batch, weight=jnp.array([1.0, 1.0, 0.0]))
    loss, _ = make_rating_loss("mse")(model, padded, jax.random.key(0))
    np.testing.assert_allclose(loss, np.mean((pred[:2] - [3.0, 5.0]) ** 2), rtol=1e-6)
    assert set(aux) == {"rating_loss"}


def test_row_l2_term():
    model = _model()
    batch = {"user": jnp.array([0, 1]), "item": jnp.array([2, 2]),
             "rating": jnp.array([3.0, 4.0])}
    plain, _ = make_rating_loss("mse")(model, batch, jax.random.key(0))
    reg, aux = make_rating_loss("mse", l2_reg=0.5)(model, batch, jax.random.key(0))
    expected_l2 = float(jnp.mean(model.row_l2(batch["user"], batch["item"])))
    np.testing.assert_allclose(aux["row_l2"], expected_l2, rtol=1e-6)
    np.testing.assert_allclose(reg, plain + 0.5 * expected_l2, rtol=1e-6)


def test_huber_and_unknown_names():
    model = _model()
    batch = {"user": jnp.array([0]), "item": jnp.array([0]), "rating": jnp.array([5.0])}
    loss, _ = make_rating_loss("huber")(model, batch, jax.random.key(0))
    err = abs(float(model(batch["user"], batch["item"])[0]) - 5.0)
    np.testing.assert_allclose(loss, err - 0.5, rtol=1e-5)  # Linear part: |e| > delta.
    with pytest.raises(ValueError, match="unknown rating loss"):
        make_rating_loss("bce")
    with pytest.raises(ValueError):
        make_rating_loss("mse", l2_reg=-1.0)


def test_weighted_mean():
    assert float(weighted_mean(jnp.array([1.0, 3.0]), jnp.array([1.0, 0.0]))) == 1.0
    assert float(weighted_mean(jnp.array([1.0]), jnp.array([0.0]))) == 0.0
