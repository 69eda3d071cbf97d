import jax.numpy as jnp
import numpy as np
import optax
import pytest

from recsys_jax.training.optimizers import make_optimizer, make_schedule, scale_by_adam

PARAMS = {"table": jnp.array([[1.0, -2.0]]), "mean": jnp.array(3.0)}
ZERO_GRADS = {"table": jnp.zeros((1, 2)), "mean": jnp.array(0.0)}


def _first_update(config):
    tx, _ = make_optimizer(config, steps_per_epoch=10, num_epochs=5)
    updates, _ = tx.update(ZERO_GRADS, tx.init(PARAMS), PARAMS)
    return updates


def test_adam_weight_decay_is_l2_added_to_the_gradient():
    # With a zero loss gradient, Adam normalises the decay term wd*θ: the first step moves
    # each decayed coordinate by ≈ lr against its sign, whatever the size of wd.
    updates = _first_update({"name": "adam", "lr": 1e-3, "weight_decay": 1e-5})
    np.testing.assert_allclose(updates["table"], [[-1e-3, 1e-3]], rtol=1e-2)
    assert float(updates["mean"]) == 0.0  # Scalars are not decayed.


def test_adamw_decay_is_decoupled():
    updates = _first_update({"name": "adamw", "lr": 1e-3, "weight_decay": 1e-2})
    np.testing.assert_allclose(updates["table"], -1e-3 * 1e-2 * PARAMS["table"], rtol=1e-5)
    assert float(updates["mean"]) == 0.0


@pytest.mark.parametrize("name", ["adam", "adamw", "adagrad", "sgd"])
def test_every_optimizer_descends(name):
    tx, _ = make_optimizer({"name": name, "lr": 0.1, "weight_decay": 0.0, "momentum": 0.9},
                           steps_per_epoch=1, num_epochs=1)
    grads = {"table": jnp.ones((1, 2)), "mean": jnp.array(1.0)}
    updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
    assert all(float(u) < 0 for u in np.concatenate(
        [np.ravel(updates["table"]), np.ravel(updates["mean"])]))


def test_scale_by_adam_matches_optax_and_keeps_its_state():
    # One division per coordinate instead of optax's three: the same direction up to rounding,
    # over steps whose bias corrections differ (t = 1..40) and gradients of mixed size and sign.
    rng = np.random.default_rng(0)
    params = {"table": jnp.asarray(rng.normal(size=(6, 4)), jnp.float32),
              "mean": jnp.array(0.5)}
    ours, reference = scale_by_adam(eps=1e-8), optax.scale_by_adam(eps=1e-8)
    state, ref_state = ours.init(params), reference.init(params)
    assert type(state) is type(ref_state)  # Checkpoints keep optax's structure.
    for _ in range(40):
        grads = {"table": jnp.asarray(rng.normal(size=(6, 4)) * 10.0 ** rng.integers(-6, 1),
                                      jnp.float32),
                 "mean": jnp.asarray(rng.normal(), jnp.float32)}
        updates, state = ours.update(grads, state, params)
        expected, ref_state = reference.update(grads, ref_state, params)
        for name in params:
            np.testing.assert_allclose(updates[name], expected[name], rtol=2e-6, atol=0)
    assert int(state.count) == int(ref_state.count) == 40
    np.testing.assert_array_equal(state.nu["table"], ref_state.nu["table"])


def test_schedules():
    base = {"lr": 1.0, "min_lr_ratio": 0.1}
    constant = make_schedule({**base, "schedule": "constant"}, steps_per_epoch=10, num_epochs=5)
    assert float(constant(0)) == float(constant(49)) == 1.0
    cosine = make_schedule({**base, "schedule": "cosine"}, steps_per_epoch=10, num_epochs=5)
    assert float(cosine(0)) == 1.0 and float(cosine(50)) == pytest.approx(0.1)
    warm = make_schedule({**base, "schedule": "warmup_cosine", "warmup_epochs": 1},
                         steps_per_epoch=10, num_epochs=5)
    assert float(warm(0)) == 0.0 and float(warm(10)) == pytest.approx(1.0)
    assert float(warm(50)) == pytest.approx(0.1)
    step = make_schedule({**base, "schedule": "step", "decay_rate": 0.5, "decay_epochs": 2},
                         steps_per_epoch=10, num_epochs=5)
    assert [float(step(s)) for s in (0, 19, 20, 40)] == [1.0, 1.0, 0.5, 0.25]


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer({"name": "lamb", "lr": 1.0}, steps_per_epoch=1, num_epochs=1)
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        make_schedule({"lr": 1.0, "schedule": "linear"}, steps_per_epoch=1, num_epochs=1)
    tx, schedule = make_optimizer({"name": "adam", "lr": 1.0}, steps_per_epoch=1,
                                  num_epochs=1)
    assert isinstance(tx, optax.GradientTransformation) and float(schedule(0)) == 1.0
