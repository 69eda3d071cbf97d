r"""Scale on one machine: the library's own training, evaluation and serving at the field's data
sizes, one workload per fresh process.

Usage (from the repository root):
  python -m benchmarks.scale --output_dir=workdirs/scale          # every workload and shape
  python -m benchmarks.scale --shapes=ml20m --workloads=mf_lazy_adam
  python -m benchmarks.scale --shapes=table_sweep --workloads=mf,mf_lazy_adam \
      --table_rows=100000,1000000

A *workload* (``WORKLOADS``, defined in ``benchmarks.scale_shapes``) is a config users run plus
overrides: MF (``configs/mf_ml100k.py``) with the dense recipe or row-sparse tables
(``optimizer.tables``), implicit dot-product MF (``configs/ncf_ml100k.py``,
``model.name=dot_mf``, dim 64) likewise, and the two-tower (``configs/two_tower_ml100k.py``, no
title model, history tower on; ``two_tower_id_history`` with the history pooled from a learnt
per-item table under lazy Adam). A *shape* (``SHAPES``) sets
the synthetic generator's size and the split through the same config (``data.dataset=synthetic``)
and, where stated, the batch size. Each (shape, workload) cell is one real run of the task code in
``benchmarks.scale_worker``: ``task.prepare``, ``train_and_evaluate`` for ``--epochs`` epochs
(validation every epoch, nothing written), the full ranking of every test user over the
catalogue, and for the two-tower the task's FAISS index and ``retrieve`` latency. Reported per
cell: data generation + split time, compile time, steady epoch time (median over epochs 2..),
training rows/s (rows per epoch / steady epoch), validation and full-ranking times, index build
time and p99 latency (two-tower), and the cell's peak RSS.

``table_sweep`` is a shape of its own: the MF train step alone (the engine's compiled steps on
random batches drawn anew for every call, no data pipeline) at ``--table_rows`` table sizes,
dim 64, for each selected MF workload's optimizer.

Epochs that would take too long are capped (``--max_epoch_steps``; by default only the dense
recipes, whose every step updates the whole tables): a capped epoch trains on a seeded random
subset of ``max_epoch_steps × batch`` rows, so the step and the model are those of the full run
and only the number of steps differs; the table says so.

Writes ``scale.json`` (every figure, the environment, the command) and ``scale.md`` (the tables,
and the goals of issue 16 checked against the cells that ran) to ``--output_dir``, after every
cell, atomically. A failed cell is recorded with its error and the others still run; the exit
status is then 1.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from absl import app, flags

from benchmarks import harness

# The workloads and shapes live in a module without flags (``torch_vs_jax --shape`` uses them
# too); re-exported here as ``scale.WORKLOADS``, ``scale.SHAPES``, ….
from benchmarks.scale_shapes import (  # noqa: F401
    BENCHMARK_OVERRIDES,
    DENSE_MAX_EPOCH_STEPS,
    SHAPES,
    TABLE_SWEEP,
    WORKLOADS,
    Shape,
    Workload,
    workload_overrides,
)

DEFAULT_SHAPES = ("ml20m", "1m_items", TABLE_SWEEP)


_WORKLOADS = flags.DEFINE_list("workloads", list(WORKLOADS), f"Workloads: {list(WORKLOADS)}.")
_SHAPES = flags.DEFINE_list("shapes", list(DEFAULT_SHAPES),
                            f"Shapes: {list(SHAPES) + [TABLE_SWEEP]}.")
_EPOCHS = flags.DEFINE_integer("epochs", 2, "Epochs per workload run (at least 2: the first "
                               "compiles and warms up, the steady epoch is the median of the "
                               "others).")
_MAX_EPOCH_STEPS = flags.DEFINE_integer(
    "max_epoch_steps", None, "Steps per epoch at most (an epoch trains on a random subset of "
    "max_epoch_steps × batch rows); 0 runs full epochs everywhere. Default: "
    f"{DENSE_MAX_EPOCH_STEPS} for the dense recipes (mf, dot_mf), full epochs otherwise.")
_TABLE_ROWS = flags.DEFINE_list("table_rows", ["10000", "100000", "1000000", "10000000"],
                                "table_sweep: table sizes in rows (half users, half items).")
_SWEEP_BATCH = flags.DEFINE_integer("sweep_batch_size", 1024, "table_sweep: rows per step.")
_SWEEP_STEPS = flags.DEFINE_integer("sweep_steps_per_call", 50,
                                    "table_sweep: steps per timed call (one lax.scan).")
_SWEEP_REPETITIONS = flags.DEFINE_integer("sweep_repetitions", 5,
                                          "table_sweep: timed calls after one warm-up call.")
_WORK_DIR = flags.DEFINE_string("work_dir", None, "Where the workers' scratch directories go "
                                "(default: the system's temporary folder; the two-tower export "
                                "writes about 1.5 GB at 1M items).")
_SET = flags.DEFINE_multi_string("set", [], "Config overrides KEY=VALUE applied to every workload "
                                 "cell on top of its workload's and shape's (values parsed as "
                                 "Python literals), e.g. --set=training.batch_size=1024.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "workdirs/scale", "Output directory.")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One worker run: a workload on a shape, or one table size of the sweep."""

    shape: str
    workload: str
    spec: dict[str, Any]

    @property
    def label(self) -> str:
        rows = self.spec.get("table_rows")
        return f"{self.shape}/{self.workload}" + (f"/{rows:,} rows" if rows else "")


def workload_cell(shape_name: str, workload_name: str, *, epochs: int,
                  max_epoch_steps: int | None, threads: int,
                  extra_overrides: Mapping[str, Any] | None = None) -> Cell:
    """The worker task of ``workload_name`` on ``shape_name``.

    ``max_epoch_steps`` None takes the workload's default cap; 0 means full epochs.
    ``extra_overrides`` (``--set``) go on top of the workload's and the shape's.
    """
    workload = WORKLOADS[workload_name]
    overrides = {**workload_overrides(shape_name, workload_name, epochs=epochs),
                 **(extra_overrides or {})}
    cap = workload.max_epoch_steps if max_epoch_steps is None else max_epoch_steps
    return Cell(shape_name, workload_name, {
        "kind": "workload", "config": workload.config, "overrides": overrides,
        "max_epoch_steps": cap or None, "threads": threads})


def table_sweep_cell(workload_name: str, table_rows: int, *, batch_size: int,
                     steps_per_call: int, repetitions: int, threads: int) -> Cell:
    """The worker task of the MF step of ``workload_name`` at ``table_rows`` rows, dim 64."""
    workload = WORKLOADS[workload_name]
    return Cell(TABLE_SWEEP, workload_name, {
        "kind": TABLE_SWEEP, "config": workload.config,
        "overrides": {**workload.overrides, "model.dim": 64}, "table_rows": table_rows,
        "batch_size": batch_size, "steps_per_call": steps_per_call,
        "repetitions": repetitions, "threads": threads})


def plan(shapes: Sequence[str], workloads: Sequence[str], *, epochs: int,
         max_epoch_steps: int | None, table_rows: Sequence[int], sweep_batch_size: int,
         sweep_steps_per_call: int, sweep_repetitions: int, threads: int,
         extra_overrides: Mapping[str, Any] | None = None) -> list[Cell]:
    """Every cell to run, shape by shape in the given order.

    Raises:
      ValueError: for an unknown shape or workload, or a table sweep without an MF workload.
    """
    unknown = [s for s in shapes if s not in SHAPES and s != TABLE_SWEEP]
    unknown += [w for w in workloads if w not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown shapes or workloads {unknown}; shapes: "
                         f"{list(SHAPES) + [TABLE_SWEEP]}, workloads: {list(WORKLOADS)}")
    cells = []
    for shape in dict.fromkeys(shapes):
        if shape != TABLE_SWEEP:
            cells += [workload_cell(shape, w, epochs=epochs, max_epoch_steps=max_epoch_steps,
                                    threads=threads, extra_overrides=extra_overrides)
                      for w in dict.fromkeys(workloads)]
            continue
        swept = [w for w in dict.fromkeys(workloads) if WORKLOADS[w].table_sweep]
        if not swept:
            raise ValueError(f"{TABLE_SWEEP} times the MF step: select one of "
                             f"{[w for w, v in WORKLOADS.items() if v.table_sweep]}")
        cells += [table_sweep_cell(w, rows, batch_size=sweep_batch_size,
                                   steps_per_call=sweep_steps_per_call,
                                   repetitions=sweep_repetitions, threads=threads)
                  for w in swept for rows in table_rows]
    return cells


def run_cell(cell: Cell, work_dir: Path) -> dict[str, Any]:
    """Runs ``cell`` in a fresh worker; a failure is returned as ``{"error": ...}``."""
    t0 = time.perf_counter()
    try:
        result = harness.run_worker_process(cell.spec, work_dir,
                                            module="benchmarks.scale_worker")
    except RuntimeError as e:
        result = {"error": str(e)}
    return {"shape": cell.shape, "workload": cell.workload, "spec": cell.spec,
            "process_s": time.perf_counter() - t0, **result}


# --- Markdown ----------------------------------------------------------------------------

def _num(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def _rate(x: float | None) -> str:
    """Rows per second as ``1.23 M`` / ``456 K``."""
    if x is None:
        return "—"
    return f"{x / 1e6:.2f} M" if x >= 1e6 else f"{x / 1e3:,.0f} K"


def _epoch(r: Mapping[str, Any]) -> str:
    steady = _num(r["steady_epoch_s"])
    if r["epoch_steps_capped"]:
        return (f"{steady} ({r['steps_per_epoch']:,} of {r['full_steps_per_epoch']:,} "
                "steps)")
    return steady


def workload_table(results: Sequence[Mapping[str, Any]]) -> str:
    """The workload runs as a Markdown table (failed cells say so)."""
    header = ["shape", "workload", "users × items", "train rows", "batch", "prepare s",
              "compile s", "steady epoch s", "train rows/s", "val eval s",
              "full ranking s (users)", "index build s", "retrieve p99 ms", "peak RSS MiB"]
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["shape"], r["workload"], "failed: " + _last_line(r["error"])]
                        + ["—"] * (len(header) - 3))
            continue
        rows.append([
            r["shape"], r["workload"], f"{r['num_users']:,} × {r['num_items']:,}",
            f"{r['full_train_rows']:,}", r["batch_size"], _num(r["prepare_s"], 1),
            # Streamed from the host, the epoch compiles inside epoch 1 (in warmup_s).
            _num(r["compile_s"]) if r["data_on_device"] else "in epoch 1", _epoch(r),
            _rate(r["train_rows_per_s"]),
            _num(r["val_eval_s"]), f"{_num(r['full_ranking_s'])} ({r['eval_users']:,})",
            _num(r.get("index_build_s")), _num(r.get("retrieve_p99_ms")),
            harness.fmt_mib(r["peak_rss_mib"])])
    return harness.markdown_table(header, rows, "lll" + "r" * (len(header) - 3))


def sweep_table(results: Sequence[Mapping[str, Any]]) -> str:
    """The table sweep as a Markdown table."""
    header = ["table rows", "workload", "optimizer", "compile s", "step ms", "steps/s",
              "rows/s", "peak RSS MiB"]
    rows = []
    for r in results:
        rows_label = f"{r['spec']['table_rows']:,}"
        if "error" in r:
            rows.append([rows_label, r["workload"], "failed: " + _last_line(r["error"])]
                        + ["—"] * (len(header) - 3))
            continue
        optimizer = r["optimizer"] + ("" if r["optimizer_tables"] == "dense"
                                      else f", tables {r['optimizer_tables']}")
        rows.append([rows_label, r["workload"], optimizer, _num(r["compile_s"]),
                     _num(r["step_s"] * 1e3, 3), _num(r["steps_per_s"], 0),
                     _rate(r["rows_per_s"]), harness.fmt_mib(r["peak_rss_mib"])])
    return harness.markdown_table(header, rows, "rll" + "r" * (len(header) - 3))


def _last_line(error: str) -> str:
    """The error's last line (a worker's exception), fit for a table cell."""
    lines = [line for line in error.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "unknown error").replace("|", "/")[:160]


# --- Goals of issue 16 -------------------------------------------------------------------

MIB_PER_GIB = 1024.0


def _ok(results: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in results if "error" not in r]


def goal_rows(results: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """``[goal, cell, measured, met]`` for each goal the finished cells can answer."""
    runs = [r for r in _ok(results) if r["shape"] != TABLE_SWEEP]
    sweep = [r for r in _ok(results) if r["shape"] == TABLE_SWEEP]
    rows = []

    def add(goal: str, cell: str, measured: str, met: bool) -> None:
        rows.append([goal, cell, measured, "yes" if met else "**no**"])

    for workload in dict.fromkeys(r["workload"] for r in sweep):
        cells = {r["table_rows"]: r for r in sweep if r["workload"] == workload}
        if cells[next(iter(cells))]["optimizer_tables"] == "dense":
            continue
        span = {n: r["rows_per_s"] for n, r in cells.items() if 100_000 <= n <= 10_000_000}
        if 100_000 in span and 10_000_000 in span:
            spread = max(span.values()) / min(span.values())
            add("MF sparse: rows/s from 100K to 10M rows within 2×", workload,
                f"{spread:.2f}× ({_rate(min(span.values()))} to {_rate(max(span.values()))})",
                spread <= 2)
        if 1_000_000 in cells:
            rate = cells[1_000_000]["rows_per_s"]
            add("MF sparse: ≥ 0.8 M rows/s at 1M rows", workload, _rate(rate), rate >= 0.8e6)
    for r in runs:
        cell = f"{r['shape']}/{r['workload']}"
        sparse_mf = r["task"] == "rating" and r["optimizer_tables"] != "dense"
        if r["shape"] == "ml20m" and sparse_mf and not r["epoch_steps_capped"]:
            add("MF sparse: ML-20M-shaped epoch ≤ 20 s", cell, f"{r['steady_epoch_s']:.1f} s",
                r["steady_epoch_s"] <= 20)
        if r["shape"] == "ml20m" and r["task"] == "retrieval" and not r["epoch_steps_capped"]:
            add("Two-tower: ML-20M epoch ≤ 10 min", cell, f"{r['steady_epoch_s']:.0f} s",
                r["steady_epoch_s"] <= 600)
        if r["shape"] == "ml20m":
            add("Full ranking, ML-20M's users × items ≤ 30 s", cell,
                f"{r['full_ranking_s']:.1f} s ({r['eval_users']:,} users)",
                r["full_ranking_s"] <= 30)
            add("Peak RSS ≤ 12 GiB for every ML-20M run", cell,
                f"{r['peak_rss_mib'] / MIB_PER_GIB:.2f} GiB", r["peak_rss_mib"] <= 12 * MIB_PER_GIB)
    for workload in dict.fromkeys(r["workload"] for r in runs if r["task"] == "retrieval"):
        towers = {r["shape"]: r for r in runs if r["workload"] == workload}
        if "ml20m" not in towers or "1m_items" not in towers:
            continue
        ratio = towers["ml20m"]["train_rows_per_s"] / towers["1m_items"]["train_rows_per_s"]
        add("Two-tower: rows/s at 1M items within 2× of 27K items",
            f"1m_items vs ml20m / {workload}",
            f"{_rate(towers['1m_items']['train_rows_per_s'])} vs "
            f"{_rate(towers['ml20m']['train_rows_per_s'])} ({ratio:.2f}×)", ratio <= 2)
    return rows


def format_markdown(result: Mapping[str, Any]) -> str:
    """The setup line, the tables and the goals."""
    env, cells = result["environment"], result["cells"]
    workers = [c["environment"] for c in _ok(cells)]
    device = (f"; JAX {workers[0]['jax']} on {workers[0]['backend']} "
              f"({workers[0]['device']})" if workers else "")
    lines = [f"`{result['command']}`", "",
             f"{harness.cpu_line(env)}, {env['cpu_count']} CPUs, {env['platform']}{device}; "
             f"one fresh process per cell; {result['finished']}.", ""]
    runs = [c for c in cells if c["shape"] != TABLE_SWEEP]
    sweep = [c for c in cells if c["shape"] == TABLE_SWEEP]
    if runs:
        lines += ["Workload runs: steady epoch = median over epochs 2.. (capped epochs give "
                  "their steps of the full epoch's), rows/s = training rows per epoch / steady "
                  "epoch, full ranking = every test user over the whole catalogue, peak RSS "
                  "of the cell's process.", "", workload_table(runs), ""]
    if sweep:
        lines += ["MF train step alone (engine's compiled steps, random batches on the "
                  "device, new ones for every call): median of timed calls after a warm-up "
                  "call.", "",
                  sweep_table(sweep), ""]
    goals = goal_rows(cells)
    if goals:
        lines += ["Goals of issue 16 (only those the cells above answer):", "",
                  harness.markdown_table(["goal", "cell", "measured", "met"], goals, "llrl"),
                  ""]
    return "\n".join(lines)


def run(cells: Sequence[Cell], output_dir: str, command: str, work_dir: str | None,
        on_cell: Callable[[Mapping[str, Any]], None] = lambda r: None) -> dict[str, Any]:
    """Runs every cell in its own worker, writing the results after each one."""
    env = harness.environment()
    result: dict[str, Any] = {"command": command, "environment": env, "cells": []}
    with tempfile.TemporaryDirectory(prefix="scale.", dir=work_dir) as tmp:
        for i, cell in enumerate(cells):
            cell_result = run_cell(cell, Path(tmp) / f"cell-{i}")
            result["cells"].append(cell_result)
            result["finished"] = (f"{len(result['cells'])} of {len(cells)} cells, "
                                  f"{time.strftime('%Y-%m-%d %H:%M')}")
            harness.write_results(output_dir, "scale", result, format_markdown(result))
            on_cell(cell_result)
    return result


def _report(cell: Mapping[str, Any]) -> None:
    what = f"{cell['shape']}/{cell['workload']}"
    if "table_rows" in cell["spec"]:
        what += f" at {cell['spec']['table_rows']:,} rows"
    status = ("failed: " + _last_line(cell["error"]) if "error" in cell
              else f"done in {cell['process_s']:.0f} s")
    print(f"{what}: {status}", flush=True)


def main(argv: list[str]) -> None:
    from recsys_jax.console import quiet_startup
    quiet_startup()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _EPOCHS.value < 2:
        raise app.UsageError("--epochs must be at least 2 (epoch 1 compiles and warms up)")
    if (_MAX_EPOCH_STEPS.value or 0) < 0:
        raise app.UsageError("--max_epoch_steps must be >= 0")
    try:
        table_rows = [int(n) for n in _TABLE_ROWS.value]
    except ValueError as e:
        raise app.UsageError(f"--table_rows must be integers: {e}") from e
    if min(table_rows + [_SWEEP_BATCH.value, _SWEEP_STEPS.value, _SWEEP_REPETITIONS.value]) < 2:
        raise app.UsageError("--table_rows, --sweep_batch_size, --sweep_steps_per_call and "
                             "--sweep_repetitions must be at least 2")
    try:
        cells = plan(_SHAPES.value, _WORKLOADS.value, epochs=_EPOCHS.value,
                     max_epoch_steps=_MAX_EPOCH_STEPS.value, table_rows=table_rows,
                     sweep_batch_size=_SWEEP_BATCH.value,
                     sweep_steps_per_call=_SWEEP_STEPS.value,
                     sweep_repetitions=_SWEEP_REPETITIONS.value,
                     threads=harness.default_threads(),
                     extra_overrides=harness.parse_overrides(_SET.value))
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    command = "python -m benchmarks.scale " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    result = run(cells, _OUTPUT_DIR.value, command, _WORK_DIR.value, on_cell=_report)
    print(format_markdown(result))
    failed = [c for c in result["cells"] if "error" in c]
    if failed:
        print(f"{len(failed)} of {len(cells)} cells failed; their errors are in "
              f"{Path(_OUTPUT_DIR.value) / 'scale.json'}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
