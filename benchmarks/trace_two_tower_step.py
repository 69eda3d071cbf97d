r"""Where one two-tower training step spends its time at a scale shape: an XLA op profile.

Usage (from the repository root; the shapes are ``benchmarks.scale.SHAPES``):
  python -m benchmarks.trace_two_tower_step --shape=ml20m_20th --output_dir=workdirs/trace_tt
  python -m benchmarks.trace_two_tower_step --shape=1m_items --set=data.num_users=20000 \
      --set=data.num_interactions=1000000 \
      --variant=model.history_source=id_embedding,optimizer.tables=lazy_adam

Builds the ``two_tower`` workload of ``benchmarks.scale`` on the shape through the task's own
code (``task.prepare``, the model, optimizer and loss the runner builds), compiles the engine's
scanned steps (``steps.make_train_steps``) on ``--steps`` real batches of the training pairs
with the task's per-step tables, for the base config and each ``--variant`` (model and
optimizer settings on the same prepared data), times ``--repetitions`` calls of each,
interleaved (a shared machine's load then falls on all alike), then runs ``--traced`` calls
under ``jax.profiler.trace`` and sums the trace's complete ("X") events by name. XLA fusions
appear by their HLO names; each is mapped to the JAX operations it holds through the
compiled program's ``op_name`` metadata. Prints the step time and the top ops as Markdown.
"""

from __future__ import annotations

import collections
import gzip
import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from absl import app, flags

from benchmarks import harness

# Its flags (--output_dir among them) are defined once, on import; this script reuses that one.
from benchmarks.scale import BENCHMARK_OVERRIDES, SHAPES, WORKLOADS

_SHAPE = flags.DEFINE_string("shape", "ml20m_20th", "A shape of benchmarks.scale.SHAPES.")
_SET = flags.DEFINE_multi_string("set", [], "Config overrides KEY=VALUE on top of the "
                                 "two_tower workload (values parsed as Python literals).")
_VARIANT = flags.DEFINE_multi_string(
    "variant", [], "Another model/optimizer setting to time on the same data, as comma-separated "
    "KEY=VALUE overrides on top of the base (e.g. model.history_source=id_embedding,"
    "optimizer.tables=lazy_adam); the base and every variant are timed interleaved.")
_STEPS = flags.DEFINE_integer("steps", 8, "Batches per timed call (one lax.scan).")
_REPETITIONS = flags.DEFINE_integer("repetitions", 3, "Timed calls after a warm-up call.")
_TRACED = flags.DEFINE_integer("traced", 1, "Calls run under the profiler.")
_TOP = flags.DEFINE_integer("top", 25, "Ops listed.")


def fusion_ops(hlo_text: str) -> dict[str, str]:
    """HLO instruction name → its JAX op (``metadata={op_name=...}``) and output shape."""
    ops = {}
    for line in hlo_text.splitlines():
        head = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ", line)
        op = re.search(r'op_name="([^"]+)"', line)
        if head and op:
            # The scanned step's prefix says nothing; the output shape tells the ops apart.
            path = re.sub(r"^jit\([^)]*\)/(while/body/)?(closed_call/)?", "", op.group(1))
            ops.setdefault(head.group(1), f"{path} → {head.group(2).split('{')[0]}")
    return ops


def trace_totals(trace_dir: Path) -> dict[str, float]:
    """Microseconds per event name, summed over the ``*.trace.json.gz`` files' "X" events of
    the XLA CPU/GPU threads (host Python frames left out)."""
    totals: dict[str, float] = collections.defaultdict(float)
    for path in trace_dir.rglob("*.trace.json.gz"):
        with gzip.open(path, "rt") as f:
            trace = json.load(f)
        for event in trace.get("traceEvents", []):
            if event.get("ph") == "X" and "dur" in event:
                totals[event["name"]] += float(event["dur"])
    return dict(totals)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from recsys_jax.console import quiet_startup
    quiet_startup()
    import jax
    import numpy as np
    from flax import nnx

    from recsys_jax.config_files import load_config_file
    from recsys_jax.tasks.config_checks import check_config
    from recsys_jax.tasks.rating_search import apply_overrides
    from recsys_jax.tasks.registry import get_task
    from recsys_jax.training import steps as steps_lib
    from recsys_jax.training.optimizers import make_model_optimizer

    shape, workload = SHAPES[_SHAPE.value], WORKLOADS["two_tower"]
    overrides = {**workload.overrides, **shape.overrides(), **BENCHMARK_OVERRIDES}
    if "two_tower" in shape.batch_size:
        overrides["training.batch_size"] = shape.batch_size["two_tower"]
    overrides.update(harness.parse_overrides(_SET.value))
    config = apply_overrides(load_config_file(harness.REPO_ROOT / workload.config), overrides)
    variants = {"base": config}
    for text in _VARIANT.value:  # Model/optimizer settings on the same prepared data.
        variants[text] = apply_overrides(config, harness.parse_overrides(text.split(",")))
    task = get_task(config)
    for variant in variants.values():
        check_config(variant, task.name)
    t0 = time.perf_counter()
    data = task.prepare(config, None)
    prepare_s = time.perf_counter() - t0
    batch_size, steps = config.training.batch_size, _STEPS.value
    n = len(data.train["user"])
    order = np.random.default_rng(0).permutation(n)[:steps * batch_size].astype(np.int32)
    batches = jax.device_put(steps_lib.gather_batches(data.train, order, batch_size))
    tables = jax.device_put(data.train_tables) or None
    key = jax.random.key(0)
    runs = {}
    for name, variant in variants.items():
        model = task.build_model(variant, data)
        optimizer, _ = make_model_optimizer(model, variant.optimizer, steps_per_epoch=steps,
                                            num_epochs=1)
        graphdef, state = nnx.split((model, optimizer))
        del model, optimizer
        lowered = steps_lib.make_train_steps(graphdef, task.loss(variant, data)).lower(
            state, batches, key, tables)
        t0 = time.perf_counter()
        runs[name] = {"compiled": lowered.compile(), "state": state,
                      "compile_s": time.perf_counter() - t0, "times": []}

    def call(run: dict[str, Any]) -> float:
        t0 = time.perf_counter()
        run["state"], metrics = run["compiled"](run["state"], batches, key, tables)
        jax.block_until_ready(metrics["loss"])
        return time.perf_counter() - t0

    for run in runs.values():
        call(run)  # Warm-up.
    # Interleaved, so a shared machine's changing load falls on every variant alike.
    for _ in range(_REPETITIONS.value):
        for run in runs.values():
            run["times"].append(call(run))
    sections, result = [], {"shape": _SHAPE.value, "overrides": overrides,
                            "prepare_s": prepare_s, "variants": {}}
    for name, run in runs.items():
        with tempfile.TemporaryDirectory() as tmp:
            with jax.profiler.trace(tmp, create_perfetto_trace=True):
                for _ in range(_TRACED.value):
                    call(run)
            totals = trace_totals(Path(tmp))
        ops = fusion_ops(run["compiled"].as_text())
        # Only XLA's instructions (named in the program) count towards the op table.
        xla = {op: us / (_TRACED.value * steps) for op, us in totals.items() if op in ops}
        xla_total = sum(xla.values())
        top = sorted(xla.items(), key=lambda kv: -kv[1])[:_TOP.value]
        rows = [[op, f"{us / 1e3:.2f}", f"{100 * us / max(xla_total, 1e-9):.1f}%",
                 f"`{ops[op]}`"] for op, us in top]
        step_ms = 1e3 * float(np.median(run["times"])) / steps
        sections += [
            f"**{name}**: step {step_ms:.1f} ms (median of {_REPETITIONS.value} interleaved "
            f"calls of {steps} steps); XLA ops in the trace {xla_total / 1e3:.1f} ms per step; "
            f"compile {run['compile_s']:.1f} s", "",
            harness.markdown_table(["op", "ms / step", "share", "JAX op (metadata)"], rows,
                                   "lrrl"), ""]
        result["variants"][name] = {
            "step_ms": step_ms, "call_s": run["times"], "compile_s": run["compile_s"],
            "ops_ms_per_step": {k: v / 1e3 for k, v in xla.items()},
            "op_names": {k: ops[k] for k in xla}}
    markdown = "\n".join([
        f"shape {_SHAPE.value} ({data.num_users:,} users × {data.num_items:,} items, {n:,} "
        f"training pairs), batch {batch_size}, overrides {_SET.value or 'none'}; prepare "
        f"{prepare_s:.1f} s", "", *sections])
    print(markdown)
    if flags.FLAGS["output_dir"].present:  # benchmarks.scale's flag; written only if given.
        harness.write_results(flags.FLAGS.output_dir, "trace_two_tower_step", result, markdown)


if __name__ == "__main__":
    app.run(main)
