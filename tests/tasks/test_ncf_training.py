"""Implicit models on a planted-preference problem, trained by the shared loop."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from recsys_jax.evaluation.evaluate import target_from_arrays
from recsys_jax.evaluation.validators import RankingValidator
from recsys_jax.models.registry import build_model
from recsys_jax.tasks.implicit import interaction_columns
from recsys_jax.tasks.implicit_losses import make_bce_loss
from recsys_jax.tasks.negatives import build_positive_set
from recsys_jax.training.loop import FitConfig, fit, read_metrics

NUM_USERS, NUM_ITEMS, GROUPS, PLANTED, SEEN = 40, 60, 4, 10, 6


def planted_problem(seed: int = 0):
    """Users in 4 groups; each group likes its own 10 items. Training holds 6 of them per
    user; the other 4 are held out and should be ranked first among the unseen items."""
    rng = np.random.default_rng(seed)
    train, held_out = [], []
    for u in range(NUM_USERS):
        liked = (u % GROUPS) * PLANTED + rng.permutation(PLANTED)
        train += [(u, i) for i in liked[:SEEN]]
        held_out += [(u, i) for i in liked[SEEN:]]
    train, held_out = np.array(train), np.array(held_out)
    empty = (np.zeros(0, int), np.zeros(0, int))
    target = target_from_arrays((train[:, 0], train[:, 1]), (held_out[:, 0], held_out[:, 1]),
                                empty, NUM_USERS, NUM_ITEMS, part="val")
    return interaction_columns(train[:, 0], train[:, 1], num_users=NUM_USERS,
                               num_items=NUM_ITEMS), target


MODELS = {
    "gmf": {"name": "gmf", "dim": 8, "init_std": 0.1},
    "mlp": {"name": "mlp", "mlp_layers": (16, 8), "init_std": 0.1},
    "neumf": {"name": "neumf", "dim": 8, "mlp_layers": (16, 8), "init_std": 0.1},
    "dot_mf": {"name": "dot_mf", "dim": 8, "init_std": 0.1},
}


@pytest.mark.parametrize("name", list(MODELS))
def test_each_model_ranks_the_planted_items_first(tmp_path, name):
    train, target = planted_problem()
    model = build_model(MODELS[name], num_users=NUM_USERS, num_items=NUM_ITEMS, train=train,
                        rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(0.03), wrt=nnx.Param)
    loss_fn = make_bce_loss(build_positive_set(train["user"], train["item"], NUM_USERS,
                                               NUM_ITEMS), num_negatives=4)
    validator = RankingValidator(target, ks=(4,), metrics=("precision", "ndcg"))
    before = validator(model)["val_precision@4"]
    result = fit(model, optimizer, loss_fn, train, validator,
                 FitConfig(batch_size=32, num_epochs=25, seed=0, monitor="val_precision@4",
                           mode="max"), workdir=tmp_path)
    after = validator(model)
    assert before < 0.5
    assert after["val_precision@4"] >= 0.9, (name, result.history[-1])
    assert after["val_precision@4"] == pytest.approx(result.best_value)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_resumed_training_draws_the_same_negatives(tmp_path):
    """Negatives come from the loop's per-step keys, so a resumed run repeats a straight one."""
    train, target = planted_problem()

    def run(workdir, epochs):
        model = build_model(MODELS["gmf"], num_users=NUM_USERS, num_items=NUM_ITEMS,
                            train=train, rngs=nnx.Rngs(0))
        optimizer = nnx.Optimizer(model, optax.adam(0.03), wrt=nnx.Param)
        loss_fn = make_bce_loss(build_positive_set(train["user"], train["item"], NUM_USERS,
                                                   NUM_ITEMS))
        fit(model, optimizer, loss_fn, train, RankingValidator(target, ks=(4,)),
            FitConfig(batch_size=32, num_epochs=epochs, seed=3, monitor="val_ndcg@4",
                      mode="max", patience=0), workdir=workdir)
        return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]

    straight = run(tmp_path / "straight", 4)
    run(tmp_path / "resumed", 2)
    resumed = run(tmp_path / "resumed", 4)
    histories = [[r["train_loss"] for r in read_metrics(tmp_path / name)]
                 for name in ("straight", "resumed")]
    np.testing.assert_allclose(histories[0], histories[1], rtol=1e-5)
    for a, b in zip(straight, resumed, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
