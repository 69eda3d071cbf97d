"""iALS: a half step against NumPy's dense solve, CG, the loss, fold-in, `implicit`."""

import numpy as np
import pytest
from flax import nnx

from recsys_jax.models import ials

NUM_USERS, NUM_ITEMS, DIM = 6, 7, 3


def _events(seed=0, density=0.4):
    mask = np.random.default_rng(seed).random((NUM_USERS, NUM_ITEMS)) < density
    mask[:, 0] |= ~mask.any(1)  # every user has an event
    users, items = np.nonzero(mask)
    return {"user": users.astype(np.int32), "item": items.astype(np.int32)}, mask


def _model(**settings):
    config = {"dim": DIM, "iterations": 2, "alpha": 3.0, "unobserved_weight": 0.5, "l2": 0.2,
              "reg_exponent": 1.0, "solver": "exact", **settings}
    return ials.build(config, num_users=NUM_USERS, num_items=NUM_ITEMS, train={},
                      rngs=nnx.Rngs(0))


def _numpy_user_step(q, mask, s):
    """Each user's normal equations written out densely and solved by NumPy (float64)."""
    q = np.asarray(q, np.float64)
    out = []
    for u in range(mask.shape[0]):
        c = np.where(mask[u], s.alpha, s.unobserved_weight)       # weight per item
        lam = s.l2 * (mask[u].sum() + s.unobserved_weight * mask.shape[1]) ** s.reg_exponent
        a = q.T @ (c[:, None] * q) + lam * np.eye(q.shape[1])
        b = q.T @ (c * mask[u])
        out.append(np.linalg.solve(a, b))
    return np.array(out)


def test_exact_user_step_equals_numpy_dense_solve():
    events, mask = _events()
    model = _model()
    expected = _numpy_user_step(model.item_factors[...], mask, model.settings)
    np.testing.assert_allclose(model.user_step(events), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dots", ["dense", "gather"])
def test_cg_with_dim_steps_converges_to_the_exact_solve(dots):
    events, mask = _events(1)
    model = _model(solver="cg", cg_steps=DIM, sampled_dots=dots)
    expected = _numpy_user_step(model.item_factors[...], mask, model.settings)
    np.testing.assert_allclose(model.user_step(events), expected, rtol=1e-3, atol=1e-4)


def test_loss_never_increases_over_iterations():
    events, _ = _events(2)
    model = _model(solver="cg", cg_steps=2, iterations=1)
    losses = [model.loss(events)]
    for _ in range(4):
        model.fit(events)
        losses.append(model.loss(events))
    assert all(b <= a * (1 + 1e-5) for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.9 * losses[0]


def test_fold_in_is_one_user_step_and_leaves_other_users():
    events, mask = _events(3)
    model = _model(solver="cg")
    model.fit(events)
    items_before = np.asarray(model.item_factors[...]).copy()
    users_before = np.asarray(model.user_factors[...]).copy()
    # Train + val: users 1 and 4 each gain one item they had not seen.
    new = [(u, int(np.flatnonzero(~mask[u])[0])) for u in (1, 4)]
    more = {"user": np.r_[events["user"], [u for u, _ in new]].astype(np.int32),
            "item": np.r_[events["item"], [i for _, i in new]].astype(np.int32)}
    expected = np.asarray(model.user_step(more))
    facts = model.refit_users(more, np.array([1, 4]))
    assert facts["users"] == 2
    after = np.asarray(model.user_factors[...])
    np.testing.assert_allclose(after[[1, 4]], expected[[1, 4]], rtol=1e-6)
    np.testing.assert_array_equal(np.delete(after, [1, 4], 0), np.delete(users_before, [1, 4], 0))
    np.testing.assert_array_equal(np.asarray(model.item_factors[...]), items_before)


def test_same_normal_equations_as_implicit():
    als = pytest.importorskip("implicit.cpu.als")
    import scipy.sparse as sp
    events, mask = _events(4)
    model = _model(alpha=4.0, unobserved_weight=1.0, reg_exponent=0.0, l2=0.3)
    q = np.asarray(model.item_factors[...], np.float64)
    cui = sp.csr_matrix(mask.astype(np.float64) * 4.0)  # implicit's confidences: alpha · r
    theirs = np.zeros((NUM_USERS, DIM))
    als.least_squares(cui, theirs, q, 0.3)
    np.testing.assert_allclose(model.user_step(events), theirs, rtol=1e-4, atol=1e-5)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="solver must be one of"):
        _model(solver="newton")
    with pytest.raises(ValueError, match="l2 must be > 0"):
        _model(l2=0.0)
