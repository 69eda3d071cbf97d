import json

import ml_collections
import numpy as np
import pytest

from recsys_jax.fileio import load_npy
from recsys_jax.tasks.rating import RatingData
from recsys_jax.tasks.runner import RUN_FORMAT, WorkdirError, train_and_evaluate
from tests.tasks.planted import NUM_ITEMS, NUM_USERS, planted_ratings


def _config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        "task": "rating",
        "model": {"name": "mf", "dim": 4, "init_std": 0.1},
        "optimizer": {"name": "adam", "lr": 0.05, "weight_decay": 1e-5,
                      "schedule": "constant"},
        "training": {"loss": "mse", "l2_reg": 0.0, "batch_size": 64, "epochs": 2,
                     "patience": 0, "seed": 0, "data_on_device": "auto"},
        "data": {"dataset": "planted"},
    })


def _synthetic_config() -> ml_collections.ConfigDict:
    config = _config()  # Data the runner can load itself ("planted" data is passed in).
    config.data = {"dataset": "synthetic", "num_users": 20, "num_items": 30,
                   "num_interactions": 300, "seed": 0}
    config.split = {"name": "random", "val_fraction": 0.1, "test_fraction": 0.1, "seed": 0}
    return config


def test_run_writes_the_workdir_and_serves_unseen_ids_by_bias(tmp_path):
    train, val, test = planted_ratings(800, 0), planted_ratings(100, 1), planted_ratings(50, 2)
    # User 0 and item 0 never occur in training: they must get the bias fallback.
    keep = (train["user"] != 0) & (train["item"] != 0)
    train = {k: v[keep] for k, v in train.items()}
    val = {k: v[val["user"] != 0] for k, v in val.items()}  # Else fold-in would see user 0.
    test["user"][:3] = 0
    data = RatingData.from_arrays(
        {name: (p["user"], p["item"], p["rating"])
         for name, p in {"train": train, "val": val, "test": test}.items()},
        num_users=NUM_USERS, num_items=NUM_ITEMS, rating_scale=(1, 5))
    summary = train_and_evaluate(_config(), tmp_path, data=data).summary

    for name in ("config.json", "metrics.jsonl", "test_metrics.json", "learning_curve.png",
                 "report.md", "user_embeddings.npy", "item_embeddings.npy", "user_bias.npy",
                 "item_bias.npy", "global_mean.npy", "test_predictions.npy"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "checkpoints" / "best").is_dir()
    saved = json.loads((tmp_path / "test_metrics.json").read_text())
    assert saved["test_rmse"] == pytest.approx(summary["test_rmse"])
    assert 0 < saved["test_mae"] <= saved["test_rmse"] < 2
    cold = saved["test_cold_start"]
    assert cold["unseen_user"] >= 3 and cold["unseen_either"] >= cold["unseen_user"]
    report = (tmp_path / "report.md").read_text()
    assert report.count("# mf on") == 1 and "## Against the rating baselines" in report
    assert summary["task"] == "rating" and summary["total_wall_time_s"] > 0
    assert len(summary["epoch_times_s"]) == 2
    assert summary["median_epoch_time_s"] == summary["epoch_times_s"][1]  # Epochs 2.. only.
    assert any((tmp_path / "tensorboard").iterdir())

    mu = float(load_npy(tmp_path / "global_mean.npy"))
    item_bias = load_npy(tmp_path / "item_bias.npy")
    item_seen = load_npy(tmp_path / "item_seen.npy")
    preds = load_npy(tmp_path / "test_predictions.npy")
    expected = mu + np.where(item_seen[test["item"][:3]], item_bias[test["item"][:3]], 0.0)
    np.testing.assert_allclose(preds[:3], expected, rtol=1e-6)
    assert load_npy(tmp_path / "user_embeddings.npy").shape == (NUM_USERS, 4)
    assert not load_npy(tmp_path / "user_seen.npy")[0]


def test_rating_data_validates_ids():
    cols = (np.array([0, NUM_USERS]), np.array([0, 1]), np.array([3.0, 4.0]))
    with pytest.raises(ValueError, match="user id"):
        RatingData.from_arrays({"train": cols, "val": cols, "test": cols},
                               num_users=NUM_USERS, num_items=NUM_ITEMS, rating_scale=(1, 5))


def test_workdir_of_the_old_layout_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "params.npz").write_bytes(b"")
    with pytest.raises(WorkdirError, match="older recsys_jax.*new --workdir"):
        train_and_evaluate(_synthetic_config(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "params.npz"]


def test_workdir_of_another_task_is_refused(tmp_path):
    (tmp_path / "run_format.json").write_text(
        json.dumps({"format": RUN_FORMAT, "task": "retrieval"}))
    with pytest.raises(WorkdirError, match="'retrieval' run, not 'rating'"):
        train_and_evaluate(_synthetic_config(), tmp_path)
