"""Fold-in (tasks.fold_in): only the user side of users with validation events moves, the
"train" path reproduces the scores without fold-in, and on a planted problem it helps."""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from recsys_jax.evaluation.runs import load_run
from recsys_jax.evaluation.validators import RatingEvaluator
from recsys_jax.models.contract import FoldIn
from recsys_jax.models.registry import build_model
from recsys_jax.tasks.config_checks import ConfigError, check_config
from recsys_jax.tasks.fold_in import fold_in, fold_in_rows, update_mask
from recsys_jax.tasks.implicit import ImplicitTask, load_implicit_data
from recsys_jax.tasks.implicit_losses import make_bce_loss
from recsys_jax.tasks.negatives import build_positive_set
from recsys_jax.tasks.rating import RatingData, RatingTask, load_rating_data, make_rating_loss
from recsys_jax.tasks.runner import fit_model, train_and_evaluate
from tests.tasks.planted import NUM_ITEMS, NUM_USERS, planted_ratings

REPO = Path(__file__).resolve().parents[2]
OPTIMIZER = {"name": "adam", "lr": 0.05, "weight_decay": 1e-4, "schedule": "constant"}


def tiny_config(name: str, **overrides) -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    if "analysis" in config:
        config.analysis.enabled = False
    for key, value in overrides.items():
        block, field = key.split(".")
        config[block][field] = value
    return config


def params_by_path(model) -> dict[str, np.ndarray]:
    state = nnx.as_pure(nnx.state(model, nnx.Param))
    return {jax.tree_util.keystr(path, simple=True, separator="/"): np.array(value)
            for path, value in jax.tree_util.tree_leaves_with_path(state)}


def split_rows(seed: int = 0):
    """Train rows for every user; validation rows for users 0..9 only."""
    train, val = planted_ratings(600, seed), planted_ratings(200, seed + 1)
    keep = val["user"] < 10
    return train, {k: v[keep] for k, v in val.items()}


@pytest.mark.parametrize("name, tables", [
    *((name, "dense") for name in ("mf", "gmf", "mlp", "neumf", "dot_mf")),
    ("mf", "lazy_adam"), ("neumf", "rowwise_adagrad"), ("dot_mf", "lazy_adam")])
def test_fold_in_moves_only_the_user_rows_of_users_with_val_events(name, tables):
    train, val = split_rows()
    config = {"name": name, "dim": 4, "mlp_layers": (8, 4), "init_std": 0.1}
    model = build_model(config, num_users=NUM_USERS, num_items=NUM_ITEMS, train=train,
                        rngs=nnx.Rngs(params=0))
    assert isinstance(model, FoldIn)
    if name == "mf":
        loss = make_rating_loss("mse")
    else:
        loss = make_bce_loss(build_positive_set(
            np.concatenate([train["user"], val["user"]]),
            np.concatenate([train["item"], val["item"]]), NUM_USERS, NUM_ITEMS), 2)
        train, val = ({k: p[k] for k in ("user", "item")} for p in (train, val))
    columns, users = fold_in_rows(train, val)
    np.testing.assert_array_equal(users, np.unique(val["user"]))
    assert len(columns["user"]) == np.isin(train["user"], users).sum() + len(val["user"])
    before = params_by_path(model)
    user_side = model.user_side_rows(users)

    facts = fold_in(model, loss, columns, users, optimizer={**OPTIMIZER, "tables": tables},
                    batch_size=32, epochs=2, seed=0)
    after = params_by_path(model)
    assert facts["users"] == len(users) and facts["rows"] == len(columns["user"])
    assert set(user_side) < set(before)
    for path, old in before.items():
        if path not in user_side:  # Item side, layers, μ: bit-identical.
            np.testing.assert_array_equal(after[path], old, err_msg=path)
            continue
        rows = user_side[path]  # Users without validation events: bit-identical.
        np.testing.assert_array_equal(after[path][~rows], old[~rows], err_msg=path)
        moved = np.abs(after[path][rows] - old[rows]).reshape(rows.sum(), -1).max(axis=1)
        assert (moved > 0).all(), path  # Every row of a user with val events changed.


def test_mf_fold_in_starts_unseen_users_from_their_fallback_prediction():
    train, val = split_rows()
    keep = train["user"] != 3  # User 3 has val events only.
    train = {k: v[keep] for k, v in train.items()}
    for fallback in ("zero", "mean"):
        model = build_model({"name": "mf", "dim": 4, "init_std": 0.1,
                             "unseen_user": fallback}, num_users=NUM_USERS,
                            num_items=NUM_ITEMS, train=train, rngs=nnx.Rngs(params=0))
        items = jnp.arange(NUM_ITEMS)
        served = np.asarray(model(jnp.full_like(items, 3), items))
        assert not model.seen_masks()[0][3]
        model.begin_fold_in(np.array([3, 4]))
        assert model.seen_masks()[0][3]
        np.testing.assert_allclose(model(jnp.full_like(items, 3), items), served, atol=1e-6)


def test_a_mask_naming_no_parameter_is_refused():
    model = build_model({"name": "gmf", "dim": 4}, num_users=5, num_items=6, train={},
                        rngs=nnx.Rngs(params=0))
    with pytest.raises(ValueError, match="not parameters of the model"):
        update_mask(model, {"user_embedding": np.ones(5, bool)})
    with pytest.raises(ValueError, match="shape"):
        update_mask(model, {"tower/user_embedding": np.ones(4, bool)})


def test_fold_in_improves_a_planted_problem_where_val_carries_the_information():
    """Users 15.. have 2 training ratings and 30 validation ratings: the item side is learnt
    from users 0..14, and only fold-in lets the weak users' vectors use their val ratings."""
    train, val, test = planted_ratings(3000, 0), planted_ratings(900, 1), planted_ratings(600, 2)
    keep = train["user"] < 15
    for u in range(15, NUM_USERS):
        keep[np.flatnonzero(train["user"] == u)[:2]] = True
    train = {k: v[keep] for k, v in train.items()}
    val = {k: v[val["user"] >= 15] for k, v in val.items()}
    test = {k: v[test["user"] >= 15] for k, v in test.items()}
    data = RatingData.from_arrays({name: (p["user"], p["item"], p["rating"]) for name, p in
                                   {"train": train, "val": val, "test": test}.items()},
                                  num_users=NUM_USERS, num_items=NUM_ITEMS, rating_scale=(1, 5))
    config = ml_collections.ConfigDict({
        "task": "rating", "model": {"name": "mf", "dim": 4, "init_std": 0.1},
        "optimizer": {**OPTIMIZER, "weight_decay": 1e-5},
        "training": {"loss": "mse", "l2_reg": 0.0, "batch_size": 64, "epochs": 30,
                     "patience": 0, "seed": 0},
        "evaluation": {"test_user_inputs": "train", "fold_in_epochs": 20},
        "data": {"dataset": "planted"}})
    unfolded = train_and_evaluate(config, None, data=data).summary
    config.evaluation.test_user_inputs = "train+val"
    folded = train_and_evaluate(config, None, data=data).summary
    assert unfolded["best_epoch"] == folded["best_epoch"]  # Same training and selection.
    assert folded["fold_in"]["users"] == NUM_USERS - 15
    assert folded["test_rmse"] < 0.8 * unfolded["test_rmse"]


def test_rating_train_inputs_reproduce_the_run_without_fold_in_and_record_seen_parts(tmp_path):
    config = tiny_config("mf_tiny", **{"evaluation.test_user_inputs": "train"})
    run = train_and_evaluate(config, tmp_path / "train")
    data = load_rating_data(config)
    model = RatingTask().build_model(config, data)
    fit_model(RatingTask(), config, data, model, None)  # Trained and selected, not folded in.
    alone = RatingEvaluator(data.test, data.rating_scale, prefix="test")(model)
    assert run.summary["test_rmse"] == alone["test_rmse"]
    assert run.summary["test_user_inputs"] == "train" and run.summary["fold_in"] is None
    assert load_run(tmp_path / "train" / "run").seen_parts == ("train",)

    folded = train_and_evaluate(tiny_config("mf_tiny"), tmp_path / "default")
    assert folded.summary["test_user_inputs"] == "train+val"
    assert folded.summary["fold_in"]["users"] == len(np.unique(data.val["user"]))
    assert folded.summary["test_rmse"] != run.summary["test_rmse"]
    assert load_run(tmp_path / "default" / "run").seen_parts == ("train", "val")
    assert "scored from train only" in (tmp_path / "train" / "report.md").read_text()
    assert "scored from train + val" in (tmp_path / "default" / "report.md").read_text()


def test_implicit_train_inputs_reproduce_the_run_without_fold_in_and_record_seen_parts(
        tmp_path):
    config = tiny_config("ncf_tiny", **{"evaluation.test_user_inputs": "train",
                                        "model.name": "dot_mf"})
    run = train_and_evaluate(config, tmp_path / "train")
    data = load_implicit_data(config)
    model = ImplicitTask().build_model(config, data)
    fit_model(ImplicitTask(), config, data, model, None)
    alone = {label: r.summary()
             for label, r in ImplicitTask().test_results(config, data, model).items()}
    assert run.summary["test"] == alone
    assert load_run(tmp_path / "train" / "run").seen_parts == ("train",)

    config.evaluation.test_user_inputs = "train+val"
    folded = train_and_evaluate(config, tmp_path / "default")
    assert folded.summary["test_user_inputs"] == "train+val"
    assert load_run(tmp_path / "default" / "run").seen_parts == ("train", "val")
    assert folded.summary["test"] != run.summary["test"]


def test_config_check_names_a_bad_test_user_inputs_value():
    config = tiny_config("mf_tiny", **{"evaluation.test_user_inputs": "val",
                                       "evaluation.fold_in_epochs": 0})
    with pytest.raises(ConfigError) as raised:
        check_config(config, "rating")
    assert "evaluation.test_user_inputs = 'val'" in str(raised.value)
    assert "evaluation.fold_in_epochs = 0" in str(raised.value)
