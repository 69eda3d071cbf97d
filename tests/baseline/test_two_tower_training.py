"""Training loops of the PyTorch two-tower baseline and the two-tower benchmark, end to end on
the tiny synthetic config."""

import json
import math

import numpy as np
import pytest
import torch  # noqa: F401  (collected only with the baseline extra, see conftest)

from benchmarks.torch_baseline.jax_two_tower import (
    fit_jax_two_tower,
    initial_params,
    load_retrieval_data,
    monitor_name,
    prepare_retrieval_data,
    save_retrieval_data,
    torch_positives,
)
from benchmarks.torch_baseline.two_tower_benchmark import (
    add_time_to_best,
    best_epoch,
    best_epoch_embeddings,
    time_to_best,
)
from benchmarks.torch_baseline.two_tower_training import (
    TwoTowerRecipe,
    build_torch_two_tower,
    fit_torch_two_tower,
)
from recsys_jax.config_files import sibling_config
from recsys_jax.tasks.retrieval_losses import sampling_log_q
from tests.benchmarks.scripts import ROOT, run_benchmark

TINY = ROOT / "configs" / "two_tower_tiny.py"


@pytest.fixture(scope="module")
def tiny():
    config = sibling_config(TINY, "two_tower_tiny")
    data = prepare_retrieval_data(config)
    f, tf = data.features, data.test_features
    arrays = {"user_features": f.user, "item_features": f.item, "history_ids": f.history_ids,
              "history_mask": f.history_mask, "test_user_features": tf.user,
              "test_history_ids": tf.history_ids, "test_history_mask": tf.history_mask,
              **{f"pos_{k}": v for k, v in torch_positives(data).items()},
              "log_q": sampling_log_q(data.train["item"], data.num_items)}
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
    from benchmarks.torch_baseline.jax_two_tower import build_jax_two_tower
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


def _training_inputs_as_test(arrays):
    """``arrays`` whose test users' inputs are the training-time ones, so the end-of-training
    export is a plain export with training-time inputs."""
    return {**arrays, "test_user_features": arrays["user_features"],
            "test_history_ids": arrays["history_ids"],
            "test_history_mask": arrays["history_mask"]}


def _check_epoch_embeddings(record, plain, epochs, num_users, num_items, dim):
    """``record`` trained with per-epoch exports; ``plain`` the same run without them, exporting
    with the training-time inputs at the end (an independent export of the last epoch)."""
    users, items = record.epoch_user_embeddings, record.epoch_item_embeddings
    assert users.shape == (epochs, num_users, dim) and users.dtype == np.float32
    assert items.shape == (epochs, num_items, dim) and items.dtype == np.float32
    assert not np.allclose(users[0], users[-1])  # One slot per epoch, not one state repeated.
    np.testing.assert_allclose(users[-1], plain.user_embeddings, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(items[-1], plain.item_embeddings, rtol=1e-5, atol=1e-6)
    # The final export still switches to the test users' inputs (train + val events).
    assert not np.allclose(users[-1], record.user_embeddings)
    np.testing.assert_allclose(items[-1], record.item_embeddings, rtol=1e-5, atol=1e-6)
    # Each epoch is also exported with the test users' inputs; the last equals the final
    # export, and training went on with the training-time inputs (users[-1] == plain's).
    test_users = record.epoch_test_user_embeddings
    assert test_users.shape == (epochs, num_users, dim)
    np.testing.assert_allclose(test_users[-1], record.user_embeddings, rtol=1e-5, atol=1e-6)
    assert plain.epoch_user_embeddings is None and plain.epoch_export_s == 0.0
    assert record.epoch_export_s > 0 and len(record.history) == epochs


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["baseline", "tuned"])
def test_torch_epoch_embeddings_are_training_time_exports(tiny, variant):
    config, data, arrays = tiny
    recipe = TwoTowerRecipe.from_config(config, epochs=3, lr=1e-2)
    init = initial_params(config, data.features, seed=0)
    record = fit_torch_two_tower(variant, recipe, arrays, init_params=init,
                                 epoch_embeddings=True)
    plain = fit_torch_two_tower(variant, recipe, _training_inputs_as_test(arrays),
                                init_params=init)
    _check_epoch_embeddings(record, plain, 3, data.num_users, data.num_items, recipe.dim)


@pytest.mark.slow
def test_jax_side_is_loop_fit_for_fixed_epochs_from_saved_data(tiny, tmp_path):
    """The JAX side trains with train_two_tower → loop.fit on the data a worker reloads:
    exactly the asked epochs (no early stopping), validation in fit's loop, the best epoch's
    weights exported with the test users' inputs, timings from FitResult."""
    config, data, _ = tiny
    save_retrieval_data(data, tmp_path)
    np.savez(tmp_path / "positives.npz", **data.train,
             log_q=sampling_log_q(data.train["item"], data.num_items))
    reloaded = load_retrieval_data({
        "features": tmp_path / "features.npz", "test_features": tmp_path / "test_features.npz",
        "positives": tmp_path / "positives.npz", "split": tmp_path / "split"})
    epochs = 3
    record = fit_jax_two_tower(config, reloaded, seed=0, epochs=epochs)
    monitor = monitor_name(config)
    values = [h[monitor] for h in record.history]
    assert [h["epoch"] for h in record.history] == [1, 2, 3]
    assert record.best_epoch == best_epoch(values) and record.best_val == max(values)
    per_epoch = [h["epoch_time_s"] + h["eval_time_s"] for h in record.history]
    assert record.compile_s > 0 and record.setup_s >= 0
    assert record.time_to_best_s == pytest.approx(
        record.setup_s + record.compile_s + sum(per_epoch[:record.best_epoch]))
    assert record.epoch_user_embeddings is None
    # The export is the best epoch's weights: a run of just that many epochs (same seed,
    # same data, constant learning rate) ends where this one's best epoch ended.
    prefix = fit_jax_two_tower(config, data, seed=0, epochs=record.best_epoch)
    for name in ("user_embeddings", "item_embeddings"):
        np.testing.assert_allclose(getattr(prefix, name), getattr(record, name), rtol=1e-5,
                                   atol=1e-6, err_msg=name)


def test_pytorch_runs_are_tested_at_the_chosen_epoch(tmp_path):
    test_users = np.arange(3 * 4 * 2, dtype=np.float32).reshape(3, 4, 2)
    items = -np.arange(3 * 5 * 2, dtype=np.float32).reshape(3, 5, 2)
    np.save(tmp_path / "epoch_test_user_embeddings.npy", test_users)
    np.save(tmp_path / "epoch_item_embeddings.npy", items)
    users, item_rows = best_epoch_embeddings(tmp_path, 2)
    np.testing.assert_array_equal(users, test_users[1])
    np.testing.assert_array_equal(item_rows, items[1])


def test_best_epoch_is_the_first_maximum():
    assert best_epoch([0.1, 0.3, 0.2]) == 2
    assert best_epoch([0.1, 0.3, 0.3, 0.2]) == 2
    assert best_epoch([0.5]) == 1
    assert best_epoch([float("nan"), 0.2, 0.1]) == 2
    with pytest.raises(ValueError):
        best_epoch([float("nan")])


def test_time_to_best_adds_setup_compile_and_the_epochs_up_to_the_best():
    run = {"setup_s": 0.5, "compile_s": 2.0, "history": [
        {"epoch": 1, "epoch_time_s": 3.0}, {"epoch": 2, "epoch_time_s": 1.0},
        {"epoch": 3, "epoch_time_s": 1.25}, {"epoch": 4, "epoch_time_s": 1.5}]}
    assert time_to_best(run, 1) == pytest.approx(5.5)
    assert time_to_best(run, 3) == pytest.approx(7.75)
    assert time_to_best(run, 4) == pytest.approx(9.25)
    with pytest.raises(ValueError):
        time_to_best(run, 5)
    add_time_to_best(run, [0.10, 0.30, 0.30, 0.25], "val_recall@100")
    assert (run["best_epoch"], run["best_val"]) == (2, 0.30)
    assert run["time_to_best_s"] == pytest.approx(6.5)
    assert [h["val_recall@100"] for h in run["history"]] == [0.10, 0.30, 0.30, 0.25]


def test_unsupported_recipe_is_refused(tiny):
    config = tiny[0].copy_and_resolve_references()
    config.loss.num_random_negatives = 16
    with pytest.raises(ValueError, match="num_random_negatives"):
        TwoTowerRecipe.from_config(config)


@pytest.mark.slow
def test_two_tower_benchmark_script_end_to_end(tmp_path):
    proc = run_benchmark("torch_vs_jax", "--models=two_tower",
                          "--config=configs/two_tower_tiny.py", "--repetitions=1", "--epochs=2",
                          "--bootstrap_resamples=200", f"--output_dir={tmp_path}")
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
    # Time to the best validation epoch, from every epoch scored on validation.
    monitor = result["monitor"]
    assert monitor == "val_recall@10"  # The tiny config's training.monitor.
    for variant, (run,) in result["runs"].items():
        values = [h[monitor] for h in run["history"]]
        assert all(0 <= x <= 1 for x in values), variant
        assert 1 <= run["best_epoch"] <= 2, variant
        assert run["best_val"] == max(values) == values[run["best_epoch"] - 1], variant
        assert 0 < run["time_to_best_s"] <= run["total_s"] + 1e-6, variant
        # JAX (loop.fit) validates inside its epoch loop; PyTorch's epochs are scored after.
        per_epoch = [h["epoch_time_s"] + (h["eval_time_s"] if variant == "jax" else 0.0)
                     for h in run["history"]]
        assert run["time_to_best_s"] == pytest.approx(
            run["setup_s"] + run["compile_s"] + sum(per_epoch[:run["best_epoch"]])), variant
        assert "epoch_user_embeddings" not in run, variant
        speed = result["speed"][variant]
        assert speed["time_to_best_s"] == run["time_to_best_s"], variant
        assert speed["best_epochs"] == [run["best_epoch"]], variant
    threads = result["environment"]["threads"]
    workers = result["environment"]["workers"]
    assert workers["tuned"]["framework"]["torch_num_threads"] == threads
    assert workers["jax"]["OMP_NUM_THREADS"] == str(threads)
    markdown = (tmp_path / "benchmark_two_tower.md").read_text()
    assert markdown.startswith("## Two-tower: JAX vs PyTorch")
    assert "time to best val epoch (s)" in markdown
    assert f"CPU: {result['environment']['cpu']}," in markdown
