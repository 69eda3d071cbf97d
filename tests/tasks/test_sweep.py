"""The sweep (recsys_jax.tasks.sweep, experiments/sweep.py): plans, validation-only selection,
refit and report, on the tiny configs (synthetic data)."""

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recsys_jax.config_files import sibling_config
from recsys_jax.tasks import sweep
from recsys_jax.tasks.rating import RatingTask
from recsys_jax.tasks.runner import train_and_evaluate
from recsys_jax.tasks.sweep import SweepError, Trial

REPO = Path(__file__).resolve().parents[2]


def _tiny(name: str):
    config = sibling_config(REPO / "configs" / "any.py", name)
    if "analysis" in config:
        config.analysis.enabled = False  # t-SNE of the refit is not what is tested here.
    return config


# --- plans ------------------------------------------------------------------------------------


def test_grid_enumerates_the_product_once_each():
    space = {"optimizer.lr": [1e-3, 3e-3], "model.dim": [8, 16, 32], "training.l2_reg": [0.0]}
    trials = sweep.plan_trials(space, "grid", None, seed=0)
    expected = [dict(zip(space, combo)) for combo in itertools.product(*space.values())]
    assert trials == expected and len(trials) == 6
    # A repeated value is one grid point, and a budget above the grid runs the grid.
    assert sweep.plan_trials({"model.dim": [8, 8, 16]}, "grid", 5, seed=0) == [
        {"model.dim": 8}, {"model.dim": 16}]


def test_grid_refuses_a_cut_budget_and_ranges():
    with pytest.raises(SweepError, match="grid has 4 points but --budget=3"):
        sweep.plan_trials({"a.b": [1, 2], "c.d": [3, 4]}, "grid", 3, seed=0)
    with pytest.raises(SweepError, match="optimizer.lr: grid search needs a list"):
        sweep.plan_trials({"optimizer.lr": {"log_uniform": [1e-4, 1e-2]}}, "grid", None, 0)


def test_random_draws_budget_distinct_trials_reproducibly():
    space = {"optimizer.lr": {"log_uniform": [1e-4, 1e-2]}, "model.dim": [8, 16, 32],
             "training.batch_size": {"int_uniform": [32, 40]},
             "optimizer.weight_decay": {"uniform": [0.0, 1e-3]}}
    trials = sweep.plan_trials(space, "random", 12, seed=3)
    assert len(trials) == 12
    assert len({json.dumps(t, sort_keys=True) for t in trials}) == 12
    assert trials == sweep.plan_trials(space, "random", 12, seed=3)
    assert trials != sweep.plan_trials(space, "random", 12, seed=4)
    for t in trials:
        assert 1e-4 <= t["optimizer.lr"] <= 1e-2 and t["model.dim"] in (8, 16, 32)
        assert 32 <= t["training.batch_size"] <= 40 and isinstance(t["training.batch_size"], int)
        assert 0.0 <= t["optimizer.weight_decay"] <= 1e-3


def test_random_exhausts_a_small_finite_space_and_refuses_more():
    space = {"model.dim": [8, 16], "optimizer.lr": [1e-3, 1e-2]}
    trials = sweep.plan_trials(space, "random", 4, seed=0)
    assert sorted(map(str, trials)) == sorted(map(str, sweep.grid_trials(space)))
    with pytest.raises(SweepError, match="only 4 distinct points but --budget=5"):
        sweep.plan_trials(space, "random", 5, seed=0)
    with pytest.raises(SweepError, match="needs --budget"):
        sweep.plan_trials(space, "random", None, seed=0)


def test_log_uniform_is_uniform_in_the_log():
    # Half the mass lies below the geometric midpoint 1e-3 (a plain uniform puts ~9% there).
    lrs = np.array([t["x.lr"] for t in sweep.random_trials(
        {"x.lr": {"log_uniform": [1e-4, 1e-2]}}, 1500, seed=0)])
    assert abs(np.mean(lrs < 1e-3) - 0.5) < 0.05


def test_the_space_names_each_bad_field():
    with pytest.raises(SweepError) as e:
        sweep.check_space({"split.seed": [0, 1], "training.monitor": ["val_mae"],
                           "model.dim": 8, "optimizer.lr": {"log_uniform": [0, 1]},
                           "optimizer.b1": {"normal": [0, 1]}}, "random")
    for field in ("split.seed", "training.monitor", "model.dim: give a non-empty list",
                  "optimizer.lr: log_uniform needs lo > 0", "optimizer.b1: a range is one"):
        assert field in str(e.value)
    with pytest.raises(SweepError, match="empty"):
        sweep.check_space({}, "grid")
    # The sequential task cuts its training windows and encoder inputs once per sweep.
    with pytest.raises(SweepError, match="model.max_len: fixed within a sweep"):
        sweep.check_space({"model.max_len": [50, 100], "model.dim": [50]}, "grid")


def test_load_space_from_json_text_and_files(tmp_path):
    space = {"optimizer.lr": [0.001, 0.003], "model.dim": {"int_uniform": [8, 16]}}
    assert sweep.load_space(json.dumps(space)) == space
    (tmp_path / "s.json").write_text(json.dumps(space))
    assert sweep.load_space(str(tmp_path / "s.json")) == space
    (tmp_path / "s.py").write_text(f"SPACE = {space!r}\n")
    assert sweep.load_space(str(tmp_path / "s.py")) == space
    (tmp_path / "bad.py").write_text("space = {}\n")
    with pytest.raises(SweepError, match="must define SPACE"):
        sweep.load_space(str(tmp_path / "bad.py"))
    with pytest.raises(SweepError, match="neither JSON"):
        sweep.load_space("{optimizer.lr: [1]}")


def test_trial_config_sets_fields_and_refuses_typos():
    base = _tiny("ncf_tiny")
    config = sweep.trial_config(base, {"model.mlp_layers": [8, 4], "optimizer.lr": 0.5})
    assert config.model.mlp_layers == (8, 4) and config.optimizer.lr == 0.5
    assert base.optimizer.lr != 0.5  # The base is left as it was.
    with pytest.raises(SweepError, match="optimizer.lrr"):
        sweep.trial_config(base, {"optimizer.lrr": 0.1})


# --- selection --------------------------------------------------------------------------------


def _trials(values):
    return [Trial(i, {"x": i}, v, 1.0) for i, v in enumerate(values)]


def test_select_follows_the_monitor_direction_skips_nan_and_breaks_ties_by_order():
    trials = _trials([0.9, math.nan, 0.7, 0.95, 0.7])
    assert sweep.select(trials, "min").index == 2  # 0.7 twice: the earlier one.
    assert sweep.select(trials, "max").index == 3
    with pytest.raises(SweepError, match="all 2 trials diverged"):
        sweep.select(_trials([math.nan, math.nan]), "min")


def test_test_metrics_flattens_every_task_summary():
    summary = {"test_rmse": 0.9, "test_cold_start": {"rows": 3}, "best_val": 0.8,
               "test": {"full": {"hr@10": 0.25, "num_users": 60}, "sampled": {"hr@10": 0.5}},
               "test_user_inputs": "train+val"}
    assert sweep.test_metrics(summary) == {
        "test_rmse": 0.9, "test_hr@10 (full)": 0.25, "test_num_users (full)": 60.0,
        "test_hr@10 (sampled)": 0.5}


# --- whole sweeps -----------------------------------------------------------------------------


def test_sweep_selects_on_validation_whatever_test_says(tmp_path, monkeypatch):
    """Test metrics are rigged to be anti-correlated with validation: the choice must not move,
    and the reported test metrics must be the refit's."""
    calls = []
    real_evaluate = RatingTask.evaluate

    def rigged(self, config, data, model):
        val = float(self.validator(config, data)(model)["val_rmse"])
        calls.append(val)
        return {**real_evaluate(self, config, data, model), "test_rmse": 10.0 - val}

    monkeypatch.setattr(RatingTask, "evaluate", rigged)
    base = _tiny("mf_tiny")
    base.training.epochs = 2
    space = {"optimizer.lr": [1e-3, 3e-2, 1e-2]}
    result = sweep.run_sweep(base, space, search="grid", budget=None, seed=0,
                             output_dir=tmp_path / "s")

    values = [t.value for t in result.trials]
    assert len(set(values)) == 3  # Distinct, so the choice is decided.
    assert result.chosen.index == int(np.argmin(values))
    assert result.chosen.index != int(np.argmin([10.0 - v for v in values]))
    assert result.mode == "min" and result.monitor == "val_rmse"
    # Trials never evaluate test; only the refit does. The refit (same seed, same data)
    # reproduces the chosen trial's validation value; its test metric is the refit's own.
    assert len(calls) == 1
    assert calls[0] == pytest.approx(result.chosen.value, rel=1e-5)
    assert result.refit["val"] == pytest.approx(result.chosen.value, rel=1e-5)
    assert result.refit["test"]["test_rmse"] == pytest.approx(10.0 - calls[0])

    saved = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert saved["status"] == "done" and saved["chosen"]["index"] == result.chosen.index
    assert [t["overrides"] for t in saved["trials"]] == sweep.grid_trials(space)
    assert all(not k.startswith("test") for t in saved["trials"] for k in t)
    assert saved["budget"]["trials"] == 3
    assert saved["budget"]["trial_seconds"] == pytest.approx(
        sum(t["seconds"] for t in saved["trials"]))
    best = json.loads((tmp_path / "s" / "best" / "config.json").read_text())
    assert best["optimizer"]["lr"] == space["optimizer.lr"][result.chosen.index]
    metrics = json.loads((tmp_path / "s" / "best" / "test_metrics.json").read_text())
    assert metrics["test_rmse"] == pytest.approx(result.refit["test"]["test_rmse"])
    markdown = (tmp_path / "s" / "sweep.md").read_text()
    assert "← chosen" in markdown and "Budget used: 3 trials" in markdown
    assert (tmp_path / "s" / "split" / "split.npz").is_file()

    with pytest.raises(SweepError, match="already holds a sweep"):
        sweep.run_sweep(base, space, search="grid", budget=None, seed=0,
                        output_dir=tmp_path / "s")


def test_sweep_maximises_a_ranking_monitor(tmp_path):
    base = _tiny("ncf_tiny")
    base.model.name = "gmf"
    result = sweep.run_sweep(base, {"optimizer.lr": [1e-4, 3e-2]}, search="random",
                             budget=2, seed=0, output_dir=tmp_path / "s")
    assert result.mode == "max" and result.monitor.startswith("val_")
    values = [t.value for t in result.trials]
    assert result.chosen.index == int(np.argmax(values))
    assert any(k.endswith("(full)") for k in result.refit["test"])


def test_a_bad_trial_fails_before_any_training(tmp_path):
    with pytest.raises(SweepError, match="model.dimm"):
        sweep.run_sweep(_tiny("mf_tiny"), {"model.dimm": [4]}, search="grid", budget=None,
                        seed=0, output_dir=tmp_path / "s")
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_sweep_script_end_to_end(tmp_path):
    (tmp_path / "space.py").write_text(
        'SPACE = {"optimizer.lr": {"log_uniform": [1e-3, 3e-2]}, "model.dim": [4, 6]}\n')
    command = [sys.executable, str(REPO / "experiments" / "sweep.py"),
               f"--config={REPO / 'configs' / 'mf_tiny.py'}", f"--space={tmp_path / 'space.py'}",
               "--search=random", "--budget=2", "--seed=1", f"--output_dir={tmp_path / 'out'}",
               "--config.training.epochs=2", "--config.analysis.enabled=False"]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trial 0:" in proc.stdout and "trial 1:" in proc.stdout and "test_rmse" in proc.stdout
    saved = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert saved["search"] == "random" and saved["budget"]["requested"] == 2
    assert [t["overrides"] for t in saved["trials"]] == sweep.random_trials(
        sweep.load_space(str(tmp_path / "space.py")), 2, seed=1)
    values = [t["value"] for t in saved["trials"]]
    assert saved["chosen"]["index"] == int(np.argmin(values))
    assert (tmp_path / "out" / "best" / "run" / "run.json").is_file()

    # The same command again is refused with a message saying how to proceed.
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "--overwrite" in again.stderr


def test_budget_table_has_one_row_per_model_and_every_headline_metric():
    def result(model, value, test):
        trials = _trials([value, value + 0.1])
        return sweep.SweepResult(
            task="implicit", model=model, monitor="val_ndcg@10", mode="max", search="random",
            seed=0, budget=2, space={"x": [0, 1]}, trials=trials, chosen=trials[1],
            refit={"workdir": "w", "val": value, "seconds": 1.0, "test": test},
            trial_seconds=2.0, prepare_seconds=0.1)

    table = sweep.format_budget_table({
        "gmf": result("gmf", 0.3, {"test_hr@10 (full)": 0.25, "test_num_users (full)": 943}),
        "mlp": result("mlp", 0.2, {"test_ndcg@100 (full)": 0.125, "test_mrr@10 (full)": 0.5})})
    header, _, gmf, mlp = table.splitlines()
    # Counts and secondary metrics stay in budget_table.json only.
    assert header.endswith("| test_hr@10 (full) | test_ndcg@100 (full) |")
    assert gmf.startswith("| gmf | random | 2 | 2.0 | `{\"x\": 1}` | val_ndcg@10 0.4000 |")
    assert gmf.endswith("| 0.2500 | - |") and mlp.endswith("| - | 0.1250 |")


@pytest.mark.slow
def test_sweep_script_gives_each_model_the_same_budget(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "sweep.py"),
         f"--config={REPO / 'configs' / 'ncf_tiny.py'}", "--models=gmf,mlp",
         '--space={"optimizer.lr": [0.001, 0.01, 0.03]}', "--search=random", "--budget=1",
         f"--output_dir={tmp_path / 'out'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = json.loads((tmp_path / "out" / "budget_table.json").read_text())
    assert list(table) == ["gmf", "mlp"]
    for name, result in table.items():
        assert result["model"] == name and result["budget"]["trials"] == 1
        # Same space, budget and seed: the same trials for every model.
        assert [t["overrides"] for t in result["trials"]] == [
            t["overrides"] for t in table["gmf"]["trials"]]
        saved = json.loads((tmp_path / "out" / name / "best" / "config.json").read_text())
        assert saved["model"]["name"] == name
    assert "| gmf | random | 1 |" in (tmp_path / "out" / "budget_table.md").read_text()


def test_a_run_without_test_writes_nothing_and_has_no_test_metrics(tmp_path):
    config = _tiny("mf_tiny")
    config.training.epochs = 1
    run = train_and_evaluate(config, None, test=False)
    assert run.summary["best_val"] > 0 and not any(k.startswith("test") for k in run.summary)
    with pytest.raises(ValueError, match="pass workdir=None"):
        train_and_evaluate(config, tmp_path / "run", test=False)
    assert not (tmp_path / "run").exists()
