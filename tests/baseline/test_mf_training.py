"""Training loops of the PyTorch MF baseline and the benchmark script, end to end on tiny data."""

import json

import numpy as np
import pytest

import torch

from recsys_torch_baseline.mf_training import MFRecipe, fit_torch_mf  # noqa: E402
from tests.baseline.scripts import run_experiment  # noqa: E402


def _data(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    users, items = 30, 40
    p, q = rng.normal(size=(users, 3)), rng.normal(size=(items, 3))

    def part(n):
        u, i = rng.integers(0, users, n), rng.integers(0, items, n)
        r = np.clip(np.round(3 + (p[u] * q[i]).sum(1)), 1, 5).astype(np.float32)
        return {"user": u, "item": i, "rating": r}

    return {"train": part(1500), "val": part(200), "test": part(200), "num_users": users,
            "num_items": items, "rating_scale": (1.0, 5.0)}


@pytest.mark.parametrize("variant", ["baseline", "tuned"])
def test_fit_learns_and_restores_the_best_epoch(variant):
    data = _data()
    recipe = MFRecipe(dim=4, init_std=0.1, lr=0.02, batch_size=64, max_epochs=6, patience=2)
    record = fit_torch_mf(variant, recipe, data)
    val = [h["val_rmse"] for h in record.history]
    assert record.best_val_rmse == min(val)
    assert record.history[record.best_epoch - 1]["val_rmse"] == record.best_val_rmse
    assert val[-1] < val[0]  # it learns
    assert record.test_predictions.shape == (200,)
    assert 0 < record.time_to_best_s <= record.total_s


def test_fit_is_reproducible_given_the_seed():
    data = _data()
    recipe = MFRecipe(dim=4, lr=0.02, batch_size=64, max_epochs=2, patience=0, seed=5)
    a = fit_torch_mf("tuned", recipe, data).test_predictions
    b = fit_torch_mf("tuned", recipe, data).test_predictions
    np.testing.assert_array_equal(a, b)


def test_unknown_variant():
    with pytest.raises(ValueError, match="variant"):
        fit_torch_mf("fast", MFRecipe(), _data())


def test_benchmark_script_end_to_end(tmp_path):
    proc = run_experiment("benchmark_torch.py", "--config=configs/mf_tiny.py",
                          "--repetitions=1", "--epochs=2", "--torch_compile=false",
                          "--bootstrap_resamples=200", f"--output_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "PyTorch baseline (DataLoader)" in proc.stdout
    result = json.loads((tmp_path / "benchmark_mf.json").read_text())
    assert set(result["speed"]) == {"jax", "baseline", "tuned"}
    for variant, speed in result["speed"].items():
        assert speed["examples_per_s"] > 0, variant
        assert result["quality"][variant]["test_rmse"][0] < 2.0, variant
    env_info = result["environment"]["workers"]
    threads = result["environment"]["threads"]
    assert env_info["baseline"]["framework"]["torch_num_threads"] == threads
    assert env_info["jax"]["OMP_NUM_THREADS"] == str(result["environment"]["threads"])
    assert (tmp_path / "benchmark_mf.md").read_text().startswith("## MF: JAX vs PyTorch")
