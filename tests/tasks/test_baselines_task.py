"""EASE, ItemKNN and iALS through the implicit task: fit, validate, refit test users, save."""

import json

import numpy as np
import pytest

from recsys_jax.config_files import load_config_file
from recsys_jax.evaluation.validators import score_matrix
from recsys_jax.models.registry import build_model, load_model
from recsys_jax.tasks.runner import train_and_evaluate

MODELS = {
    "ease": {"name": "ease", "l2": 5.0, "recency_weight": 0.8},
    "item_knn": {"name": "item_knn", "k": 10, "shrink": 1.0},
    "ials": {"name": "ials", "dim": 4, "iterations": 3, "alpha": 2.0, "l2": 0.1},
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fit_validate_refit_test_users_save_and_reload(tmp_path, name):
    config = load_config_file("configs/ncf_tiny.py")
    config.model = MODELS[name]
    run = train_and_evaluate(config, tmp_path / name)
    summary, data = run.summary, run.data
    assert summary["fit_time_s"] > 0 and "best_epoch" not in summary
    assert 0 < summary["best_val"] == summary["val_ndcg@10"] <= 1
    assert summary["test_user_inputs"] == "train+val" and summary["fold_in"]["closed_form"]
    assert summary["fold_in"]["users"] == len(np.unique(data.val["user"]))
    assert summary["num_parameters"] > 0
    assert 0 <= summary["test"]["full"]["hr@10"] <= 1
    run_info = json.loads((tmp_path / name / "run" / "run.json").read_text())
    assert run_info["seen_parts"] == ["train", "val"]
    if name != "ials":  # Test users' rows hold their validation events (item-item models).
        rows = run.model.rows.matrix()
        assert np.all(rows[data.val["user"], data.val["item"]] > 0)
        # best_val was measured before that refit: it is a train-only model's validation.
        fresh = build_model(config.model, num_users=data.num_users, num_items=data.num_items,
                            train=data.train, rngs=None)
        fresh.fit(run.task.fit_columns(data), config)
        validate = run.task.validator(config, data)
        assert validate(fresh)["val_ndcg@10"] == summary["best_val"]
        assert validate(run.model)["val_ndcg@10"] != summary["best_val"]
    loaded = load_model(tmp_path / name / "model")
    np.testing.assert_allclose(score_matrix(loaded), score_matrix(run.model), atol=1e-6)
