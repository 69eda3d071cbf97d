"""Peers as runs: implicit's models and the Keras-RS two-tower reach compare.py as run
directories, and the headline table reads the comparison. None of this needs keras or
implicit installed (the Keras-RS script imports Keras only inside its main)."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from benchmarks import harness, headline_table, kerasrs_peer, kerasrs_two_tower, peers_implicit
from recsys_jax.config_files import load_config_file
from recsys_jax.evaluation.results import PerUserMetrics
from recsys_jax.evaluation.runs import RunError, load_run
from recsys_jax.evaluation.sources import Embeddings, ScoreFunction
from recsys_jax.tasks.implicit import load_implicit_data


@pytest.fixture(scope="module")
def data():
    return load_implicit_data(load_config_file(str(harness.REPO_ROOT / "configs" / "ncf_tiny.py")))


def test_the_keras_script_imports_without_keras():
    # The suite runs without keras: the peer's module must import with NumPy alone.
    code = ("import sys, benchmarks.kerasrs_two_tower, benchmarks.kerasrs_peer; "
            "assert not {'keras', 'keras_rs'} & set(sys.modules), 'keras imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=harness.REPO_ROOT)


def test_numpy_ranking_metrics_by_hand():
    # 2 users × 4 items, dot products: user 0 scores items [4, 3, 2, 1], user 1 [1, 2, 3, 4].
    users = np.array([[1.0, 0.0], [0.0, 1.0]])
    items = np.array([[4.0, 1.0], [3.0, 2.0], [2.0, 3.0], [1.0, 4.0]])
    # User 0: item 0 excluded, target item 2 → items 1 above it → rank 1.
    # User 1: nothing excluded, target item 0 → items 1, 2, 3 above it → rank 3.
    m = kerasrs_two_tower.ranking_metrics(users, items, np.array([0]), np.array([0]),
                                          np.array([0, 1]), np.array([2, 0]), k=2)
    assert m["hr@2"] == pytest.approx(0.5)
    assert m["ndcg@2"] == pytest.approx((1 / np.log2(3)) / 2)
    m = kerasrs_two_tower.ranking_metrics(users, items, np.array([0]), np.array([0]),
                                          np.array([0, 1]), np.array([2, 0]), k=10)
    assert m["ndcg@10"] == pytest.approx((1 / np.log2(3) + 1 / np.log2(5)) / 2)


def test_item_probabilities_are_shares():
    q = kerasrs_two_tower.item_probabilities(np.array([0, 0, 2, 2, 2, 1]), 4)
    np.testing.assert_allclose(q, [2 / 6, 1 / 6, 3 / 6, 0], rtol=1e-6)


def test_kerasrs_split_out_and_vectors_back_as_a_run(tmp_path, data):
    path = kerasrs_peer.export_split(data, tmp_path)
    with np.load(path, allow_pickle=False) as f:
        np.testing.assert_array_equal(f["train_user"], data.train["user"])
        np.testing.assert_array_equal(f["val_item"], data.val["item"])
        assert str(f["split_fingerprint"]) == data.split_fingerprint
        assert int(f["num_items"]) == data.num_items
        assert not any("test" in k for k in f.files)  # the peer never sees the test part
    rng = np.random.default_rng(0)
    users = rng.normal(size=(data.num_users, 3)).astype(np.float32)
    items = rng.normal(size=(data.num_items, 3)).astype(np.float32)
    np.savez(tmp_path / "vectors.npz", user_embeddings=users, item_embeddings=items)
    result = {"split_fingerprint": data.split_fingerprint, "fit_time_s": 1.5,
              "chosen": {"dim": 3}, "trials": [{}, {}]}
    (tmp_path / "result.json").write_text(json.dumps(result))
    run = load_run(kerasrs_peer.import_run(data, tmp_path))
    np.testing.assert_array_equal(run.arrays["user_embeddings"], users)
    np.testing.assert_array_equal(run.arrays["item_embeddings"], items)
    assert run.seen_parts == ("train", "val")
    assert run.split_fingerprint == data.split_fingerprint
    assert run.metadata["fit_time_s"] == 1.5 and run.metadata["trials"] == 2

    (tmp_path / "result.json").write_text(json.dumps({**result, "split_fingerprint": "other"}))
    with pytest.raises(RunError, match="another split|not on this config"):
        kerasrs_peer.import_run(data, tmp_path)
    np.savez(tmp_path / "vectors.npz", user_embeddings=users[:-1], item_embeddings=items)
    (tmp_path / "result.json").write_text(json.dumps(result))
    with pytest.raises(RunError, match="users"):
        kerasrs_peer.import_run(data, tmp_path)


def test_implicit_rows_are_written_as_runs(tmp_path, data):
    rng = np.random.default_rng(1)
    users = rng.normal(size=(data.num_users, 4)).astype(np.float32)
    items = rng.normal(size=(data.num_items, 4)).astype(np.float32)
    scores = rng.normal(size=(data.num_users, data.num_items)).astype(np.float32)
    metrics = PerUserMetrics(users=np.arange(2), values={}, protocol="full")
    rows = [peers_implicit.Row("implicit BPR", "implicit", "train", metrics, 2.0, 3.0, {},
                               source=Embeddings(users, items)),
            peers_implicit.Row("implicit ItemKNN (cosine)", "implicit", "train+val", metrics,
                               0.5, 0.6, {"K": 5},
                               source=ScoreFunction(lambda u: scores[u], data.num_items)),
            peers_implicit.Row("EASE", "recsys_jax", "train+val", metrics, 1.0, 1.0, {})]
    written = peers_implicit.save_peer_runs(rows, tmp_path, data)
    assert set(written) == {"implicit BPR", "implicit ItemKNN (cosine)"}  # no source, no run
    bpr = load_run(tmp_path / "implicit_bpr")
    np.testing.assert_array_equal(bpr.arrays["user_embeddings"], users)
    assert bpr.seen_parts == ("train",) and bpr.metadata["fit_time_s"] == 2.0
    knn = load_run(tmp_path / "implicit_itemknn")
    np.testing.assert_array_equal(knn.arrays["scores"], scores)
    assert knn.seen_parts == ("train", "val")


def _comparison_rows(model, means, p):
    return [{"protocol": "full", "metric": m, "model": model, "baseline": "a", "mean": v,
             "ci_low": v - 0.01, "ci_high": v + 0.01, "delta": np.nan if p is None else -0.1,
             "p_ttest_holm": np.nan if p is None else p,
             "p_wilcoxon_holm": np.nan if p is None else p, "seen_parts": "train+val"}
            for m, v in zip(("hr@10", "ndcg@10", "hr@100"), means)]


def test_headline_rows_sorted_with_the_references_tests():
    full = pd.DataFrame(_comparison_rows("b", (0.1, 0.05, 0.5), 0.0004)
                        + _comparison_rows("a", (0.2, 0.1, 0.6), None)
                        + _comparison_rows("popularity", (0.08, 0.04, 0.3), 0.02))
    records = headline_table.headline(full, None, {"a": 3.0, "b": None}, "a")
    assert [r["model"] for r in records] == ["a", "b", "popularity"]
    assert records[0]["ndcg@10"]["p_holm"] is None and records[0]["fit_s"] == 3.0
    assert records[1]["hr@10"]["p_holm"] == 0.0004
    markdown = headline_table.to_markdown(records, "a")
    assert "(reference)" in markdown and "<0.001" in markdown and "0.020" in markdown
    comparison = {"models": {"popularity": {"ndcg@10": 0.9}, "a": {"ndcg@10": 0.1},
                             "b": {"ndcg@10": 0.2}}}
    assert headline_table.best_run(comparison, "ndcg@10") == "b"  # baselines never win
    assert headline_table.fit_seconds({"train_time_s": 4.0}) == 4.0
    assert headline_table.fit_seconds({"fit_time_s": 1.0, "train_time_s": 4.0}) == 1.0
