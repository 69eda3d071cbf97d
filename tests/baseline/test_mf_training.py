"""Training loops of the PyTorch MF baseline and the benchmark script, end to end on tiny data."""

import json

import numpy as np
import pytest
import torch  # noqa: F401  (collected only with the baseline extra, see conftest)

from benchmarks.torch_baseline.jax_mf import fit_jax_mf  # noqa: E402
from benchmarks.torch_baseline.mf_training import MFRecipe, clipped_rmse, fit_torch_mf  # noqa: E402
from recsys_jax.config_files import sibling_config  # noqa: E402
from tests.benchmarks.scripts import ROOT, run_benchmark  # noqa: E402


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


@pytest.mark.parametrize("variant,tables", [("baseline", "dense"), ("tuned", "dense"),
                                            ("sparse", "lazy_adam")])
def test_fit_learns_and_restores_the_best_epoch(variant, tables):
    data = _data()
    recipe = MFRecipe(dim=4, init_std=0.1, lr=0.02, batch_size=64, max_epochs=6, patience=2,
                      tables=tables)
    record = fit_torch_mf(variant, recipe, data)
    val = [h["val_rmse"] for h in record.history]
    assert record.best_val_rmse == min(val)
    assert record.history[record.best_epoch - 1]["val_rmse"] == record.best_val_rmse
    assert val[-1] < val[0]  # it learns
    assert record.test_predictions.shape == (200,)
    assert 0 < record.time_to_best_s <= record.total_s


@pytest.mark.slow
def test_fit_is_reproducible_given_the_seed():
    data = _data()
    recipe = MFRecipe(dim=4, lr=0.02, batch_size=64, max_epochs=2, patience=0, seed=5)
    a = fit_torch_mf("tuned", recipe, data).test_predictions
    b = fit_torch_mf("tuned", recipe, data).test_predictions
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_jax_side_is_loop_fit_and_its_timings_add_up():
    """The JAX side runs train_rating_model → loop.fit (validation inside the epoch loop,
    early stopping on val RMSE, best epoch restored) and reports FitResult's timings."""
    data = _data()
    config = sibling_config(ROOT / "configs" / "mf_tiny.py", "mf_tiny")
    record = fit_jax_mf(config, data, seed=3, max_epochs=4)
    history = record.history
    assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
    assert len(history) <= 4 and {"val_rmse", "eval_time_s", "improved"} <= set(history[0])
    val = [h["val_rmse"] for h in history]
    assert record.best_epoch == val.index(min(val)) + 1 and record.best_val_rmse == min(val)
    # The restored model is the best epoch's: its predictions score that epoch's RMSE.
    preds_val = fit_jax_mf(config, {**data, "test": data["val"]}, seed=3,
                           max_epochs=4).test_predictions
    assert clipped_rmse(preds_val, data["val"]["rating"], (1.0, 5.0)) == pytest.approx(
        min(val), rel=1e-5)
    # time to best = set-up + compile + (epoch + validation) up to the best epoch.
    per_epoch = [h["epoch_time_s"] + h["eval_time_s"] for h in history]
    assert record.compile_s > 0 and record.setup_s >= 0
    assert record.time_to_best_s == pytest.approx(
        record.setup_s + record.compile_s + sum(per_epoch[:record.best_epoch]))
    assert record.total_s == pytest.approx(record.setup_s + record.compile_s + sum(per_epoch))
    assert record.test_predictions.shape == (200,)


def test_unknown_variant():
    with pytest.raises(ValueError, match="variant"):
        fit_torch_mf("fast", MFRecipe(), _data())


def test_a_variant_must_implement_the_recipes_tables():
    with pytest.raises(ValueError, match=r"'sparse' trains lazy_adam tables .* \['baseline', "
                                         r"'tuned'\]"):
        fit_torch_mf("sparse", MFRecipe(), _data())
    with pytest.raises(ValueError, match=r"variants for it: \['sparse'\]"):
        fit_torch_mf("tuned", MFRecipe(tables="lazy_adam"), _data())


@pytest.mark.slow
def test_benchmark_script_end_to_end(tmp_path):
    proc = run_benchmark("torch_vs_jax", "--config=configs/mf_tiny.py",
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
    markdown = (tmp_path / "benchmark_mf.md").read_text()
    assert markdown.startswith("## MF: JAX vs PyTorch")
    assert f"CPU: {result['environment']['cpu']}," in markdown and result["environment"]["cpu"]
    # The JAX run's timings are FitResult's: time to best from its epochs and validations.
    (jax_run,) = result["runs"]["jax"]
    per_epoch = [h["epoch_time_s"] + h["eval_time_s"] for h in jax_run["history"]]
    assert jax_run["time_to_best_s"] == pytest.approx(
        jax_run["setup_s"] + jax_run["compile_s"] + sum(per_epoch[:jax_run["best_epoch"]]))
    assert result["speed"]["jax"]["time_to_best_s"] == jax_run["time_to_best_s"]
