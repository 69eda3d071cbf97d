"""experiments/train.py (rating task) end to end on configs/mf_tiny.py (synthetic data, no network)."""  # noqa: E501

import json

import numpy as np
import pytest

from recsys_jax.data.splits import Split
from recsys_jax.fileio import load_npy
from tests.tasks.train_script import run_train


@pytest.mark.slow
def test_train_mf_end_to_end_with_overrides(tmp_path):
    workdir = tmp_path / "run"
    proc = run_train("mf_tiny", workdir, "--config.model.dim=6",
                     "--config.split.name=user_temporal", "--config.training.epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test RMSE" in proc.stdout and "user_item_bias" in proc.stdout
    assert "epoch 2/2" in proc.stderr  # One log line per epoch.
    assert "Unable to initialize backend" not in proc.stderr  # quiet_startup at work.

    config = json.loads((workdir / "config.json").read_text())
    assert config["model"]["dim"] == 6 and config["split"]["name"] == "user_temporal"
    metrics = json.loads((workdir / "test_metrics.json").read_text())
    predictions = load_npy(workdir / "test_predictions.npy")
    test = Split.load(workdir / "split").test
    errors = np.clip(predictions, 1, 5) - test["rating"].to_numpy()
    assert metrics["test_rmse"] == pytest.approx(np.sqrt(np.mean(errors ** 2)), rel=1e-5)
    assert metrics["test_mae"] == pytest.approx(np.mean(np.abs(errors)), rel=1e-5)
    assert load_npy(workdir / "user_embeddings.npy").shape == (config["data"]["num_users"], 6)
    assert load_npy(workdir / "item_embeddings.npy").shape[1] == 6
    assert [json.loads(line)["epoch"] for line in
            (workdir / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    for name in ("learning_curve.png", "report.md", "item_bias.npy", "user_bias.npy",
                 "tsne_items.png", "genre_cluster.json", "similar_items.md"):
        assert (workdir / name).is_file(), name
    assert (workdir / "ids" / "item_ids.json").is_file()
    assert any((workdir / "split").iterdir())
    report = (workdir / "report.md").read_text()
    assert "user_temporal" in report and "Against the rating baselines" in report
    assert "Genre-cluster score" in proc.stdout and "## Item embeddings" in report
    assert any(p.suffix == ".csv" for p in (workdir / "comparison").iterdir())
    run = json.loads((workdir / "run" / "run.json").read_text())
    assert run["kind"] == "embeddings" and run["model"] == "mf"
    assert run["split_fingerprint"] and run["split_protocol"] == "user_temporal"
