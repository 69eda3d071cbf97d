"""Index sweep: build time, memory, recall@K against exact search and latency of FAISS
indexes over one catalogue (used by ``benchmarks.retrieval_indexes``).

For one catalogue (a trained ``TwoTower`` and its item embeddings) and several index configs:

* build seconds and serialised index size;
* recall@K of the index's top-K against exact inner-product search (``IndexFlatIP``) for the
  same query users;
* single-query latency of ``Retriever.retrieve(user_id, k)`` — user tower, search and removal of
  seen items, one user at a time — as p50/p95/p99;
* batched throughput (queries per second) of ``retrieve`` on batches of user ids.

Search parameters (IVF ``nprobe``, HNSW ``ef_search``) that share a built index are swept on
that one index rather than rebuilt.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from absl import logging
from flax import nnx

from recsys_jax.retrieval import index as index_lib
from recsys_jax.retrieval.index import IndexConfig
from recsys_jax.retrieval.latency import measure_latency, measure_throughput
from recsys_jax.retrieval.retriever import Retriever


def _build_key(config: IndexConfig) -> tuple:
    # Settings that change the built index (search-time ones excluded).
    return (config.kind, config.nlist, config.train_size, config.hnsw_m,
            config.ef_construction, config.use_gpu, config.seed, config.centered,
            config.quantizer)


def benchmark_indexes(model: nnx.Module, item_vectors: np.ndarray, configs: Sequence[IndexConfig],
                      *, query_users: np.ndarray, seen: sp.csr_array | None, k: int = 100,
                      num_latency_queries: int = 1000, batch_size: int = 256,
                      num_batches: int = 8, seed: int = 0) -> list[dict[str, Any]]:
    """One result row per config (see the module docstring for the columns).

    Args:
      model: the ``TwoTower`` whose user tower encodes the queries.
      item_vectors: ``[num_items, d]`` item embeddings of ``model``.
      configs: the indexes to measure.
      query_users: user ids to draw queries from.
      seen: CSR of items to exclude per user (None: nothing excluded).
      k: list length.
      num_latency_queries: timed single queries (after 20 untimed warm-up calls).
      batch_size, num_batches: batched-throughput setting.
      seed: query sampling seed.
    """
    rng = np.random.default_rng(seed)
    recall_users = rng.choice(query_users, min(1000, len(query_users)), replace=False)
    latency_users = rng.choice(query_users, num_latency_queries, replace=True)
    batches = [rng.choice(query_users, batch_size, replace=True) for _ in range(num_batches)]

    exact_index = index_lib.build_index(item_vectors, IndexConfig("flat"))
    probe = Retriever(model, exact_index, seen=None)
    queries = probe.encode_user_ids(recall_users)
    t0 = time.perf_counter()
    exact_ids = index_lib.search(exact_index, queries, k)[1]
    logging.info("exact top-%d of %d queries in %.1fs", k, len(queries), time.perf_counter() - t0)

    rows, built = [], {}
    for config in configs:
        key = _build_key(config)
        if key not in built:
            if key == _build_key(IndexConfig("flat")):  # The exact index is already built.
                index, build_s = exact_index, None
            else:
                t0 = time.perf_counter()
                index = index_lib.build_index(item_vectors, config)
                build_s = time.perf_counter() - t0
            built[key] = (index, build_s, index_lib.index_memory_bytes(index))
        index, build_s, memory = built[key]
        index_lib.set_search_params(index, config)
        approx_ids = index_lib.search(index, queries, k)[1]
        retriever = Retriever(model, index, seen=seen)
        latency = measure_latency(lambda u: retriever.retrieve(int(u), k), list(latency_users))
        qps = measure_throughput(lambda b: retriever.retrieve(b, k), batches, batch_size)
        row = {"index": config.label(), "num_items": len(item_vectors),
               "dim": int(item_vectors.shape[1]), "build_s": build_s,
               "memory_mib": memory / 2**20,
               f"recall@{k}_vs_exact": index_lib.recall_at_k(approx_ids, exact_ids),
               **{f"latency_{name}": v for name, v in latency.to_dict().items()},
               "batched_qps": qps, "batch_size": batch_size}
        logging.info("%s", row)
        rows.append(row)
    return rows


def markdown_table(rows: Sequence[dict[str, Any]], k: int = 100) -> str:
    """The rows as a Markdown table."""
    lines = [f"| catalogue | index | build (s) | memory (MiB) | recall@{k} vs exact | "
             "p50 (ms) | p95 (ms) | p99 (ms) | batched queries/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        build = "—" if r["build_s"] is None else f"{r['build_s']:.1f}"
        lines.append(
            f"| {r.get('catalogue', '')} ({r['num_items']:,} items) | {r['index']} | {build} | "
            f"{r['memory_mib']:.1f} | {r[f'recall@{k}_vs_exact']:.4f} | "
            f"{r['latency_p50_ms']:.2f} | {r['latency_p95_ms']:.2f} | "
            f"{r['latency_p99_ms']:.2f} | {r['batched_qps']:,.0f} |")
    return "\n".join(lines)


def as_dicts(configs: Sequence[IndexConfig]) -> list[dict[str, Any]]:
    """Configs as JSON-ready dicts."""
    return [dataclasses.asdict(c) for c in configs]
