"""One cell of the scale benchmark in a fresh interpreter:
``python -m benchmarks.scale_worker TASK.json OUT_DIR`` (launched by
``harness.run_worker_process`` from ``benchmarks.scale``).

A fresh process per cell, so each cell's peak RSS is its own (``VmHWM`` from
``/proc/self/status``: ``ru_maxrss`` carries the parent's peak over fork and exec). The task
says what to run:

* ``"workload"``: a real run of the library's task code on the config a user runs, with the
  orchestrator's overrides: ``task.prepare`` (data generation, encoding, split, features), then
  ``runner.train_and_evaluate(..., data=, test=False)`` (model, the engine's ``loop.fit`` with
  per-epoch validation; nothing written), then the full ranking of the test part's users over
  the catalogue with the suite's ``evaluate_ranking`` (the retrieval task: its own
  ``evaluate``), and for the retrieval task its ``export`` into a scratch directory (FAISS index
  build, recall against exact search and ``Retriever.retrieve`` latency, which the task
  measures itself). With ``max_epoch_steps`` an epoch trains on a seeded random subset of
  ``max_epoch_steps × batch_size`` training rows: the same compiled step on the full-size
  model, fewer steps.
* ``"table_sweep"``: the MF train step alone, no data pipeline: the MF model built through the
  registry with ``table_rows`` rows (half users, half items), its optimizer as the runner
  builds it (``make_model_optimizer``: dense or row-sparse tables), the engine's
  ``steps.make_train_steps`` (a ``lax.scan`` over stacked batches, as a streamed epoch runs) on
  random batches already on the device; compiled apart, then the median of timed calls after a
  warm-up call.

Writes ``OUT_DIR/result.json``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import harness

if TYPE_CHECKING:  # NumPy loads after the worker has set its thread variables.
    import numpy as np

# Cut-offs of the timed full ranking of the rating and implicit models (the retrieval task
# ranks with its own TEST_KS); the top-K list is as long as the largest.
RANKING_KS = (10, 100)


def capped_training_data(data: Any, batch_size: int, max_epoch_steps: int | None,
                         seed: int = 0) -> tuple[Any, bool]:
    """``(data, capped)``: ``data`` itself when an epoch has at most ``max_epoch_steps``
    batches (or no cap is set), else a copy whose training columns are a seeded random subset
    of ``max_epoch_steps * batch_size`` rows, in their original order.

    The subset changes how many steps an epoch has, not what a step computes: the model, its
    tables, the per-step tables (``train_tables``) and the validation and test parts stay
    whole. What a task's loss derives from the training rows (the implicit task's positive
    set, the retrieval task's logQ frequencies) comes from the subset.
    """
    import numpy as np

    from recsys_jax.data.columns import num_rows
    n = num_rows(data.train)
    if not max_epoch_steps or n <= max_epoch_steps * batch_size:
        return data, False
    keep = np.sort(np.random.default_rng(seed).choice(n, max_epoch_steps * batch_size,
                                                      replace=False))
    return dataclasses.replace(data, train={k: np.asarray(v)[keep]
                                            for k, v in data.train.items()}), True


def test_target(task_name: str, data: Any) -> Any:
    """The suite's evaluation target of the test part (train, and val, excluded)."""
    if task_name == "rating":  # RatingData keeps columns, not the split's frames.
        import numpy as np

        from recsys_jax.evaluation.evaluate import target_from_arrays
        parts = [tuple(np.asarray(p[c]) for c in ("user", "item", "rating"))
                 for p in (data.train, data.val, data.test)]
        return target_from_arrays(*parts, data.num_users, data.num_items, "test")
    return data.target("test")


def full_ranking(task: Any, config: Any, data: Any, model: Any) -> tuple[float, dict[str, Any]]:
    """``(seconds, facts)`` of ranking every test user over the whole catalogue.

    The retrieval task's own ``evaluate`` (test users encoded from their test inputs, then the
    suite's full ranking); for the other tasks the suite's ``evaluate_ranking`` on the model's
    ``score_source`` at ``RANKING_KS``, as the implicit task's test does (its fold-in refit, a
    training cost, is not run). Both include building the test target.
    """
    from recsys_jax.evaluation.evaluate import evaluate_ranking
    from recsys_jax.evaluation.validators import score_source
    t0 = time.perf_counter()
    if task.name == "retrieval":
        facts = task.evaluate(config, data, model)
        seconds = time.perf_counter() - t0
        metrics = {k.removeprefix("test_"): v for k, v in facts.items()
                   if k.startswith("test_") and isinstance(v, (int, float))}
        return seconds, {"eval_users": metrics["num_users"], "test_metrics": metrics,
                         "test_user_inputs": facts["test_user_inputs"]}
    target = test_target(task.name, data)
    result = evaluate_ranking(score_source(model), target, RANKING_KS)
    seconds = time.perf_counter() - t0
    return seconds, {"eval_users": len(result.users), "test_metrics": result.summary()}


def serve(task: Any, config: Any, data: Any, model: Any, evaluation: Mapping[str, Any],
          scratch: Path) -> dict[str, Any]:
    """The retrieval task's ``export`` into ``scratch`` (removed afterwards): its FAISS index
    build time, recall@100 against exact search and ``retrieve`` latency."""
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        facts = task.export(config, data, model, scratch,
                            {"test_user_inputs": evaluation["test_user_inputs"]})
        export_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    latency = facts["retrieve_latency_ms"]
    return {"export_s": export_s, "index_kind": facts["index"]["kind"],
            "index_build_s": facts["index"]["build_s"],
            "index_recall@100_vs_exact": facts["index"]["recall@100_vs_exact"],
            "index_recall_queries": facts["index"]["recall_queries"],
            "retrieve_p50_ms": latency["p50_ms"], "retrieve_p99_ms": latency["p99_ms"],
            "retrieve_queries": latency["n"],
            "retrieve_batched_qps": facts["retrieve_batched_qps"]}


def run_workload(spec: Mapping[str, Any], work_dir: Path) -> dict[str, Any]:
    """One workload on one shape; see the module docstring."""
    from recsys_jax.config_files import load_config_file
    from recsys_jax.tasks.config_checks import check_config
    from recsys_jax.tasks.rating_search import apply_overrides
    from recsys_jax.tasks.registry import get_task
    from recsys_jax.tasks.runner import train_and_evaluate
    from recsys_jax.training.steps import steps_per_epoch

    config = apply_overrides(load_config_file(harness.REPO_ROOT / spec["config"]),
                             spec["overrides"])
    task = get_task(config)
    check_config(config, task.name)  # Before minutes of data generation.
    batch_size = config.training.batch_size

    t0 = time.perf_counter()
    full_data = task.prepare(config, None)
    prepare_s = time.perf_counter() - t0
    peak_prepare = harness.peak_rss_mib()
    full_rows = len(full_data.train["user"])
    data, capped = capped_training_data(full_data, batch_size, spec.get("max_epoch_steps"),
                                        seed=config.training.seed)

    t0 = time.perf_counter()
    run = train_and_evaluate(config, None, data=data, test=False)
    train_wall_s = time.perf_counter() - t0
    peak_training = harness.peak_rss_mib()
    summary, history = run.summary, run.fit.history
    rows = summary["num_train"]
    steady = summary["median_epoch_time_s"]
    timings = harness.fit_timings(run.fit, train_wall_s)

    ranking_s, evaluation = full_ranking(task, config, full_data, run.model)
    result = {
        "task": task.name, "model": config.model.name,
        "optimizer": config.optimizer.name,
        "optimizer_tables": config.optimizer.get("tables", "dense"),
        "num_users": full_data.num_users, "num_items": full_data.num_items,
        "split": full_data.split_protocol, "full_train_rows": full_rows,
        "prepare_s": prepare_s,
        "batch_size": batch_size, "train_rows": rows,
        "steps_per_epoch": steps_per_epoch(rows, batch_size),
        "full_steps_per_epoch": steps_per_epoch(full_rows, batch_size),
        "epoch_steps_capped": capped, "max_epoch_steps": spec.get("max_epoch_steps"),
        "data_on_device": summary["data_on_device"],
        "compile_s": summary["compile_time_s"],
        "warmup_s": harness.warmup_s({"history": history,
                                      "compile_s": summary["compile_time_s"]}),
        "setup_s": timings["setup_s"],
        "epoch_times_s": summary["epoch_times_s"], "steady_epoch_s": steady,
        "train_rows_per_s": summary["train_rows_per_s"],
        "train_steps_per_s": steps_per_epoch(rows, batch_size) / steady,
        # Epoch 1's validation also compiles the validator: steady like the epochs.
        "val_eval_s": harness.steady_epoch([{"epoch_time_s": h["eval_time_s"]}
                                            for h in history]),
        "full_ranking_s": ranking_s, "eval_items": full_data.num_items, **evaluation,
        "peak_rss_after_prepare_mib": peak_prepare,
        "peak_rss_after_training_mib": peak_training,
    }
    if task.name == "retrieval":
        result.update(serve(task, config, full_data, run.model, evaluation,
                            work_dir / "export"))
    return result


def _random_batches(num_users: int, num_items: int, steps: int, batch_size: int,
                    seed: int) -> dict[str, np.ndarray]:
    """``steps`` random rating batches ``(steps, batch_size)`` with their ``weight`` column."""
    import numpy as np

    from recsys_jax.training import steps as steps_lib
    rng = np.random.default_rng(seed)
    n = steps * batch_size
    rows = {"user": rng.integers(0, num_users, n, dtype=np.int32),
            "item": rng.integers(0, num_items, n, dtype=np.int32),
            "rating": rng.integers(1, 6, n).astype(np.float32)}
    return steps_lib.gather_batches(rows, np.arange(n, dtype=np.int32), batch_size)


def sweep_batches(num_users: int, num_items: int, steps: int, batch_size: int, calls: int,
                  seed: int) -> list[dict[str, np.ndarray]]:
    """Distinct random batches for each of ``calls`` calls (the warm-up and the timed ones),
    so that no timed call finds the rows it reads still in the caches from the call before, as
    a training run's steps would not."""
    return [_random_batches(num_users, num_items, steps, batch_size, seed + call)
            for call in range(calls)]


def run_table_sweep(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The MF train step alone at one table size; see the module docstring."""
    import jax
    import numpy as np
    from flax import nnx

    from recsys_jax.config_files import load_config_file
    from recsys_jax.models.registry import build_model
    from recsys_jax.tasks.rating import make_rating_loss
    from recsys_jax.tasks.rating_search import apply_overrides
    from recsys_jax.training import steps as steps_lib
    from recsys_jax.training.optimizers import make_model_optimizer

    config = apply_overrides(load_config_file(harness.REPO_ROOT / spec["config"]),
                             spec["overrides"])
    table_rows, batch_size = int(spec["table_rows"]), int(spec["batch_size"])
    steps, repetitions = int(spec["steps_per_call"]), int(spec["repetitions"])
    num_users = table_rows // 2
    num_items = table_rows - num_users
    calls = sweep_batches(num_users, num_items, steps, batch_size, repetitions + 1,
                          config.training.seed)
    train = {k: v.reshape(-1) for k, v in calls[0].items() if k != "weight"}
    model = build_model(config.model, num_users=num_users, num_items=num_items, train=train,
                        rngs=nnx.Rngs(params=config.training.seed))
    optimizer, _ = make_model_optimizer(model, config.optimizer, steps_per_epoch=steps,
                                        num_epochs=1)
    loss = make_rating_loss(config.training.loss, config.training.l2_reg)
    graphdef, state = nnx.split((model, optimizer))
    num_parameters = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    del model, optimizer  # The state is donated from here on.
    calls = [jax.device_put(batches) for batches in calls]
    key = jax.random.key(config.training.seed)

    t0 = time.perf_counter()
    compiled = steps_lib.make_train_steps(graphdef, loss).lower(state, calls[0], key).compile()
    compile_s = time.perf_counter() - t0
    losses = []

    def call() -> None:
        nonlocal state
        state, metrics = compiled(state, calls[len(losses)], key)
        losses.append(float(jax.block_until_ready(metrics["loss"]).mean()))

    call_s, call_s_all = harness.time_calls(call, repetitions, warmup=1)
    if not all(np.isfinite(losses)):
        raise FloatingPointError(f"the MF step diverged on random batches: losses {losses}")
    return {"optimizer": config.optimizer.name,
            "optimizer_tables": config.optimizer.get("tables", "dense"),
            "table_rows": table_rows, "num_users": num_users, "num_items": num_items,
            "dim": config.model.dim, "num_parameters": int(num_parameters),
            "batch_size": batch_size, "steps_per_call": steps, "repetitions": repetitions,
            "compile_s": compile_s, "call_s": call_s, "call_s_all": call_s_all,
            "step_s": call_s / steps, "steps_per_s": steps / call_s,
            "rows_per_s": steps * batch_size / call_s}


def main(argv: list[str]) -> int:
    """``python -m benchmarks.scale_worker TASK.json OUT_DIR``: the worker."""
    if len(argv) != 3:
        print(main.__doc__, file=sys.stderr)
        return 2
    start = time.perf_counter()
    spec = json.loads(Path(argv[1]).read_text())
    out_dir = Path(argv[2])
    settings = harness.set_threads(int(spec["threads"]))  # Before NumPy and JAX load.
    from recsys_jax.console import quiet_startup
    quiet_startup()
    environment = {**settings, **harness.framework_info("jax", int(spec["threads"]))}
    import_s = time.perf_counter() - start
    if spec["kind"] == "workload":
        result = run_workload(spec, out_dir)
    elif spec["kind"] == "table_sweep":
        result = run_table_sweep(spec)
    else:
        raise ValueError(f"unknown cell kind {spec['kind']!r}")
    result.update({"import_s": import_s, "peak_rss_mib": harness.peak_rss_mib(),
                   "wall_s": time.perf_counter() - start, "environment": environment})
    harness.write_worker_result(out_dir, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
