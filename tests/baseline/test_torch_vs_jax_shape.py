"""``torch_vs_jax --shape``: the scale benchmark's workloads on its synthetic shapes, JAX against
the matching PyTorch variants, planned as ``benchmarks.scale`` plans them, and a tiny run end to
end."""

import json

import pytest
import torch  # noqa: F401  (collected only with the baseline extra, see conftest)

from benchmarks import scale, scale_shapes
from benchmarks.torch_baseline.runs import plan_runs, run_variants
from recsys_jax.config_files import sibling_config
from tests.benchmarks.scripts import ROOT, run_benchmark

PLAN = dict(config=None, shape="ml20m", epochs=None, max_epoch_steps=None)


def test_shape_runs_are_configured_as_the_scale_benchmark_configures_them():
    lazy, tower, dense = plan_runs(["mf_lazy_adam", "two_tower", "mf", "two_tower"], **PLAN)
    assert [(r.name, r.model, r.epochs) for r in (lazy, tower, dense)] == [
        ("ml20m_mf_lazy_adam", "mf", 2), ("ml20m_two_tower", "two_tower", 2),
        ("ml20m_mf", "mf", 2)]
    for run in (lazy, tower, dense):
        c = run.config
        assert (c.data.dataset, c.data.num_users, c.data.num_items, c.data.num_interactions,
                c.split.name) == ("synthetic", 138_493, 26_744, 20_000_263, "user_temporal")
        assert (c.training.epochs, c.training.patience) == (2, 0)
        # The same fields as the scale benchmark's cell of this workload sets.
        cell = scale.workload_cell("ml20m", run.workload, epochs=2, max_epoch_steps=None,
                                   threads=1)
        for field, value in cell.spec["overrides"].items():
            section, name = field.split(".")
            assert c[section][name] == value, field
        assert run.max_epoch_steps == cell.spec["max_epoch_steps"]
    assert lazy.config.optimizer.tables == "lazy_adam" and dense.config.optimizer.tables == "dense"
    assert tower.config.features.titles is False
    # The scale defaults: the dense recipe capped, the others full epochs; 0 = full, N = N.
    assert [r.max_epoch_steps for r in (lazy, tower, dense)] == [
        None, None, scale_shapes.DENSE_MAX_EPOCH_STEPS]
    for cap, expected in ((0, None), (7, 7)):
        runs = plan_runs(["mf", "two_tower"], **{**PLAN, "max_epoch_steps": cap})
        assert [r.max_epoch_steps for r in runs] == [expected, expected]
    batch = plan_runs(["mf", "two_tower"], **{**PLAN, "shape": "1m_items", "epochs": 3})
    assert [(r.config.training.batch_size, r.epochs) for r in batch] == [(1024, 3), (2048, 3)]


def test_without_a_shape_the_models_run_on_the_config():
    config = sibling_config(ROOT / "configs" / "mf_tiny.py", "mf_tiny")
    (run,) = plan_runs(["mf"], config=config, shape=None, epochs=4, max_epoch_steps=0)
    assert (run.name, run.model, run.config, run.epochs, run.max_epoch_steps) == (
        "mf", "mf", config, 4, None)


def test_plan_refuses_unknown_models_and_a_single_epoch_at_a_shape():
    with pytest.raises(ValueError, match=r"unknown models \['mf_lazy_adam'\]; available: mf"):
        plan_runs(["mf_lazy_adam"], **{**PLAN, "shape": None})
    with pytest.raises(ValueError, match=r"unknown models \['dot_mf'\]; available with --shape"):
        plan_runs(["dot_mf"], **PLAN)
    with pytest.raises(ValueError, match="at least 2"):
        plan_runs(["mf"], **{**PLAN, "epochs": 1})


def test_mf_variants_follow_the_tables_of_the_config():
    lazy, tower, dense = plan_runs(["mf_lazy_adam", "two_tower", "mf"], **PLAN)
    assert run_variants(lazy, None) == ["jax", "sparse"]
    assert run_variants(dense, None) == ["jax", "baseline", "tuned"]
    assert run_variants(tower, None) == ["jax", "baseline", "tuned"]
    requested = ["jax", "sparse", "tuned"]
    assert [run_variants(r, requested) for r in (lazy, tower, dense)] == [
        ["jax", "sparse"], ["jax", "tuned"], ["jax", "tuned"]]
    with pytest.raises(ValueError, match=r"ml20m_mf: --variants=jax,sparse leaves \['jax'\]"):
        run_variants(dense, ["jax", "sparse"])
    with pytest.raises(ValueError, match="needs jax"):
        run_variants(lazy, ["sparse"])


@pytest.mark.slow
def test_tiny_shape_end_to_end(tmp_path):
    """MF with lazy Adam against SparseAdam on the tiny shape: same data (one synthetic split,
    one capped subset), steady epochs, peak RSS per worker. (The two-tower at a shape takes the
    same path through the shape's config, tested above; its benchmark runs end to end in
    test_two_tower_training.py. Both here cost over a minute of CI.)"""
    proc = run_benchmark("torch_vs_jax", "--shape=tiny", "--models=mf_lazy_adam",
                         "--variants=jax,sparse", "--repetitions=1",
                         "--max_epoch_steps=5", "--bootstrap_resamples=200",
                         f"--output_dir={tmp_path}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    mf = json.loads((tmp_path / "benchmark_tiny_mf_lazy_adam.json").read_text())
    assert (mf["shape"], mf["workload"], set(mf["speed"])) == (
        "tiny", "mf_lazy_adam", {"jax", "sparse"})
    assert mf["command"].startswith("python -m benchmarks.torch_vs_jax --shape=tiny ")
    # 200 users × 300 items, 5,000 ratings split user_temporal: ~4,000 training ratings, an
    # epoch capped at 5 batches of 256.
    assert (mf["num_users"], mf["num_items"], mf["split"]) == (200, 300, "user_temporal")
    assert mf["epoch_steps_capped"] and mf["steps_per_epoch"] == 5
    assert mf["num_train"] == 5 * 256 < mf["full_num_train"]
    for variant, speed in mf["speed"].items():
        assert speed["epochs_trained"] == [2], variant
        assert speed["steady_epoch_s"] > 0 and speed["peak_rss_training_mib"] > 0, variant
        assert speed["examples_per_s"] == pytest.approx(
            mf["num_train"] / speed["steady_epoch_s"])
    assert mf["quality"]["sparse"]["test_rmse"][0] < 2.0
    markdown = (tmp_path / "benchmark_tiny_mf_lazy_adam.md").read_text()
    assert markdown.startswith("Shape `tiny`, workload `mf_lazy_adam`")
    assert "| PyTorch sparse (SparseAdam) |" in markdown and "epochs capped at 5 of" in markdown
