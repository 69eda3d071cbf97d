"""experiments/prepare_data.py --export_split end to end (no network)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.data.movielens_files import ML100K_RATINGS, write_ml100k

REPO = Path(__file__).resolve().parents[2]


def _prepare(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    data_dir = write_ml100k(tmp_path / "ml-100k")
    return subprocess.run(
        [sys.executable, str(REPO / "experiments" / "prepare_data.py"), "--dataset=ml-100k",
         f"--data_dir={data_dir}", f"--cache_dir={tmp_path / 'cache'}", *args],
        capture_output=True, text=True, cwd=REPO, timeout=300)


@pytest.mark.slow
def test_export_split_writes_raw_ids_of_every_event(tmp_path):
    out = tmp_path / "export"
    result = _prepare(tmp_path, "--split=leave_one_out", f"--export_split={out}",
                      "--tie_order=item_id")
    assert result.returncode == 0, result.stderr
    assert "Leakage report (leave_one_out): OK" in result.stdout  # the old output is kept
    table = pd.read_csv(out / "leave_one_out" / "interactions.csv")
    raw = {(u, i, r, t) for u, i, r, t in ML100K_RATINGS}
    assert set(zip(table["raw_user_id"], table["raw_item_id"], table["rating"],
                   table["timestamp"])) == raw
    # User 3 rated item 543 then item 1; user 2 rated 267 then 1412 (item 1412 is test).
    test = set(zip(table.loc[table["part"] == "test", "raw_user_id"],
                   table.loc[table["part"] == "test", "raw_item_id"]))
    assert test == {(1, 2), (2, 1412), (3, 1)}
    meta = json.loads((out / "leave_one_out" / "split.json").read_text())
    assert meta["params"] == {"tie_order": "item_id"} and len(meta["fingerprint"]) == 64


@pytest.mark.slow
def test_parquet_export_works_or_fails_before_any_work(tmp_path):
    """With pyarrow (the test extras have it) the export is written; without it the script
    stops before loading anything."""
    result = _prepare(tmp_path, "--split=random", f"--export_split={tmp_path / 'x'}",
                      "--export_format=parquet")
    if importlib.util.find_spec("pyarrow") is None:
        assert result.returncode != 0 and "needs pyarrow" in result.stderr
        assert "Users:" not in result.stdout and not (tmp_path / "x").exists()
        return
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_parquet(tmp_path / "x" / "random" / "interactions.parquet")
    assert len(table) == len(ML100K_RATINGS)
    assert set(table["part"]) == {"train", "val", "test"}
