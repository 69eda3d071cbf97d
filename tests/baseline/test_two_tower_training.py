"""Training loops of the PyTorch two-tower baseline and the two-tower benchmark, end to end on
the tiny synthetic config."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import torch  # noqa: F401  (collected only with the baseline extra, see conftest)

from recsys_jax.config_files import sibling_config  # noqa: E402
from recsys_jax.training.retrieval_experiment import prepare_retrieval_data  # noqa: E402
from recsys_jax.training.retrieval_losses import sampling_log_q  # noqa: E402
from recsys_torch_baseline.jax_two_tower import initial_params  # noqa: E402
from recsys_torch_baseline.two_tower_training import (TwoTowerRecipe,  # noqa: E402
                                                      build_torch_two_tower,
                                                      fit_torch_two_tower)

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "two_tower_tiny.py"


@pytest.fixture(scope="module")
def tiny():
    config = sibling_config(TINY, "two_tower_tiny")
    data = prepare_retrieval_data(config)
    f, tf = data.features, data.test_features
    arrays = {"user_features": f.user, "item_features": f.item, "history_ids": f.history_ids,
              "history_mask": f.history_mask, "test_user_features": tf.user,
              "test_history_ids": tf.history_ids, "test_history_mask": tf.history_mask,
              **{f"pos_{k}": v for k, v in data.positives.items()},
              "log_q": sampling_log_q(data.positives["item"], data.num_items)}
    return config, data, arrays


def test_causal_pairs_carry_their_inputs_and_a_mismatch_is_refused(tiny):
    config, data, arrays = tiny
    recipe = TwoTowerRecipe.from_config(config, epochs=1)
    assert recipe.causal_inputs and "pos_user_features" in arrays
    assert arrays["pos_user_features"].shape == (len(arrays["pos_user"]),
                                                 data.features.user.shape[1])
    stored_only = {k: v for k, v in arrays.items()
                   if k not in ("pos_user_features", "pos_history_ids", "pos_history_mask")}
    with pytest.raises(ValueError, match="causal_inputs"):
        fit_torch_two_tower("tuned", recipe, stored_only)


def test_starts_from_the_jax_initialisation(tiny):
    config, data, arrays = tiny
    from recsys_torch_baseline.jax_two_tower import build_jax_two_tower
    jax_model = build_jax_two_tower(config, data.features, seed=3)
    recipe = TwoTowerRecipe.from_config(config)
    torch_model = build_torch_two_tower(arrays, recipe,
                                        initial_params(config, data.features, seed=3))
    expected, got = jax_model.export_arrays(), torch_model.export_arrays()
    for name in ("user_embeddings", "item_embeddings"):
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["baseline", "tuned"])
def test_fit_learns_and_exports(tiny, variant):
    config, data, arrays = tiny
    recipe = TwoTowerRecipe.from_config(config, epochs=4, lr=1e-2)
    record = fit_torch_two_tower(variant, recipe, arrays,
                                 init_params=initial_params(config, data.features, seed=0))
    losses = [h["train_loss"] for h in record.history]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert record.user_embeddings.shape == (data.num_users, recipe.dim)
    assert record.item_embeddings.shape == (data.num_items, recipe.dim)
    np.testing.assert_allclose(np.linalg.norm(record.item_embeddings, axis=1), 1.0, rtol=1e-4)


def test_unsupported_recipe_is_refused(tiny):
    config = tiny[0].copy_and_resolve_references()
    config.loss.num_random_negatives = 16
    with pytest.raises(ValueError, match="num_random_negatives"):
        TwoTowerRecipe.from_config(config)


def test_two_tower_benchmark_script_end_to_end(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "benchmark_torch.py"),
         "--models=two_tower", "--config=configs/two_tower_tiny.py", "--repetitions=1",
         "--epochs=2", "--bootstrap_resamples=200", f"--output_dir={tmp_path}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "PyTorch baseline (DataLoader)" in proc.stdout
    result = json.loads((tmp_path / "benchmark_two_tower.json").read_text())
    assert set(result["speed"]) == {"jax", "baseline", "tuned"}
    for variant, speed in result["speed"].items():
        assert speed["examples_per_s"] > 0, variant
        assert speed["epochs_trained"] == [2], variant
        assert speed["warmup_s"] >= 0 and speed["steady_epoch_s"] > 0, variant
        hr = result["quality"][variant]["hr@100"]
        assert math.isfinite(hr["first_rep"]) and 0 <= hr["first_rep"] <= 1, variant
        assert len(hr["first_rep_ci"]) == 2, variant
        assert math.isfinite(result["quality"][variant]["ndcg@100"]["first_rep"]), variant
    assert result["quality"]["baseline"]["hr@100"]["delta_vs_jax"] is not None
    threads = result["environment"]["threads"]
    workers = result["environment"]["workers"]
    assert workers["tuned"]["framework"]["torch_num_threads"] == threads
    assert workers["jax"]["OMP_NUM_THREADS"] == str(threads)
    assert (tmp_path / "benchmark_two_tower.md").read_text().startswith(
        "## Two-tower: JAX vs PyTorch")
