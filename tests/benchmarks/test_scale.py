"""benchmarks/scale.py: its cells, its capped epochs, its goal checks, and a tiny run end to end."""

import dataclasses
import json
import math

import numpy as np
import pytest

from benchmarks import scale
from benchmarks.scale_worker import capped_training_data, run_table_sweep, sweep_batches
from recsys_jax.config_files import load_config_file
from recsys_jax.tasks.base import TaskData
from recsys_jax.tasks.config_checks import check_config
from recsys_jax.tasks.rating_search import apply_overrides
from recsys_jax.tasks.registry import get_task
from tests.benchmarks.scripts import ROOT, run_benchmark

PLAN = dict(epochs=2, max_epoch_steps=None, table_rows=[1000, 4000], sweep_batch_size=64,
            sweep_steps_per_call=3, sweep_repetitions=2, threads=2)


def test_plan_sets_shape_batch_and_cap_per_workload():
    cells = scale.plan(["1m_items"], ["mf", "two_tower", "mf"], **PLAN)
    assert [c.workload for c in cells] == ["mf", "two_tower"]  # one cell per name
    mf, tower = (c.spec for c in cells)
    for spec in (mf, tower):
        assert spec["overrides"] | {
            "data.dataset": "synthetic", "data.num_users": 200_000,
            "data.num_items": 1_000_000, "data.num_interactions": 10_000_000,
            "split.name": "user_temporal", "training.epochs": 2,
            "training.patience": 0} == spec["overrides"]
    assert mf["overrides"]["training.batch_size"] == 1024
    assert tower["overrides"]["training.batch_size"] == 2048
    assert tower["overrides"]["features.titles"] is False
    # The dense recipe is capped by default, the two-tower runs full epochs.
    assert (mf["max_epoch_steps"], tower["max_epoch_steps"]) == (scale.DENSE_MAX_EPOCH_STEPS,
                                                                 None)
    ml20m = scale.plan(["ml20m"], ["mf"], **PLAN)[0].spec["overrides"]
    assert "training.batch_size" not in ml20m  # the config's own batch
    for cap, expected in ((0, None), (7, 7)):
        cells = scale.plan(["tiny"], ["mf", "two_tower"], **{**PLAN, "max_epoch_steps": cap})
        assert [c.spec["max_epoch_steps"] for c in cells] == [expected, expected]


def test_set_overrides_go_on_top_of_the_workload_and_shape_in_workload_cells_only():
    extra = {"training.batch_size": 1024, "model.dim": 32}
    tower, = scale.plan(["1m_items"], ["two_tower"], **PLAN, extra_overrides=extra)
    assert tower.spec["overrides"]["training.batch_size"] == 1024  # the shape said 2048
    assert tower.spec["overrides"]["model.dim"] == 32
    assert tower.spec["overrides"]["features.titles"] is False  # the workload's stay
    sweep = scale.plan(["table_sweep"], ["mf"], **PLAN, extra_overrides=extra)
    assert all(c.spec["overrides"]["model.dim"] == 64 for c in sweep)  # the sweep's own


def test_plan_sweeps_only_the_mf_workloads_and_refuses_unknown_names():
    cells = scale.plan(["table_sweep"], ["two_tower", "mf"], **PLAN)
    assert [(c.workload, c.spec["table_rows"]) for c in cells] == [("mf", 1000), ("mf", 4000)]
    assert cells[0].spec["overrides"]["model.dim"] == 64
    with pytest.raises(ValueError, match="table_sweep times the MF step"):
        scale.plan(["table_sweep"], ["two_tower"], **PLAN)
    with pytest.raises(ValueError, match=r"unknown shapes or workloads \['huge', 'mf_sgd'\]"):
        scale.plan(["tiny", "huge"], ["mf_sgd"], **PLAN)


@pytest.mark.parametrize("workload", list(scale.WORKLOADS))
def test_every_workload_is_a_valid_config_on_every_shape(workload):
    for shape in scale.SHAPES:
        spec = scale.plan([shape], [workload], **PLAN)[0].spec
        config = apply_overrides(load_config_file(ROOT / spec["config"]), spec["overrides"])
        check_config(config, get_task(config).name)


def _task_data(n: int) -> TaskData:
    return TaskData(train={"user": np.arange(n, dtype=np.int32),
                           "item": np.arange(n, dtype=np.int32)[::-1].copy()},
                    num_users=n, num_items=n, dataset="d", split_protocol="random",
                    split_fingerprint="f", report_section="", train_tables={"t": np.ones(3)})


def test_capped_training_data_is_a_seeded_subset_in_order():
    data = _task_data(1000)
    capped, was_capped = capped_training_data(data, batch_size=10, max_epoch_steps=7, seed=3)
    users = capped.train["user"]
    assert was_capped and len(users) == 70 and len(np.unique(users)) == 70
    assert np.all(np.diff(users) > 0)  # original order kept
    assert np.array_equal(capped.train["item"], 999 - users)  # rows stay whole
    assert capped.train_tables is data.train_tables and capped.num_items == 1000
    again, _ = capped_training_data(data, batch_size=10, max_epoch_steps=7, seed=3)
    assert np.array_equal(again.train["user"], users)
    other, _ = capped_training_data(data, batch_size=10, max_epoch_steps=7, seed=4)
    assert not np.array_equal(other.train["user"], users)
    for cap in (None, 0, 100):  # no cap, or the epoch is short enough already
        assert capped_training_data(data, 10, cap) == (data, False)


def _run(shape, workload, task, **fields):
    return {"shape": shape, "workload": workload, "task": task, "optimizer_tables": "lazy_adam",
            "epoch_steps_capped": False, "steady_epoch_s": 10.0, "full_ranking_s": 20.0,
            "eval_users": 100, "peak_rss_mib": 1024.0, "train_rows_per_s": 1e6, **fields}


def _sweep(rows, rate, tables="lazy_adam"):
    return {"shape": "table_sweep", "workload": "mf_x", "table_rows": rows,
            "optimizer_tables": tables, "rows_per_s": rate}


def test_goal_rows_check_the_goals_against_known_figures():
    results = [
        _sweep(10_000, 5e6), _sweep(100_000, 1.2e6), _sweep(1_000_000, 0.9e6),
        _sweep(10_000_000, 0.5e6),  # 1.2 / 0.5 = 2.4x: outside 2x (10K rows is not counted)
        _run("ml20m", "mf_lazy_adam", "rating", steady_epoch_s=25.0),
        _run("ml20m", "mf", "rating", optimizer_tables="dense", epoch_steps_capped=True,
             peak_rss_mib=13 * 1024.0),
        _run("ml20m", "two_tower", "retrieval", steady_epoch_s=500.0, train_rows_per_s=3e4),
        _run("1m_items", "two_tower", "retrieval", train_rows_per_s=2e4),
        _run("ml20m", "two_tower_id_history", "retrieval", train_rows_per_s=3e4),
        _run("1m_items", "two_tower_id_history", "retrieval", train_rows_per_s=1e4),
        {"shape": "ml20m", "workload": "dot_mf", "error": "boom"},
    ]
    goals = {(g[0], g[1]): (g[2], g[3]) for g in scale.goal_rows(results)}
    assert goals[("MF sparse: rows/s from 100K to 10M rows within 2×", "mf_x")] == (
        "2.40× (500 K to 1.20 M)", "**no**")
    assert goals[("MF sparse: ≥ 0.8 M rows/s at 1M rows", "mf_x")] == ("900 K", "yes")
    assert goals[("MF sparse: ML-20M-shaped epoch ≤ 20 s", "ml20m/mf_lazy_adam")] == (
        "25.0 s", "**no**")
    assert goals[("Two-tower: ML-20M epoch ≤ 10 min", "ml20m/two_tower")] == ("500 s", "yes")
    assert goals[("Peak RSS ≤ 12 GiB for every ML-20M run", "ml20m/mf")] == ("13.00 GiB",
                                                                           "**no**")
    assert goals[("Full ranking, ML-20M's users × items ≤ 30 s", "ml20m/mf")][1] == "yes"
    assert goals[("Two-tower: rows/s at 1M items within 2× of 27K items",
                  "1m_items vs ml20m / two_tower")] == ("20 K vs 30 K (1.50×)", "yes")
    assert goals[("Two-tower: rows/s at 1M items within 2× of 27K items",
                  "1m_items vs ml20m / two_tower_id_history")] == ("10 K vs 30 K (3.00×)",
                                                                   "**no**")
    # A capped or dense run answers no epoch goal; a failed cell answers nothing.
    assert not any(cell in ("ml20m/mf", "ml20m/dot_mf") and "epoch" in goal
                   for goal, cell in goals)
    assert len(goals) == 15  # sweep 2; each ml20m run 2, + 1 epoch goal if uncapped sparse; 1
    assert scale.goal_rows([_sweep(1_000_000, 1e7, tables="dense")]) == []


@pytest.mark.slow
def test_tiny_scale_run_reports_every_field_in_worker_processes(tmp_path):
    out = tmp_path / "out"
    proc = run_benchmark("scale", "--shapes=tiny", "--workloads=mf,two_tower",
                         f"--work_dir={tmp_path}", f"--output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "scale.json").read_text())
    assert result["command"].startswith("python -m benchmarks.scale --shapes=tiny ")
    assert result["environment"]["cpu"] and result["finished"].startswith("2 of 2 cells")
    runs = {c["workload"]: c for c in result["cells"] if c["shape"] == "tiny"}
    assert set(runs) == {"mf", "two_tower"}
    for r in runs.values():
        assert r["num_users"] == 200 and r["num_items"] == 300 and r["split"] == "user_temporal"
        assert r["train_rows"] == r["full_train_rows"] > 3000 and not r["epoch_steps_capped"]
        assert len(r["epoch_times_s"]) == 2 and r["steady_epoch_s"] == r["epoch_times_s"][1]
        assert math.isclose(r["train_rows_per_s"], r["train_rows"] / r["steady_epoch_s"])
        assert r["steps_per_epoch"] == math.ceil(r["train_rows"] / r["batch_size"])
        for field in ("prepare_s", "compile_s", "warmup_s", "steady_epoch_s", "val_eval_s",
                      "full_ranking_s", "import_s", "wall_s"):
            assert 0 < r[field] < r["process_s"], field
        assert 0 < r["eval_users"] <= 200 and r["eval_items"] == 300
        assert r["test_metrics"]["num_users"] == r["eval_users"]
        assert 0 < r["peak_rss_after_prepare_mib"] <= r["peak_rss_after_training_mib"] \
            <= r["peak_rss_mib"]
        assert r["environment"]["backend"] == "cpu"
    assert runs["mf"]["batch_size"] == 256 and runs["two_tower"]["batch_size"] == 2048
    tower = runs["two_tower"]
    assert tower["index_kind"] == "flat" and tower["index_recall@100_vs_exact"] == 1.0
    assert tower["index_recall_queries"] == tower["eval_users"]  # fewer than recall_queries
    assert 0 < tower["index_build_s"] < tower["export_s"]
    assert 0 < tower["retrieve_p50_ms"] <= tower["retrieve_p99_ms"]
    assert "index_build_s" not in runs["mf"]
    markdown = (out / "scale.md").read_text()
    assert "| tiny | two_tower | 200 × 300 |" in markdown and "Goals" not in markdown
    assert markdown.strip() in proc.stdout and "CPU: " in markdown
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the scratch directories are gone


def test_each_sweep_call_reads_its_own_random_rows():
    calls = sweep_batches(500, 700, steps=3, batch_size=64, calls=4, seed=2)
    assert len(calls) == 4
    for batches in calls:
        assert batches["user"].shape == batches["item"].shape == (3, 64)
        assert batches["user"].max() < 500 and batches["item"].max() < 700
        np.testing.assert_array_equal(batches["weight"], 1.0)
    # No call repeats another's rows (a repeated set would be read from the caches).
    items = {tuple(b["item"].reshape(-1)) for b in calls}
    assert len(items) == 4
    np.testing.assert_array_equal(calls[1]["item"],
                                  sweep_batches(500, 700, 3, 64, 2, seed=2)[1]["item"])


@pytest.mark.parametrize("workload,tables", [("mf", "dense"), ("mf_lazy_adam", "lazy_adam"),
                                             ("mf_rowwise_adagrad", "rowwise_adagrad")])
def test_table_sweep_times_the_mf_step_at_its_table_size(workload, tables):
    spec = scale.plan(["table_sweep"], [workload], **PLAN)[1].spec
    result = run_table_sweep(spec)
    assert (result["table_rows"], result["num_users"], result["num_items"]) == (4000, 2000, 2000)
    assert result["num_parameters"] == 4000 * 65 + 1  # rows × (dim 64 + bias) + the global mean
    assert (result["optimizer"], result["optimizer_tables"]) == ("adam", tables)
    assert len(result["call_s_all"]) == 2 and result["compile_s"] > 0
    assert result["call_s"] == np.median(result["call_s_all"])
    assert math.isclose(result["rows_per_s"], 3 * 64 / result["call_s"])
    assert math.isclose(result["steps_per_s"] * result["step_s"], 1)
    table = scale.sweep_table([{**result, "workload": workload, "spec": spec,
                                "peak_rss_mib": 1.0}])
    optimizer = "adam" if tables == "dense" else f"adam, tables {tables}"
    assert f"| 4,000 | {workload} | {optimizer} | {result['compile_s']:.2f} |" in table


@pytest.mark.slow
def test_a_failed_cell_is_recorded_with_its_error(tmp_path):
    good = scale.plan(["tiny"], ["mf"], **PLAN)[0]
    bad = dataclasses.replace(good, workload="broken",
                              spec={**good.spec, "config": "configs/no_such_config.py"})
    result = scale.run([bad], str(tmp_path), "python -m benchmarks.scale …", None)
    assert "no config file" in result["cells"][0]["error"]
    saved = json.loads((tmp_path / "scale.json").read_text())
    assert saved["cells"][0]["error"] == result["cells"][0]["error"]
    markdown = (tmp_path / "scale.md").read_text()
    assert "| tiny | broken | failed: FileNotFoundError: no config file" in markdown


def test_workload_table_says_when_an_epoch_was_capped():
    row = _run("ml20m", "mf", "rating", num_users=10, num_items=20, full_train_rows=5000,
               batch_size=256, prepare_s=1.0, compile_s=2.0, epoch_steps_capped=True,
               steps_per_epoch=2, full_steps_per_epoch=20, val_eval_s=0.5,
               data_on_device=True)
    table = scale.workload_table([row, {"shape": "tiny", "workload": "x", "error": "a\nb|c"}])
    assert "| ml20m | mf | 10 × 20 | 5,000 | 256 | 1.0 | 2.00 | 10.00 (2 of 20 steps) |" in table
    assert "| tiny | x | failed: b/c |" in table
    streamed = scale.workload_table([{**row, "data_on_device": False}])
    assert "| 1.0 | in epoch 1 | 10.00 (2 of 20 steps) |" in streamed
