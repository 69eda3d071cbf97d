"""Multi-seed tables (recsys_jax.tasks.seed_runs): suites, plans, reuse of finished runs,
aggregation and the table, on the tiny NCF config."""

import json
from pathlib import Path

import pytest

from recsys_jax.config_files import load_config_file
from recsys_jax.tasks import seed_runs
from recsys_jax.tasks.run_identity import WorkdirError
from recsys_jax.tasks.seed_runs import Cell, PlannedRun, SuiteError

REPO = Path(__file__).resolve().parents[2]

SUITE = {
    "rows": [
        {"name": "gmf", "config": "configs/ncf_tiny.py", "overrides": {"model.name": "gmf"}},
        {"name": "neumf_pretrained", "label": "NeuMF, pretrained", "config": "configs/ncf_tiny.py",
         "overrides": {"model.name": "neumf",
                       "model.pretrained.gmf_workdir": "{root}/{split}/gmf/seed{seed}"}},
    ],
    "splits": ["leave_one_out", "user_temporal"],
    "metrics": {"HR@10": "test.full.hr@10"},
}


def _write(tmp_path, suite) -> Path:
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(suite))
    return path


def test_config_file_argument_after_colon():
    by_arg = load_config_file(REPO / "configs" / "mf_ml100k_tuned.py:global_temporal")
    direct = load_config_file(REPO / "configs" / "mf_ml100k_tuned.py", "global_temporal")
    assert by_arg.to_dict() == direct.to_dict()
    with pytest.raises(FileNotFoundError, match="no config file"):
        load_config_file(REPO / "configs" / "nope.py")


@pytest.mark.parametrize("change, message", [
    ({"colour": 1}, "unknown keys"),
    ({"metrics": {}}, "'metrics' is missing"),
    ({"rows": [{"name": "a"}]}, "row 0: expected keys"),
    ({"rows": [SUITE["rows"][0], SUITE["rows"][0]]}, "duplicate row names"),
])
def test_a_suite_that_cannot_describe_a_table_is_refused(tmp_path, change, message):
    with pytest.raises(SuiteError, match=message):
        seed_runs.load_suite(_write(tmp_path, {**SUITE, **change}))
    (tmp_path / "bad.json").write_text("{rows:")
    with pytest.raises(SuiteError, match="cannot read"):
        seed_runs.load_suite(tmp_path / "bad.json")


def test_plan_orders_split_row_seed_and_fills_placeholders(tmp_path):
    runs = seed_runs.plan_runs(seed_runs.load_suite(_write(tmp_path, SUITE)), [0, 3],
                               tmp_path / "out", config_dir=REPO)
    assert [(r.split, r.row, r.seed) for r in runs] == [
        (s, row, seed) for s in SUITE["splits"] for row in ("gmf", "neumf_pretrained")
        for seed in (0, 3)]
    last = runs[-1]
    assert last.workdir == tmp_path / "out" / "user_temporal" / "neumf_pretrained" / "seed3"
    assert last.config.split.name == "user_temporal" and last.config.training.seed == 3
    assert last.config.run_name == "neumf_pretrained"  # Its label in compare.py tables.
    assert last.config.model.pretrained.gmf_workdir == str(
        tmp_path / "out" / "user_temporal" / "gmf" / "seed3")
    # The split's own seed (its tie order) is untouched unless a suite names it.
    assert {r.config.split.seed for r in runs} == {0}
    both = seed_runs.plan_runs({**SUITE, "seed_fields": ["training.seed", "split.seed"]}, [2],
                               tmp_path, config_dir=REPO)
    assert {(r.config.training.seed, r.config.split.seed) for r in both} == {(2, 2)}
    with pytest.raises(KeyError, match="model.colour"):
        seed_runs.plan_runs({**SUITE, "rows": [{**SUITE["rows"][0],
                                                "overrides": {"model.colour": 1}}]},
                            [0], tmp_path, config_dir=REPO)


def test_cells_and_table_known_answers():
    rows = {"a": {"HR@10": Cell((0.1, 0.3)), "RMSE": Cell((1.0, 1.0)), "wall s": Cell((5, 7, 30))},
            "b": {"HR@10": Cell((0.25,)), "RMSE": Cell((0.9, 1.1)), "wall s": Cell((2,))}}
    assert rows["a"]["HR@10"].mean == pytest.approx(0.2)
    assert rows["a"]["HR@10"].std == pytest.approx(0.1414213562)  # sample std of 0.1, 0.3
    assert rows["b"]["HR@10"].std == 0.0
    table = seed_runs.format_table(rows, {"HR@10": "test_hr@10", "RMSE": "test_rmse"},
                                   {"b": "model B"})
    lines = table.splitlines()
    assert lines[0] == "| model | HR@10 | RMSE | wall s (median) |"
    # Higher HR is better, lower RMSE is better; both RMSE means are 1.0, so both are bold.
    assert lines[2] == "| a | 0.2000 ± 0.1414 | **1.0000 ± 0.0000** | 7 |"
    assert lines[3] == "| model B | **0.2500 ± 0.0000** | **1.0000 ± 0.1414** | 2 |"


def test_a_metric_may_name_several_paths_and_be_missing_for_some_rows():
    run = lambda row, seed: PlannedRun("loo", row, seed, Path("."), None)  # noqa: E731
    results = [(run("mf", 0), {"test": {"full": {"hr@10": 0.2}}, "total_wall_time_s": 3}),
               (run("mf", 1), {"test": {"full": {"hr@10": 0.4}}, "total_wall_time_s": 5}),
               (run("tt", 0), {"test_hr@10": 0.5, "total_wall_time_s": 9})]
    metrics = {"HR@10": ["test.full.hr@10", "test_hr@10"], "sampled": "test.sampled-99.hr@10"}
    with pytest.raises(KeyError, match="no run's summary has metric 'sampled'"):
        seed_runs.aggregate(results, metrics)
    results[0][1]["test"]["sampled-99"] = {"hr@10": 0.6}
    with pytest.raises(KeyError, match="loo/mf: metric 'sampled' missing for some seeds"):
        seed_runs.aggregate(results, metrics)
    results[1][1]["test"]["sampled-99"] = {"hr@10": 0.7}
    table = seed_runs.aggregate(results, metrics)["loo"]
    assert table["mf"]["HR@10"].values == (0.2, 0.4) and table["tt"]["HR@10"].values == (0.5,)
    assert table["tt"]["sampled"] is None
    lines = seed_runs.format_table(table, metrics).splitlines()
    assert lines[2] == "| mf | 0.3000 ± 0.1414 | **0.6500 ± 0.0707** | 4 |"
    assert lines[3] == "| tt | **0.5000 ± 0.0000** | — | 9 |"


def test_metric_value_names_a_missing_path():
    summary = {"test": {"sampled-99": {"hr@10": 0.5}}}
    assert seed_runs.metric_value(summary, "test.sampled-99.hr@10") == 0.5
    with pytest.raises(KeyError, match="missing 'full'"):
        seed_runs.metric_value(summary, "test.full.hr@10")


def test_finished_runs_are_read_not_retrained(tmp_path, monkeypatch):
    suite = {**SUITE, "splits": ["leave_one_out"],
             "rows": [SUITE["rows"][0], {"name": "dot_mf", "config": "configs/ncf_tiny.py",
                                         "overrides": {"model.name": "dot_mf"}}]}
    planned = seed_runs.plan_runs(suite, [0], tmp_path, config_dir=REPO)
    first = seed_runs.run_all(planned)
    table = seed_runs.aggregate(first, suite["metrics"])
    assert list(table["leave_one_out"]) == ["gmf", "dot_mf"]
    for (run, summary), row in zip(first, ("gmf", "dot_mf")):
        assert table["leave_one_out"][row]["HR@10"].values == (summary["test"]["full"]["hr@10"],)
        assert json.loads((run.workdir / "test_metrics.json").read_text()) == summary

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")
    monkeypatch.setattr(seed_runs, "train_and_evaluate", no_training)
    reused = []
    again = seed_runs.run_all(planned, on_run=lambda run, summary, r: reused.append(r))
    assert reused == [True, True] and [s for _, s in again] == [s for _, s in first]
    # Another configuration in the same workdir is an error, not a silent reuse.
    changed = PlannedRun(planned[0].split, planned[0].row, 0, planned[0].workdir,
                         load_config_file(REPO / "configs" / "ncf_tiny.py"))
    changed.config.optimizer.lr = 0.5
    with pytest.raises(WorkdirError, match="optimizer.lr"):
        seed_runs.run_all([changed])
