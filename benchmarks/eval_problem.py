"""The synthetic full-ranking problem of ``benchmarks.eval_throughput`` and its timing (compile
time kept apart)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from benchmarks import harness
from recsys_jax.evaluation.evaluate import EvaluationTarget, evaluate_ranking, target_from_arrays
from recsys_jax.evaluation.ranking import RankingStats
from recsys_jax.evaluation.sources import Embeddings


@dataclasses.dataclass(frozen=True)
class BenchmarkProblem:
    """Random embeddings plus a target: ``train_per_user`` excluded items, one held out.

    ``target_s`` is the time ``target_from_arrays`` took to build the target from the pairs.
    """

    source: Embeddings
    target: EvaluationTarget
    target_s: float = 0.0


def synthetic_problem(num_users: int, num_items: int, dim: int, *, train_per_user: int = 20,
                      seed: int = 0) -> BenchmarkProblem:
    """Gaussian embeddings; each user has up to ``train_per_user`` training items (excluded
    from ranking) and one different held-out item; no validation part."""
    rng = np.random.default_rng(seed)
    users = rng.standard_normal((num_users, dim), dtype=np.float32)
    items = rng.standard_normal((num_items, dim), dtype=np.float32)
    drawn = rng.integers(0, num_items, size=(num_users, train_per_user + 1))
    held_out = drawn[:, 0]
    train_items = drawn[:, 1:]
    keep = train_items != held_out[:, None]  # a held-out item is never also a training item
    train_users = np.repeat(np.arange(num_users), train_per_user).reshape(train_items.shape)
    no_pairs = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    t0 = time.perf_counter()
    target = target_from_arrays((train_users[keep], train_items[keep]), no_pairs,
                                (np.arange(num_users), held_out), num_users, num_items)
    return BenchmarkProblem(source=Embeddings(users, items), target=target,
                            target_s=time.perf_counter() - t0)


def benchmark_full_ranking(num_users: int, num_items: int, dim: int, ks: Sequence[int], *,
                           train_per_user: int = 20, chunk_size: int | None = None,
                           selections: Sequence[str | None] = (None,), repeats: int = 1,
                           seed: int = 0) -> list[dict[str, Any]]:
    """Times ``evaluate_ranking`` (full protocol) on a synthetic problem, once per selection
    (``full_ranking``'s; None: the backend's default) in every repeat, the selections taking
    turns so that a change in machine load reaches all of them.

    Returns:
      Per selection: sizes, ``target_s`` (building the target from the pairs, once), chunking,
      ``compile_s`` (the ranking kernel's ahead-of-time
      compile, paid once per shape), and per repeat ``rank_s`` (top-K over all users),
      ``metrics_s`` (ranking and beyond-accuracy metrics) and ``total_s`` (both, compilation
      excluded), ``cpu_s`` (the process's CPU seconds over the evaluation, every thread, any
      compile included: steadier than wall time on a shared machine); the best repeat's
      figures at the top level, ``median_total_s`` and ``median_cpu_s`` over the repeats;
      ``users_per_s`` is num_users / best total_s.
    """
    t0 = time.perf_counter()
    problem = synthetic_problem(num_users, num_items, dim, train_per_user=train_per_user,
                                seed=seed)
    setup_s = time.perf_counter() - t0
    runs: dict[str | None, list[dict[str, float]]] = {s: [] for s in selections}
    compile_s: dict[str | None, float] = {}
    stats: dict[str | None, RankingStats] = {}
    mean_ndcg: dict[str | None, float] = {}
    for _ in range(repeats):
        for selection in selections:
            stats[selection] = RankingStats()
            t0, cpu0 = time.perf_counter(), time.process_time()
            result = evaluate_ranking(problem.source, problem.target, ks, chunk_size=chunk_size,
                                      selection=selection, stats=stats[selection])
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            compile_s.setdefault(selection, stats[selection].compile_seconds)
            total = wall - stats[selection].compile_seconds
            runs[selection].append({"rank_s": stats[selection].rank_seconds,
                                    "metrics_s": total - stats[selection].rank_seconds,
                                    "total_s": total, "cpu_s": cpu})
            mean_ndcg[selection] = result.mean(f"ndcg@{max(ks)}")
    out = []
    for selection in selections:
        best = min(runs[selection], key=lambda r: r["total_s"])
        out.append({
            "num_users": num_users, "num_items": num_items, "dim": dim, "ks": list(ks),
            "train_per_user": train_per_user, "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()], "selection": stats[selection].selection,
            "chunk_size": stats[selection].chunk_size, "num_chunks": stats[selection].num_chunks,
            "exclusion_pad": stats[selection].exclusion_pad, "setup_s": setup_s,
            "target_s": problem.target_s,
            "compile_s": compile_s[selection], "repeats": runs[selection], **best,
            "median_total_s": float(np.median([r["total_s"] for r in runs[selection]])),
            "median_cpu_s": float(np.median([r["cpu_s"] for r in runs[selection]])),
            "users_per_s": num_users / best["total_s"],
            "rank_users_per_s": num_users / best["rank_s"],
            # This process's own peak (not ru_maxrss, which carries a parent's over fork and
            # exec).
            "peak_rss_gib": (harness.peak_rss_mib() or float("nan")) / 1024,
            "mean_ndcg": mean_ndcg[selection],
        })
    return out
