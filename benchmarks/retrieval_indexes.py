r"""Retrieval latency and recall: ML-100K (a trained two-tower workdir) and a 1M-item catalogue.

Usage:
  python -m benchmarks.retrieval_indexes --ml100k_workdir=workdirs/tt_loo_logq \
      --output_dir=workdirs/benchmark_retrieval
  python -m benchmarks.retrieval_indexes --ml100k_workdir= --num_items=200000 \
      --output_dir=/tmp/bench   # synthetic catalogue only, smaller

For each catalogue and index (flat = exact, IVF and HNSW with a sweep of their search
parameters): build time, index size, recall@100 against exact search, p50/p95/p99 latency of a
single ``retrieve(user_id, k=100)`` (user tower + search + seen-item removal) and batched
queries/s. The synthetic catalogue comes from ``recsys_jax.data.synthetic`` with towers trained
on it (see ``benchmarks.synthetic_catalogue``). Writes ``benchmark.{json,md}`` (with the
CPU model and versions).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from absl import app, flags, logging

from benchmarks import harness
from benchmarks.index_sweep import benchmark_indexes, markdown_table
from benchmarks.synthetic_catalogue import train_synthetic_catalogue
from recsys_jax.console import quiet_startup
from recsys_jax.data.features import TwoTowerFeatures
from recsys_jax.data.splits import Split
from recsys_jax.evaluation.interactions import binary_union, interaction_matrix
from recsys_jax.fileio import load_npy
from recsys_jax.models.registry import load_model
from recsys_jax.retrieval.index import IndexConfig, default_nlist

_ML100K = flags.DEFINE_string("ml100k_workdir", "workdirs/tt_loo_logq",
                              "Two-tower workdir of experiments/train.py on ML-100K "
                              "(empty: skip).")
_NUM_ITEMS = flags.DEFINE_integer("num_items", 1_000_000, "Synthetic catalogue size (0: skip).")
_NUM_USERS = flags.DEFINE_integer("num_users", 20_000, "Synthetic users.")
_NUM_EVENTS = flags.DEFINE_integer("num_interactions", 2_000_000, "Synthetic events.")
_EPOCHS = flags.DEFINE_integer("epochs", 2, "Training epochs of the synthetic towers.")
_NPROBES = flags.DEFINE_list("nprobe", ["16", "32", "64"], "IVF cells searched.")
_QUANTIZERS = flags.DEFINE_list("ivf_quantizer", ["radius"],
                                "IVF coarse quantizers (radius: the default, cells probed by "
                                "u.c + radius_weight * cell radius; l2: probed by L2 distance; "
                                "ip: the first recipe, spherical k-means probed by inner "
                                "product).")
_RADIUS_WEIGHTS = flags.DEFINE_list("radius_weight", ["0.5"],
                                    "Radius weights of the radius-probed IVF (search time: "
                                    "one index per nlist).")
_EF_SEARCH = flags.DEFINE_list("ef_search", ["64", "128", "256"], "HNSW beam widths.")
_HNSW_M = flags.DEFINE_integer("hnsw_m", 32, "HNSW links per node.")
_EF_CONSTRUCTION = flags.DEFINE_integer("ef_construction", 80, "HNSW build beam width.")
_QUERIES = flags.DEFINE_integer("num_queries", 1000, "Timed single queries per index.")
_BATCH = flags.DEFINE_integer("batch_size", 256, "Queries per batch for throughput.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "workdirs/benchmark_retrieval", "Output dir.")


def _configs(num_items: int) -> list[IndexConfig]:
    nlist = default_nlist(num_items)
    return ([IndexConfig("flat")]
            + [IndexConfig("ivf", nlist=nlist, nprobe=int(p), quantizer=q,
                           radius_weight=float(w))
               for q in _QUANTIZERS.value
               for w in (_RADIUS_WEIGHTS.value if q == "radius" else ["0.5"])
               for p in _NPROBES.value if p]
            + [IndexConfig("hnsw", hnsw_m=_HNSW_M.value, ef_construction=_EF_CONSTRUCTION.value,
                           ef_search=int(e)) for e in _EF_SEARCH.value if e])


def _ml100k_rows(workdir: Path) -> list[dict]:
    features = TwoTowerFeatures.load(workdir / "test_features.npz")
    model = load_model(workdir / "model", features=features)
    split = Split.load(workdir / "split")
    n_users, n_items = features.user.shape[0], features.item.shape[0]
    seen = binary_union(*(interaction_matrix(p["user_id"].to_numpy(), p["item_id"].to_numpy(),
                                             n_users, n_items) for p in (split.train, split.val)))
    rows = benchmark_indexes(model, load_npy(workdir / "item_embeddings.npy"),
                             _configs(n_items), query_users=np.arange(n_users), seen=seen,
                             num_latency_queries=_QUERIES.value, batch_size=_BATCH.value)
    return [{"catalogue": "ML-100K", **r} for r in rows]


def _synthetic_rows(output_dir: Path) -> list[dict]:
    catalogue = train_synthetic_catalogue(
        num_users=_NUM_USERS.value, num_items=_NUM_ITEMS.value,
        num_interactions=_NUM_EVENTS.value, workdir=output_dir / "synthetic_towers",
        epochs=_EPOCHS.value)
    logging.info("synthetic towers: val recall@100 %s", catalogue.val_recall)
    rows = benchmark_indexes(catalogue.model, catalogue.item_vectors,
                             _configs(_NUM_ITEMS.value),
                             query_users=np.arange(catalogue.model.num_users),
                             seen=catalogue.seen, num_latency_queries=_QUERIES.value,
                             batch_size=_BATCH.value)
    return [{"catalogue": "synthetic", "towers_val_recall@100": catalogue.val_recall, **r}
            for r in rows]


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_startup()
    output_dir = Path(_OUTPUT_DIR.value)
    output_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    if _ML100K.value:
        rows += _ml100k_rows(Path(_ML100K.value))
    if _NUM_ITEMS.value:
        rows += _synthetic_rows(output_dir)
    env = harness.environment(device=True)
    env["load_average"] = os.getloadavg()
    table = harness.cpu_line(env) + ".\n\n" + markdown_table(rows)
    harness.write_results(output_dir, "benchmark", {"environment": env, "rows": rows},
                          table + "\n")
    print(table)


if __name__ == "__main__":
    app.run(main)
