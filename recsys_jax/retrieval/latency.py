"""Latency and throughput of a query function, measured with ``time.perf_counter``."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Per-call wall times in milliseconds over ``n`` timed calls (after warm-up)."""

    n: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def measure_latency(fn: Callable[[Any], Any], queries: Sequence[Any], *,
                    warmup: int = 20) -> LatencyStats:
    """Calls ``fn(q)`` for each query one at a time; the first ``warmup`` calls (compilation,
    caches) are run but not timed."""
    for q in queries[:warmup]:
        fn(q)
    times = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t0) * 1e3)
    t = np.asarray(times)
    return LatencyStats(n=len(t), p50_ms=float(np.percentile(t, 50)),
                        p95_ms=float(np.percentile(t, 95)), p99_ms=float(np.percentile(t, 99)),
                        mean_ms=float(t.mean()), max_ms=float(t.max()))


def measure_throughput(fn: Callable[[Any], Any], batches: Sequence[Any], batch_size: int, *,
                       warmup: int = 1) -> float:
    """Queries per second of ``fn`` over ``batches`` of ``batch_size`` queries each."""
    for b in batches[:warmup]:
        fn(b)
    t0 = time.perf_counter()
    for b in batches:
        fn(b)
    return len(batches) * batch_size / (time.perf_counter() - t0)
