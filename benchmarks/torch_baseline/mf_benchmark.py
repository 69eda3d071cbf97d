"""JAX against the PyTorch baseline and tuned variants (dense tables) or the sparse variant
(``optimizer.tables=lazy_adam``): same data, recipe and evaluation code.

``run_mf_benchmark`` loads and splits the data once (recsys_jax's loaders and splits), then
trains every variant ``repetitions`` times, each run in a fresh worker process
(``benchmarks.torch_baseline.worker``) with identical thread settings (the JAX side is the
library's own ``train_rating_model`` → ``loop.fit`` without a workdir, see ``jax_mf``); the order
of the variants
rotates between repetitions so slow drifts of a shared machine hit all of them alike. Test
predictions come back as NumPy and are scored here by ``recsys_jax.evaluation`` (clipped
RMSE/MAE, user-level bootstrap CIs, paired tests against JAX).

Definitions (seconds are wall clock; ``benchmarks.harness``):
  steady epoch     median training time of epochs 2.. of a run (validation excluded);
                   the table shows the median over repetitions
  examples/s       training ratings per epoch / steady epoch
  warm-up          explicit compile (JAX's ahead-of-time ``lower().compile()``) plus the
                   extra time of epoch 1 over the steady epoch (``torch.compile`` compiles
                   there, cold: inductor's on-disk cache is disabled in the workers; eager
                   PyTorch warms its allocator there)
  time to best     from the start of set-up (model, optimizer, data to device) to the end of
                   the best validation epoch, compile and every validation included (JAX:
                   set-up + ``FitResult.compile_time_s`` + Σ over epochs ≤ ``best_epoch`` of
                   ``epoch_time_s + eval_time_s``, where set-up is the call's wall time not
                   spent compiling, training or validating; ``harness.fit_timings``)
  peak RSS         the worker's peak resident set during training (``VmHWM`` after resetting
                   it just before set-up; frameworks and data already loaded), and the whole
                   process's peak (the larger of ``VmHWM`` before that reset and at the end,
                   start-up included; not ``ru_maxrss``, which carries the parent's peak)
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness
from benchmarks.harness import fmt_mib as _fmt_mib
from benchmarks.harness import ratio as _ratio
from benchmarks.harness import steady_epoch, summarize_speed

WORKER = "benchmarks.torch_baseline.worker"
MF_VARIANTS = ("jax", "baseline", "tuned", "sparse")
LABELS = {"jax": "JAX (loop.fit, scanned epoch)", "baseline": "PyTorch baseline (DataLoader)",
          "tuned": "PyTorch tuned", "sparse": "PyTorch sparse (SparseAdam)"}


def mf_variants(config: Any) -> tuple[str, ...]:
    """``jax`` and the PyTorch variants that implement the config's ``optimizer.tables``:
    ``baseline`` and ``tuned`` for dense tables, ``sparse`` for ``lazy_adam``; none for other
    rules."""
    from benchmarks.torch_baseline.mf_training import variants_for_tables
    return ("jax", *variants_for_tables(config.optimizer.get("tables", "dense")))


def save_rating_data(data: Any, path: Path) -> None:
    """Writes a ``RatingData`` as the ``.npz`` the workers read."""
    arrays = {f"{part}_{col}": getattr(data, part)[col]
              for part in ("train", "val", "test") for col in ("user", "item", "rating")}
    np.savez(path, num_users=data.num_users, num_items=data.num_items,
             rating_scale=np.asarray(data.rating_scale), **arrays)


def run_worker(task: dict[str, Any], work_dir: Path, *, timeout_s: float | None = None
               ) -> tuple[dict[str, Any], np.ndarray]:
    """Runs one task in a fresh interpreter; returns its result and test predictions."""
    result = harness.run_worker_process(task, work_dir, timeout_s=timeout_s, module=WORKER)
    return result, np.load(work_dir / "test_predictions.npy")


def summarize_runs(runs: Sequence[dict[str, Any]], num_train: int) -> dict[str, Any]:
    """``summarize_speed`` plus MF's evaluation time and time to the best validation epoch."""
    return {
        **summarize_speed(runs, num_train),
        "eval_s": harness.median([statistics.median(h["eval_time_s"] for h in r["history"])
                           for r in runs]),
        "time_to_best_s": harness.median([r["time_to_best_s"] for r in runs]),
        "best_epochs": [r["best_epoch"] for r in runs],
    }


def score_mf(runs: dict[str, list[dict[str, Any]]], predictions: dict[str, list[np.ndarray]],
             data: Any, *, bootstrap_resamples: int = 2000) -> dict[str, Any]:
    """Test RMSE/MAE of every run with recsys_jax's rating metrics, and the comparison table
    of the first repetition (CIs over users, Δ and paired tests against JAX)."""
    from recsys_jax.evaluation.comparison_table import (
        BootstrapSettings,
        ModelEvaluation,
        rating_comparison_table,
        to_markdown,
    )
    from recsys_jax.evaluation.rating_metrics import rating_metrics
    test = data.test
    per_run = {v: [rating_metrics(test["user"], p, test["rating"], data.rating_scale)
                   for p in preds] for v, preds in predictions.items()}
    evaluations = [ModelEvaluation(v, metrics[0]) for v, metrics in per_run.items()]
    table = rating_comparison_table(evaluations, "jax",
                                    BootstrapSettings(n_resamples=bootstrap_resamples))
    rmse_rows = table[table["metric"] == "rmse"].set_index("model")
    quality = {}
    for v, metrics in per_run.items():
        rmses = [m.aggregates["rmse"] for m in metrics]
        row = rmse_rows.loc[v]
        quality[v] = {
            "test_rmse": rmses, "test_mae": [m.aggregates["mae"] for m in metrics],
            "test_rmse_mean": float(np.mean(rmses)),
            "test_rmse_std": float(np.std(rmses, ddof=1)) if len(rmses) > 1 else 0.0,
            "first_rep_rmse": rmses[0],
            "first_rep_ci": [float(row["ci_low"]), float(row["ci_high"])],
            "first_rep_delta_vs_jax": None if v == "jax" else float(row["delta"]),
            "first_rep_delta_ci": None if v == "jax" else [float(row["delta_ci_low"]),
                                                           float(row["delta_ci_high"])],
            "first_rep_p_ttest": None if v == "jax" else float(row["p_ttest"]),
            "best_val_rmse": [r["best_val_rmse"] for r in runs[v]],
        }
    return {"quality": quality,
            "comparison_markdown": to_markdown(table, "Test rating error, first repetition "
                                                      "(seed 0), Δ against JAX")}


def run_mf_benchmark(config: Any, *, variants: Sequence[str] | None = None,
                     repetitions: int = 3, max_epochs: int | None = None,
                     max_epoch_steps: int | None = None,
                     threads: int | None = None, torch_compile: bool = True,
                     bootstrap_resamples: int = 2000, work_dir: str | None = None,
                     torch_device: str = "cpu", log=print) -> dict[str, Any]:
    """Trains each MF variant ``repetitions`` times (seeds ``training.seed + r``) and
    returns quality, speed and environment figures (see the module docstring).

    Args:
      config: the MF experiment config (``configs/mf_ml100k.py``).
      variants: subset of ``mf_variants(config)``, with ``jax`` (default: all of them).
      repetitions: runs per variant.
      max_epochs: replaces ``training.epochs`` (early stopping still applies).
      max_epoch_steps: at most this many steps per epoch: every framework trains on the same
        seeded random subset of ``max_epoch_steps × batch`` training ratings
        (``scale_worker.capped_training_data``); validation and test stay whole. None or 0:
        full epochs.
      threads: CPU threads for every framework (default: the CPUs this process may use).
      torch_compile: ``torch.compile`` the model in the tuned variant.
      bootstrap_resamples: bootstrap resamples of the CIs.
      work_dir: where worker files go (default: a temporary directory).
      torch_device: the device the PyTorch variants train on (``"cpu"``, ``"cuda"``); JAX
        uses its default backend.
    """
    from benchmarks.scale_worker import capped_training_data
    from benchmarks.torch_baseline.mf_training import MFRecipe
    from recsys_jax.tasks.rating import load_rating_data
    from recsys_jax.training.steps import steps_per_epoch

    # Checked before any data is loaded, so an unsupported recipe fails fast.
    recipe = MFRecipe.from_config(config, **({"max_epochs": max_epochs} if max_epochs else {}))
    allowed = mf_variants(config)
    variants = allowed if variants is None else tuple(variants)
    unknown = set(variants) - set(allowed)
    if unknown or "jax" not in variants:
        raise ValueError(f"variants must include 'jax' and come from {list(allowed)} (the "
                         f"variants of optimizer.tables={recipe.tables!r}), got {list(variants)}")
    threads = threads or harness.default_threads()
    t0 = time.perf_counter()
    full_data = load_rating_data(config)
    prepare_s = time.perf_counter() - t0
    data, capped = capped_training_data(full_data, recipe.batch_size, max_epoch_steps,
                                        seed=int(config.training.seed))
    num_train = len(data.train["rating"])
    full_num_train = len(full_data.train["rating"])
    del full_data
    runs: dict[str, list] = {v: [] for v in variants}
    predictions: dict[str, list] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        tmp = Path(tmp)
        save_rating_data(data, tmp / "data.npz")
        for rep in range(repetitions):
            order = list(variants[rep % len(variants):]) + list(variants[:rep % len(variants)])
            for variant in order:
                seed = int(config.training.seed) + rep
                task = {"model": "mf", "variant": variant, "seed": seed, "threads": threads,
                        "data": str(tmp / "data.npz"), "config": config.to_dict(),
                        "recipe": vars(recipe), "compile": torch_compile,
                        "max_epochs": recipe.max_epochs, "torch_device": torch_device}
                t0 = time.perf_counter()
                result, preds = run_worker(task, tmp / f"{variant}_{rep}")
                runs[variant].append(result)
                predictions[variant].append(preds)
                log(f"rep {rep + 1}/{repetitions} {variant:>8}: {len(result['history'])} "
                    f"epochs, steady epoch {steady_epoch(result['history']):.3f}s, best val "
                    f"RMSE {result['best_val_rmse']:.4f} (epoch {result['best_epoch']}), "
                    f"worker {time.perf_counter() - t0:.1f}s")
    speed = {v: summarize_runs(runs[v], num_train) for v in variants}
    scored = score_mf(runs, predictions, data, bootstrap_resamples=bootstrap_resamples)
    return {
        "benchmark": "mf", "dataset": data.dataset, "split": data.split_protocol,
        "split_fingerprint": data.split_fingerprint,
        "num_users": data.num_users, "num_items": data.num_items, "prepare_s": prepare_s,
        "num_train": num_train, "full_num_train": full_num_train,
        "epoch_steps_capped": capped, "steps_per_epoch": steps_per_epoch(num_train,
                                                                          recipe.batch_size),
        "full_steps_per_epoch": steps_per_epoch(full_num_train, recipe.batch_size),
        "num_val": len(data.val["rating"]),
        "num_test": len(data.test["rating"]), "recipe": vars(recipe),
        "torch_compile": torch_compile, "repetitions": repetitions,
        "torch_device": torch_device, "environment": harness.environment(threads, runs),
        "speed": speed, **scored,
        "runs": {v: [{k: r[k] for k in r if k != "environment"} for r in rs]
                 for v, rs in runs.items()},
    }


def _users_items(result: dict[str, Any]) -> str:
    """``"U users × I items, "`` (results written before these fields: nothing)."""
    if "num_users" not in result:
        return ""
    return f"{result['num_users']:,} users × {result['num_items']:,} items, "


def format_mf_markdown(result: dict[str, Any]) -> str:
    """The benchmark as Markdown: setup line, speed table, quality table and comparison."""
    # Fixed row order (JSON written with sorted keys loses the run order).
    speed = {v: result["speed"][v] for v in MF_VARIANTS if v in result["speed"]}
    quality = {v: result["quality"][v] for v in MF_VARIANTS if v in result["quality"]}
    env = result["environment"]
    r = result["recipe"]
    jax_speed = speed["jax"]
    tables = r.get("tables", "dense")
    lines = [
        f"## MF: JAX vs PyTorch on {result['dataset']} ({result['split']} split)",
        "",
        f"{_users_items(result)}{harness.training_rows(result, 'ratings')}, dim {r['dim']}, "
        f"batch {r['batch_size']}, "
        f"Adam lr {r['lr']:g} weight decay {r['weight_decay']:g}"
        + ("" if tables == "dense" else
           f", tables {tables} (JAX `optimizer.tables={tables}`; PyTorch `SparseAdam` on "
           f"`nn.Embedding(sparse=True)`, L2 of the distinct rows a batch reads in the loss)")
        + f", up to {r['max_epochs']} "
        f"epochs, patience {r['patience']}; {result['repetitions']} repetition(s) per variant "
        f"(seeds {r['seed']}..{r['seed'] + result['repetitions'] - 1}), medians shown. "
        f"CPU: {env['cpu']}, {env['threads']} thread(s) for every framework "
        f"(affinity, `OMP_NUM_THREADS`/`torch.set_num_threads`, XLA "
        f"`intra_op_parallelism_threads`)."
        + (f" torch.compile in tuned: {'yes' if result['torch_compile'] else 'no'}."
           if "tuned" in speed else ""),
        "",
        "| variant | steady epoch (s) | train examples/s | JAX speed-up | warm-up/compile (s) "
        "| time to best val (s) | JAX speed-up | best epochs | peak RSS training / process "
        "(MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for v, s in speed.items():
        lines.append(
            f"| {LABELS[v]} | {s['steady_epoch_s']:.3f} | {s['examples_per_s']:,.0f} | "
            f"{'—' if v == 'jax' else _ratio(jax_speed['examples_per_s'], s['examples_per_s'])}"
            f" | {s['warmup_s']:.2f} | {s['time_to_best_s']:.2f} | "
            f"{'—' if v == 'jax' else _ratio(s['time_to_best_s'], jax_speed['time_to_best_s'])}"
            f" | {', '.join(map(str, s['best_epochs']))} | "
            f"{_fmt_mib(s['peak_rss_training_mib'])} / {_fmt_mib(s['peak_rss_process_mib'])} |")
    lines += ["", "JAX relative to each PyTorch variant (> 1: JAX better): " + "; ".join(
        f"{LABELS[v]}: examples/s {_ratio(jax_speed['examples_per_s'], s['examples_per_s'])}"
        f", warm-up {_ratio(s['warmup_s'], jax_speed['warmup_s'])}"
        f", time to best {_ratio(s['time_to_best_s'], jax_speed['time_to_best_s'])}"
        f", peak RSS in training "
        f"{_ratio(s['peak_rss_training_mib'], jax_speed['peak_rss_training_mib'])}"
        for v, s in speed.items() if v != "jax") + "."]
    lines += ["", "| variant | test RMSE, mean ± std over reps | test RMSE seed "
              f"{r['seed']} [95% CI] | Δ vs JAX [95% CI] | p (paired t) |",
              "|---|---:|---:|---:|---:|"]
    for v, q in quality.items():
        delta = ("—" if q["first_rep_delta_vs_jax"] is None else
                 f"{q['first_rep_delta_vs_jax']:+.4f} [{q['first_rep_delta_ci'][0]:+.4f}, "
                 f"{q['first_rep_delta_ci'][1]:+.4f}]")
        p = "—" if q["first_rep_p_ttest"] is None else f"{q['first_rep_p_ttest']:.3f}"
        lines.append(f"| {LABELS[v]} | {q['test_rmse_mean']:.4f} ± {q['test_rmse_std']:.4f} | "
                     f"{q['first_rep_rmse']:.4f} [{q['first_rep_ci'][0]:.4f}, "
                     f"{q['first_rep_ci'][1]:.4f}] | {delta} | {p} |")
    return "\n".join(lines) + "\n"

