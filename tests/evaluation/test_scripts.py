"""experiments/compare.py end to end (no network)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys_jax.data import ids, splits, synthetic
from recsys_jax.evaluation import runs

REPO = Path(__file__).resolve().parents[2]
SIZE = (120, 90, 2500)  # users, items, interactions of the synthetic data set


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "experiments" / script), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=300)


@pytest.mark.slow
def test_compare_script_with_a_run_and_a_run_on_another_split(tmp_path):
    encoded, mapping = ids.encode_dataset(synthetic.generate_synthetic(*SIZE, seed=0))
    split = splits.make_split(encoded.interactions, "leave_one_out")
    rng = np.random.default_rng(0)
    for name, fingerprint in (("good", split.fingerprint()), ("stale", "0" * 64)):
        runs.save_run(tmp_path / name, name=name, model="mf", dataset="synthetic",
                      seen_parts=("train",), split_fingerprint=fingerprint,
                      split_protocol="leave_one_out",
                      user_embeddings=rng.standard_normal((mapping.num_users, 4)),
                      item_embeddings=rng.standard_normal((mapping.num_items, 4)))
    common = ["--dataset=synthetic", f"--synthetic_size={','.join(map(str, SIZE))}",
              "--split=leave_one_out", "--k=5,10", "--n_resamples=100"]

    out = tmp_path / "out"
    done = _run("compare.py", *common, f"--runs={tmp_path / 'good'}", f"--output_dir={out}")
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out / "comparison_full.csv")
    assert table["model"].drop_duplicates().tolist() == ["popularity", "random", "good"]
    assert {"ndcg@10", "ild_genres@5", "coverage@10"} <= set(table["metric"])
    assert (out / "comparison_full.png").is_file() and (out / "comparison_rating.csv").is_file()
    summary = json.loads((out / "comparison_full.json").read_text())
    assert summary["split_fingerprint"] == split.fingerprint()
    assert "| ndcg@10 | good |" in done.stdout

    refused = _run("compare.py", *common, f"--runs={tmp_path / 'good'},{tmp_path / 'stale'}",
                   f"--output_dir={tmp_path / 'refused'}")
    assert refused.returncode != 0
    assert "refusing to compare runs made on a different split" in refused.stderr
    assert "stale" in refused.stderr and not (tmp_path / "refused").exists()



@pytest.mark.slow
def test_compare_script_outside_scores_labels_reference_and_information(tmp_path):
    encoded, mapping = ids.encode_dataset(synthetic.generate_synthetic(*SIZE, seed=0))
    split = splits.make_split(encoded.interactions, "leave_one_out")
    split_dir = tmp_path / "split"
    split.save(split_dir)
    scores = np.random.default_rng(0).standard_normal(
        (mapping.num_users, mapping.num_items)).astype(np.float32)
    runs.save_run(tmp_path / "saved", name="internal_name", model="mf", dataset="synthetic",
                  seen_parts=("train", "val"), split_fingerprint=split.fingerprint(),
                  scores=scores)
    np.save(tmp_path / "outside.npy", scores)
    common = ["--dataset=synthetic", f"--synthetic_size={','.join(map(str, SIZE))}",
              f"--split_dir={split_dir}", "--k=5,10", "--n_resamples=100",
              "--rating_baselines="]

    out = tmp_path / "out"
    done = _run("compare.py", *common, f"--runs=mine={tmp_path / 'saved'}",
                f"--scores=theirs={tmp_path / 'outside.npy'}", "--outside_seen_parts=train,val",
                "--reference=mine", f"--output_dir={out}")
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out / "comparison_full.csv")
    assert (table["baseline"] == "mine").all()
    rows = table.set_index(["model", "metric"])[["n_users", "mean", "ci_low", "ci_high"]]
    pd.testing.assert_frame_equal(rows.loc["mine"], rows.loc["theirs"])
    assert (table["seen_parts"] == "train+val").all()

    unknown = _run("compare.py", *common, f"--runs=mine={tmp_path / 'saved'}",
                   "--reference=internal", f"--output_dir={tmp_path / 'x'}")
    assert unknown.returncode != 0 and "['popularity', 'random', 'mine']" in unknown.stderr

    leak = _run("compare.py", *common, f"--runs={tmp_path / 'saved'}", "--part=val",
                f"--output_dir={tmp_path / 'y'}")
    assert leak.returncode != 0 and "on the val part" in leak.stderr
    assert "internal_name" in leak.stderr and not (tmp_path / "y").exists()
