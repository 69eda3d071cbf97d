"""experiments/train.py (retrieval task) end to end on configs/two_tower_tiny.py (no network)."""

import json

import numpy as np
import pytest

from recsys_jax.evaluation.runs import load_run
from recsys_jax.fileio import load_npy
from recsys_jax.retrieval import index as index_lib
from recsys_jax.tasks.retrieval import recall_sample
from tests.tasks.train_script import run_train


def test_recall_sample_takes_every_user_up_to_its_size_then_a_seeded_sample():
    users = np.array([9, 4, 7, 1, 3])
    np.testing.assert_array_equal(recall_sample(users, 5), users)  # all, in their order
    np.testing.assert_array_equal(recall_sample(users, 8), users)
    sample = recall_sample(np.arange(100, 1100), 50, seed=3)
    assert len(np.unique(sample)) == 50 and np.all(np.diff(sample) > 0)
    assert sample.min() >= 100 and sample.max() < 1100
    np.testing.assert_array_equal(sample, recall_sample(np.arange(100, 1100), 50, seed=3))
    assert not np.array_equal(sample, recall_sample(np.arange(100, 1100), 50, seed=4))


@pytest.mark.slow
def test_train_two_tower_end_to_end(tmp_path):
    workdir = tmp_path / "tt"
    proc = run_train("two_tower_tiny", workdir, "--config.loss.num_random_negatives=16",
                     "--config.index.kind=hnsw", "--config.serving.recall_queries=7")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test HR@100" in proc.stdout and "p99" in proc.stdout
    metrics = json.loads((workdir / "test_metrics.json").read_text())
    for key in ("test_hr@10", "test_hr@100", "test_recall@100", "test_ndcg@100"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["index"]["kind"].startswith("hnsw")
    # Recall against exact search over a sample of 7 of the test users (recall_sample).
    assert metrics["index"]["recall_queries"] == 7
    assert 0 < metrics["index"]["recall@100_vs_exact"] <= 1
    assert metrics["retrieve_latency_ms"]["p99_ms"] > 0
    items = load_npy(workdir / "item_embeddings.npy")
    np.testing.assert_allclose(np.linalg.norm(items, axis=1), 1.0, rtol=1e-5)
    index = index_lib.load_index(workdir / "index.faiss", num_items=len(items), dim=8)
    assert index.ntotal == len(items)
    run = load_run(workdir / "run")
    assert run.kind == "embeddings" and run.num_items == len(items)
    assert [json.loads(line)["epoch"] for line in
            (workdir / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    for name in ("features.npz", "test_features.npz", "model/state.npz", "report.md",
                 "learning_curve.png", "split/split.npz", "ids/item_ids.json"):
        assert (workdir / name).is_file(), name
