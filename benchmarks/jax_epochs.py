"""Steady-state JAX training throughput, with compilation timed apart (``benchmarks.mf_epoch``).

Two ways of running the same epochs are timed:

* ``scan_epoch``: the library's path, one compiled call per epoch (``steps.make_train_epoch``)
  on device-resident data;
* ``step_loop``: the common alternative, a jitted step called from a Python loop with each
  batch sliced on the host and transferred (what a DataLoader-style loop does).

Both perform identical updates (same shuffles, same step keys); only dispatch differs.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from benchmarks import harness
from recsys_jax.training import steps as steps_lib
from recsys_jax.training.losses import LossFn

# Builds a fresh (model, optimizer): each timed mode donates its own copy of the state.
ModelFactory = Callable[[], tuple[nnx.Module, nnx.Optimizer]]


@dataclasses.dataclass
class EpochTiming:
    """Timings of one mode.

    Attributes:
      mode: ``scan_epoch`` or ``step_loop``.
      compile_s: seconds to compile the function(s), before the first timed epoch.
      epoch_times_s: wall time of each timed epoch (results waited for).
      num_rows: training ratings per epoch.
      steps_per_epoch: optimizer steps per epoch.
      final_loss: mean training loss of the last epoch (a check that both modes agree).
    """

    mode: str
    compile_s: float
    epoch_times_s: list[float]
    num_rows: int
    steps_per_epoch: int
    final_loss: float

    @property
    def median_epoch_s(self) -> float:
        """Median epoch time."""
        return statistics.median(self.epoch_times_s)

    @property
    def ratings_per_s(self) -> float:
        """Training ratings per second at the median epoch time."""
        return self.num_rows / self.median_epoch_s

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the derived figures."""
        return {**dataclasses.asdict(self), "median_epoch_s": self.median_epoch_s,
                "ratings_per_s": self.ratings_per_s,
                "steps_per_s": self.steps_per_epoch / self.median_epoch_s}


def time_scan_epochs(make_model: ModelFactory, loss_fn: LossFn,
                     train: Mapping[str, np.ndarray], *, batch_size: int, epochs: int,
                     seed: int = 0) -> EpochTiming:
    """Times ``epochs`` scanned epochs after an ahead-of-time compile."""
    model, optimizer = make_model()
    graphdef, state = nnx.split((model, optimizer))
    data = jax.device_put(dict(train))
    key = jax.random.key(seed)
    t0 = time.perf_counter()
    run_epoch = steps_lib.make_train_epoch(graphdef, loss_fn, batch_size).compile(
        state, data, key)
    compile_s = time.perf_counter() - t0
    times, metrics = [], None
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        state, metrics = run_epoch(state, data, key, np.int32(epoch))
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - t0)
    n = len(next(iter(train.values())))
    return EpochTiming("scan_epoch", compile_s, times, n,
                       steps_lib.steps_per_epoch(n, batch_size),
                       steps_lib.summarize_steps([jax.device_get(metrics)])["loss"])


def time_step_loop(make_model: ModelFactory, loss_fn: LossFn,
                   train: Mapping[str, np.ndarray], *, batch_size: int, epochs: int,
                   seed: int = 0) -> EpochTiming:
    """Times ``epochs`` epochs of a Python loop over a jitted step (host batches)."""
    model, optimizer = make_model()
    graphdef, state = nnx.split((model, optimizer))
    key = jax.random.key(seed)
    step = steps_lib.make_train_step(graphdef, loss_fn)
    n = len(next(iter(train.values())))
    order = np.asarray(steps_lib.epoch_order(key, 1, n))
    first = {k: v[0] for k, v in
             steps_lib.gather_batches(train, order[:batch_size], batch_size).items()}
    t0 = time.perf_counter()
    step = step.lower(state, first, key).compile()
    compile_s = time.perf_counter() - t0
    times, losses = [], []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        order = np.asarray(steps_lib.epoch_order(key, epoch, n))
        batches = steps_lib.gather_batches(train, order, batch_size)
        losses = []
        for s in range(batches["weight"].shape[0]):
            state, metrics = step(state, {k: v[s] for k, v in batches.items()}, key)
            losses.append(metrics)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
    return EpochTiming("step_loop", compile_s, times, n, steps_lib.steps_per_epoch(n, batch_size),
                       steps_lib.summarize_steps(jax.device_get(losses))["loss"])


def format_table(timings: list[EpochTiming], env: dict[str, Any] | None = None) -> str:
    """A Markdown table of the timings, under a line naming the CPU (``env``: the harness's
    ``environment(device=True)``, measured now when not given)."""
    env = env or harness.environment(device=True)
    lines = [harness.cpu_line(env) + f", jax {env['versions'].get('jax', '?')}.", "",
             "| mode | epochs | compile (s) | median epoch (s) | ratings/s | steps/s | "
             "last-epoch loss |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for t in timings:
        lines.append(f"| {t.mode} | {len(t.epoch_times_s)} | {t.compile_s:.2f} | "
                     f"{t.median_epoch_s:.3f} | {t.ratings_per_s:,.0f} | {t.steps_per_epoch / t.median_epoch_s:,.0f} | "  # noqa: E501
                     f"{t.final_loss:.4f} |")
    return "\n".join(lines)
