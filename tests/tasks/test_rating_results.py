import ml_collections
import numpy as np
import pytest

from recsys_jax.evaluation import baselines as baselines_lib
from recsys_jax.evaluation.rating_metrics import rating_metrics
from recsys_jax.tasks.rating import load_rating_data
from recsys_jax.tasks.rating_results import (
    BASELINES,
    baseline_scores,
    format_markdown,
    run_protocol,
    seeded,
)


def _config(protocol: str, dim: int = 4) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        "model": {"name": "mf", "dim": dim, "init_std": 0.1, "unseen_user": "mean",
                  "unseen_item": "zero"},
        "optimizer": {"name": "adam", "lr": 0.02, "weight_decay": 1e-4,
                      "schedule": "constant"},
        "training": {"loss": "mse", "l2_reg": 0.0, "batch_size": 128, "epochs": 2,
                     "patience": 0, "seed": 0, "data_on_device": "auto"},
        "data": {"dataset": "synthetic", "num_users": 40, "num_items": 50,
                 "num_interactions": 1200, "seed": 0},
        "split": {"name": protocol, "val_fraction": 0.1, "test_fraction": 0.1, "seed": 0},
    })


MODELS = {"small": _config, "wide": lambda protocol: _config(protocol, dim=8)}


@pytest.mark.slow  # trains several models
def test_random_protocol_varies_split_and_model_with_the_seed():
    results = run_protocol("random", MODELS, seeds=[0, 1])
    assert results.methods() == list(BASELINES) + ["small", "wide"]
    assert len(results.runs) == 2 * (len(BASELINES) + 2)
    assert len(results.cold_start) == 2
    # Each seed's baselines are those of that seed's split, scored by the suite, and fitted on
    # train + val: the models score test users after folding in their validation events.
    data = load_rating_data(seeded(_config("random"), 1))
    seen = {c: np.concatenate([data.train[c], data.val[c]]) for c in ("user", "item", "rating")}
    bias = baselines_lib.fit_rating_baseline(
        "user_item_bias", seen["user"], seen["item"], seen["rating"],
        data.num_users, data.num_items)
    expected = rating_metrics(data.test["user"], bias.predict(data.test["user"],
                                                             data.test["item"]),
                              data.test["rating"], data.rating_scale).aggregates["rmse"]
    assert results.values("user_item_bias", "test_rmse")[1] == pytest.approx(expected)
    assert len(set(results.values("global_mean", "test_rmse"))) == 2  # Different splits.
    mean, std = results.summary("small", "test_rmse")
    assert mean == pytest.approx(np.mean(results.values("small", "test_rmse")))
    assert std == pytest.approx(np.std(results.values("small", "test_rmse"), ddof=1))
    for run in results.runs:
        assert 0 < run["test_mae"] <= run["test_rmse"] < 3


@pytest.mark.slow  # trains several models
def test_temporal_protocol_keeps_the_split_and_reports_cold_start():
    results = run_protocol("global_temporal", {"small": _config}, seeds=[0, 1])
    # The split ignores the seed: baselines and cold-start shares repeat exactly.
    assert len(set(results.values("item_mean", "test_rmse"))) == 1
    assert results.cold_start[0] == results.cold_start[1]
    prepared = load_rating_data(_config("global_temporal"))
    assert results.cold_start_mean("test_unseen_user_share") == pytest.approx(
        prepared.split_report.test_unseen_user_share)
    assert baseline_scores(prepared, ("train", "val"))["item_mean"]["test_rmse"] == pytest.approx(
        results.values("item_mean", "test_rmse")[0])
    table = format_markdown([results], labels={"small": "MF"},
                            goals={"global_temporal": 0.01}, goal_method="small")
    header, rule, row = table.splitlines()
    assert "| MF |" in header and header.endswith("| goal |")
    assert row.startswith("| `global_temporal` |") and "±" in row and "not met" in row
    assert results.to_dict()["summary"]["small"]["test_rmse"]["std"] >= 0


def test_models_must_share_data_and_split():
    def other_split(protocol):
        config = _config(protocol)
        config.split.test_fraction = 0.2
        return config

    with pytest.raises(ValueError, match="data or split"):
        run_protocol("random", {"a": _config, "b": other_split}, seeds=[0])
