"""experiments/epoch_order_cost.py end to end on small row counts."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_epoch_order_cost_reports_both_methods_and_their_agreement(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "epoch_order_cost.py"),
         "--num_rows=1000,3000", "--repetitions=2", f"--output_dir={tmp_path}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "epoch_order_cost.json").read_text())
    assert [r["num_rows"] for r in result["rows"]] == [1000, 3000]
    for row in result["rows"]:
        assert row["same_permutation"] is True
        assert row["xla_permutation_ms"] > 0 and row["epoch_order_ms"] > 0
        assert row["speed_up"] == pytest.approx(row["xla_permutation_ms"] / row["epoch_order_ms"])
    markdown = (tmp_path / "epoch_order_cost.md").read_text()
    assert "| 3,000 |" in markdown and proc.stdout.strip() == markdown.strip()


def test_epoch_order_cost_rejects_bad_row_counts(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "epoch_order_cost.py"), "--num_rows=0",
         f"--output_dir={tmp_path}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "--num_rows" in proc.stderr
    assert not (tmp_path / "epoch_order_cost.json").exists()
