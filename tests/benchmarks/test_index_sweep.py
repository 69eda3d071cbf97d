"""index_sweep.benchmark_indexes on a tiny catalogue: one row per config, exact recall for flat."""

import subprocess
import sys

import numpy as np
from flax import nnx

from benchmarks.index_sweep import benchmark_indexes, markdown_table
from recsys_jax.models.two_tower import TwoTower
from recsys_jax.retrieval.index import IndexConfig


def test_benchmark_rows():
    rng = np.random.default_rng(0)
    model = TwoTower(rng.normal(size=(20, 3)).astype(np.float32),
                     rng.normal(size=(300, 4)).astype(np.float32), rngs=nnx.Rngs(0),
                     hidden_dim=8, dim=8)
    items = model.export_arrays()["item_embeddings"]
    configs = [IndexConfig("flat"), IndexConfig("ivf", nlist=4, nprobe=4),
               IndexConfig("ivf", nlist=4, nprobe=1), IndexConfig("hnsw", ef_search=50)]
    rows = benchmark_indexes(model, items, configs, query_users=np.arange(20), seen=None,
                             k=10, num_latency_queries=25, batch_size=5, num_batches=2)
    assert [r["index"] for r in rows] == [c.label() for c in configs]
    assert rows[0]["recall@10_vs_exact"] == 1.0 and rows[0]["build_s"] is None
    assert rows[1]["recall@10_vs_exact"] == 1.0  # nprobe = nlist: every cell scanned.
    assert rows[1]["build_s"] == rows[2]["build_s"]  # One IVF index, two nprobe settings.
    for r in rows:
        assert 0 < r["latency_p50_ms"] <= r["latency_p99_ms"] and r["batched_qps"] > 0
    assert markdown_table(rows, k=10).count("\n") == len(rows) + 1


def test_core_imports_neither_torch_nor_faiss_eagerly():
    code = ("import sys; import recsys_jax.retrieval.retriever, recsys_jax.retrieval.index, "
            "recsys_jax.tasks.retrieval, recsys_jax.data.text_embeddings, "
            "recsys_jax.models.registry; "
            "print(sorted(m for m in ('torch', 'sentence_transformers', 'faiss') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
