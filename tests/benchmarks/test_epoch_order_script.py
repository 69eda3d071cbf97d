"""benchmarks/epoch_order_cost.py end to end on small row counts."""

import json

import pytest

from tests.benchmarks.scripts import run_benchmark


@pytest.mark.slow
def test_epoch_order_cost_reports_both_methods_and_their_agreement(tmp_path):
    proc = run_benchmark("epoch_order_cost", "--num_rows=1000,3000", "--repetitions=2",
                         f"--output_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "epoch_order_cost.json").read_text())
    assert [r["num_rows"] for r in result["rows"]] == [1000, 3000]
    for row in result["rows"]:
        assert row["same_permutation"] is True
        assert row["xla_permutation_ms"] > 0 and row["epoch_order_ms"] > 0
        assert row["speed_up"] == pytest.approx(row["xla_permutation_ms"] / row["epoch_order_ms"])
    markdown = (tmp_path / "epoch_order_cost.md").read_text()
    assert "| 3,000 |" in markdown and proc.stdout.strip() == markdown.strip()
    assert markdown.startswith(f"CPU: {result['environment']['cpu']}, ")


@pytest.mark.slow
def test_epoch_order_cost_rejects_bad_row_counts(tmp_path):
    proc = run_benchmark("epoch_order_cost", "--num_rows=0", f"--output_dir={tmp_path}")
    assert proc.returncode != 0 and "--num_rows" in proc.stderr
    assert not (tmp_path / "epoch_order_cost.json").exists()
