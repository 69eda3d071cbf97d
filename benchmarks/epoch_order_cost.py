r"""Times each epoch's row permutation: XLA's sort against ``steps.epoch_order``.

Usage:
  python -m benchmarks.epoch_order_cost --num_rows=80000,800000 \
      --output_dir=workdirs/epoch_order_cost

Every training epoch visits its rows in the order ``jax.random.permutation(shuffle_key(key,
epoch), n)``. Drawn by XLA inside the compiled epoch, that permutation is two stable sorts of n
random 32-bit keys; ``steps.epoch_order`` computes the same permutation with NumPy's sort when
JAX runs on the CPU. This script times both on the default device, checks that they agree, and
prints a Markdown table (written with the JSON to ``output_dir``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import app, flags

from benchmarks import harness
from recsys_jax.console import quiet_startup
from recsys_jax.retrieval.latency import measure_latency
from recsys_jax.training import steps

_NUM_ROWS = flags.DEFINE_list("num_rows", ["80000", "800000"],
                              "Row counts (ML-100K and ML-1M training splits are ~80k / ~800k).")
_REPETITIONS = flags.DEFINE_integer("repetitions", 11, "Timed calls per method (median).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "workdirs/epoch_order_cost", "Output directory.")


def _median_ms(draw: Callable[[int], Any], repetitions: int) -> float:
    # One epoch per call; the first call compiles (XLA) or warms the caches and is not timed.
    stats = measure_latency(lambda epoch: jax.block_until_ready(draw(epoch)),
                            range(1, repetitions + 1), warmup=1)
    return stats.p50_ms


def measure(num_rows: int, repetitions: int) -> dict[str, Any]:
    """Median ms of one epoch's permutation by XLA and by ``steps.epoch_order``."""
    key = jax.random.key(0)
    xla = jax.jit(lambda epoch: jax.random.permutation(steps.shuffle_key(key, epoch), num_rows))
    agree = all(np.array_equal(np.asarray(xla(epoch)),
                               np.asarray(steps.epoch_order(key, epoch, num_rows)))
                for epoch in (1, 2))
    xla_ms = _median_ms(xla, repetitions)
    library_ms = _median_ms(lambda epoch: steps.epoch_order(key, epoch, num_rows), repetitions)
    return {"num_rows": num_rows, "xla_permutation_ms": xla_ms, "epoch_order_ms": library_ms,
            "speed_up": xla_ms / library_ms, "same_permutation": agree}


def format_markdown(rows: list[dict[str, Any]], env: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    lines = [f"{harness.cpu_line(env)}, {env['cpu_count']} CPUs, jax "
             f"{env['versions'].get('jax', '?')}; medians.", "",
             "| rows | `jax.random.permutation` in XLA (ms) | `steps.epoch_order` (ms) | "
             "speed-up | same permutation |",
             "|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['num_rows']:,} | {r['xla_permutation_ms']:.2f} | "
                     f"{r['epoch_order_ms']:.2f} | {r['speed_up']:.1f}× | "
                     f"{'yes' if r['same_permutation'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    quiet_startup()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    sizes = [int(n) for n in _NUM_ROWS.value]
    if not sizes or min(sizes) <= 0 or _REPETITIONS.value <= 0:
        raise app.UsageError("--num_rows must list positive integers and --repetitions be > 0")
    rows = [measure(n, _REPETITIONS.value) for n in sizes]
    env = harness.environment(device=True)
    markdown = format_markdown(rows, env)
    print(markdown)
    harness.write_results(_OUTPUT_DIR.value, "epoch_order_cost",
                          {"rows": rows, "environment": env}, markdown)


if __name__ == "__main__":
    app.run(main)
