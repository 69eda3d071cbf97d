"""The two-tower half of the side-by-side benchmark: JAX against both PyTorch variants.

``run_two_tower_benchmark`` prepares the data once with recsys_jax's own path
(``tasks.retrieval.prepare_retrieval_data``: load, encode, split, features from the
training part, test users' inputs from train + val, positives), saves the features, the
positives with their log q and the JAX model's initial parameters, then trains every variant
``repetitions`` times, each run in a fresh worker process (``benchmarks.torch_baseline.worker``)
with identical thread settings and the variant order rotating between repetitions (as the MF
benchmark). Every run trains for the same fixed number of epochs (no early stopping: the speed
comparison needs equal work) and exports its user/item embeddings as NumPy, which are scored
here by the evaluation suite exactly as the retrieval task scores its test part
(``evaluate_ranking`` over ``Embeddings`` on ``RetrievalData.target("test")``, full ranking,
train + val items excluded), with user-level bootstrap CIs and paired tests against JAX from
``recsys_jax.evaluation.significance``.

The JAX side is the library's own training path, ``train_two_tower(config, data,
workdir=None)`` → ``loop.fit`` (``jax_two_tower``), with ``training.patience = 0``: fit validates
on ``RetrievalData.target("val")`` inside its epoch loop at the config's early-stopping metric
(``training.monitor``, e.g. ``val_recall@100``), picks the first best epoch and leaves the
model at that epoch, whose embeddings (test users' inputs) are scored on test here. Its
``time_to_best_s = setup_s + compile_s + Σ (epoch_time_s + eval_time_s)`` over epochs 1..best,
all from ``FitResult`` (``harness.fit_timings``): validation is part of what users run.

The PyTorch loops have no validation of their own: they export, after each epoch and outside
its timing, the embeddings with the training-time user inputs; they come back as
``epoch_*_embeddings.npy`` and are scored here, one run at a time, with the same
``evaluate_ranking`` over ``Embeddings`` on the same target and metric. The best epoch is the
first maximum and ``time_to_best_s = setup_s + compile_s + Σ epoch_time_s`` over epochs
1..best (evaluation not on their clock). They also export each epoch's user embeddings with the
test users' inputs, and are tested at their best validation epoch, as the JAX run is.

Definitions as in ``benchmarks.torch_baseline.mf_benchmark`` (steady epoch: median of epochs 2..;
warm-up: explicit compile plus epoch 1's excess over the steady epoch; examples/s: training
positives per steady epoch). "Total" is set-up + compile + all epochs, exports excluded.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness
from benchmarks.harness import fmt_mib as _fmt_mib
from benchmarks.harness import fmt_s as _fmt_s
from benchmarks.harness import ratio as _ratio
from benchmarks.harness import steady_epoch, summarize_speed
from benchmarks.torch_baseline.mf_benchmark import WORKER
from recsys_jax.tasks.base import monitor_parts

VARIANTS = ("jax", "baseline", "tuned")
LABELS = {"jax": "JAX (loop.fit, scanned epoch)", "baseline": "PyTorch baseline (DataLoader)",
          "tuned": "PyTorch tuned"}
METRICS = ("hr@100", "ndcg@100")


def summarize_runs(runs: Sequence[dict[str, Any]], num_train: int) -> dict[str, Any]:
    """``summarize_speed`` plus the two-tower's export time, final loss, temperature and time
    to the best validation epoch (None without per-epoch embeddings)."""
    return {
        **summarize_speed(runs, num_train),
        "export_s": statistics.median(r["export_s"] for r in runs),
        "final_train_loss": [r["history"][-1]["train_loss"] for r in runs],
        "temperature": [r["temperature"] for r in runs],
        "time_to_best_s": harness.median([r.get("time_to_best_s") for r in runs]),
        "best_epochs": [r.get("best_epoch") for r in runs],
    }


def best_epoch(values: Sequence[float]) -> int:
    """The 1-based epoch of the highest validation value; the first one on ties (as early
    stopping keeps the first best). NaN values never win.

    Raises:
      ValueError: when there is no value, or none that is a number.
    """
    finite = [i for i, v in enumerate(values) if not math.isnan(v)]
    if not finite:
        raise ValueError(f"no validation value to pick the best epoch from: {list(values)}")
    return max(finite, key=lambda i: (values[i], -i)) + 1


def time_to_best(run: Mapping[str, Any], best: int) -> float:
    """Seconds from the start of set-up to the end of epoch ``best`` (1-based): ``setup_s`` +
    ``compile_s`` + the ``epoch_time_s`` of epochs 1..``best`` of ``run["history"]``."""
    if not 1 <= best <= len(run["history"]):
        raise ValueError(f"best epoch {best} outside 1..{len(run['history'])}")
    return (run["setup_s"] + run["compile_s"]
            + sum(h["epoch_time_s"] for h in run["history"][:best]))


def validate_epochs(out_dir: Path, target: Any, metric: str, k: int) -> list[float]:
    """``metric@k`` of every epoch's embeddings a worker saved in ``out_dir``
    (``epoch_user_embeddings.npy`` / ``epoch_item_embeddings.npy``), by ``evaluate_ranking``
    over ``Embeddings`` on ``target`` (full ranking); memory-mapped, one epoch at a time."""
    from recsys_jax.evaluation.evaluate import evaluate_ranking
    from recsys_jax.evaluation.sources import Embeddings

    users = np.load(out_dir / "epoch_user_embeddings.npy", mmap_mode="r")
    items = np.load(out_dir / "epoch_item_embeddings.npy", mmap_mode="r")
    if len(users) != len(items):
        raise ValueError(f"{out_dir}: {len(users)} user but {len(items)} item epochs")
    return [evaluate_ranking(Embeddings(np.asarray(u), np.asarray(i)), target, (k,),
                             metrics=(metric,)).mean(f"{metric}@{k}")
            for u, i in zip(users, items)]


def best_epoch_embeddings(out_dir: Path, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The (test users' inputs) user and item embeddings of ``epoch`` (1-based) that a
    worker saved in ``out_dir``: what a PyTorch run is tested with, as the JAX run is tested at
    its best validation epoch."""
    users = np.load(out_dir / "epoch_test_user_embeddings.npy", mmap_mode="r")
    items = np.load(out_dir / "epoch_item_embeddings.npy", mmap_mode="r")
    return np.array(users[epoch - 1]), np.array(items[epoch - 1])


def add_time_to_best(run: dict[str, Any], values: Sequence[float], monitor: str) -> None:
    """Writes each epoch's validation value into ``run["history"]`` (key ``monitor``, e.g.
    ``val_recall@100``) and the run's ``best_epoch``, ``best_val`` and ``time_to_best_s``."""
    if len(values) != len(run["history"]):
        raise ValueError(f"{len(values)} validation values for {len(run['history'])} epochs")
    for h, value in zip(run["history"], values):
        h[monitor] = float(value)
    best = best_epoch(values)
    run.update(best_epoch=best, best_val=float(values[best - 1]),
               time_to_best_s=time_to_best(run, best))


def score_two_tower(embeddings: dict[str, list[tuple[np.ndarray, np.ndarray]]], target: Any,
                    *, bootstrap_resamples: int = 2000) -> dict[str, Any]:
    """HR@100 / NDCG@100 of every run with the evaluation suite; for each variant's first
    repetition a user-level bootstrap CI, and Δ against JAX's first repetition with its CI
    and paired t-test p-value."""
    from recsys_jax.evaluation.evaluate import evaluate_ranking
    from recsys_jax.evaluation.significance import compare_paired, mean_ci
    from recsys_jax.evaluation.sources import Embeddings

    per_run = {v: [evaluate_ranking(Embeddings(u, i), target, (100,), metrics=("hr", "ndcg"))
                   for u, i in runs] for v, runs in embeddings.items()}
    quality: dict[str, Any] = {}
    for v, results in per_run.items():
        quality[v] = {}
        for metric in METRICS:
            means = [r.mean(metric) for r in results]
            first = results[0].values[metric]
            q = {"values": means, "mean": float(np.mean(means)),
                 "std": float(np.std(means, ddof=1)) if len(means) > 1 else 0.0,
                 "first_rep": means[0],
                 "first_rep_ci": list(mean_ci(first, n_resamples=bootstrap_resamples)),
                 "delta_vs_jax": None, "delta_ci": None, "p_ttest": None}
            if v != "jax" and "jax" in per_run:
                c = compare_paired(first, per_run["jax"][0].values[metric],
                                   n_resamples=bootstrap_resamples)
                q.update(delta_vs_jax=c.delta, delta_ci=list(c.delta_ci), p_ttest=c.t_pvalue)
            quality[v][metric] = q
    return {"quality": quality, "num_test_users": len(per_run["jax"][0].users)}


def run_two_tower_benchmark(config: Any, *, variants: Sequence[str] = VARIANTS,
                            repetitions: int = 3, epochs: int | None = None,
                            max_epoch_steps: int | None = None,
                            threads: int | None = None, torch_compile: bool = False,
                            bootstrap_resamples: int = 2000, work_dir: str | None = None,
                            epoch_embeddings: bool = True, torch_device: str = "cpu",
                            log=print) -> dict[str, Any]:
    """Trains each two-tower variant ``repetitions`` times (seeds ``training.seed + r``) for
    the same fixed number of epochs; returns quality, speed and environment figures.

    Args:
      config: the two-tower experiment config (``configs/two_tower_ml100k.py``).
      variants: subset of ``VARIANTS``, with ``jax``.
      repetitions: runs per variant.
      epochs: epochs per run (default: ``training.epochs``); no early stopping.
      max_epoch_steps: at most this many steps per epoch: every framework trains on the same
        seeded random subset of ``max_epoch_steps × batch`` positives
        (``scale_worker.capped_training_data``; log q from the subset); features, validation
        and test stay whole. None or 0: full epochs.
      threads: CPU threads for every framework (default: the CPUs this process may use).
      torch_compile: ``torch.compile`` the loss in the tuned variant.
      bootstrap_resamples: bootstrap resamples of the CIs.
      work_dir: where worker files go (default: a temporary directory).
      epoch_embeddings: export every epoch's embeddings and score them on validation for the
        time to the best validation epoch (see the module docstring).
      torch_device: the device the PyTorch variants train on (``"cpu"``, ``"cuda"``); JAX
        uses its default backend.
    """
    from benchmarks.scale_worker import capped_training_data
    from benchmarks.torch_baseline.jax_two_tower import (
        initial_params,
        monitor_name,
        prepare_retrieval_data,
        save_retrieval_data,
        torch_positives,
    )
    from benchmarks.torch_baseline.two_tower_training import TwoTowerRecipe
    from recsys_jax.tasks.retrieval_losses import sampling_log_q
    from recsys_jax.training.steps import steps_per_epoch

    unknown = set(variants) - set(VARIANTS)
    if unknown or "jax" not in variants:
        raise ValueError(f"variants must include 'jax' and come from {VARIANTS}, "
                         f"got {list(variants)}")
    threads = threads or harness.default_threads()
    epochs = int(epochs or config.training.epochs)
    # Checked before any training, so an unsupported recipe fails fast.
    recipe = TwoTowerRecipe.from_config(config, epochs=epochs)
    t0 = time.perf_counter()
    data = prepare_retrieval_data(config)
    prepare_s = time.perf_counter() - t0
    full_num_train = len(data.train["user"])
    data, capped = capped_training_data(data, recipe.batch_size, max_epoch_steps,
                                        seed=int(config.training.seed))
    positives = data.train
    num_train = len(positives["user"])
    # Per-epoch validation as the retrieval task's early stopping follows it.
    val_target = data.target("val") if epoch_embeddings else None
    monitor = monitor_name(config)
    metric, k = monitor_parts(monitor)
    runs: dict[str, list] = {v: [] for v in variants}
    embeddings: dict[str, list] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        tmp = Path(tmp)
        save_retrieval_data(data, tmp)
        # The pairs with, under causal training, each pair's own user inputs (materialised
        # for PyTorch; the JAX side reads the pointers and causal_events.npz).
        np.savez(tmp / "positives.npz", **torch_positives(data),
                 log_q=sampling_log_q(positives["item"], data.num_items))
        for rep in range(repetitions):
            seed = int(config.training.seed) + rep
            init_path = tmp / f"init_{seed}.npz"
            np.savez(init_path, **initial_params(config, data.features, seed))
            order = list(variants[rep % len(variants):]) + list(variants[:rep % len(variants)])
            for variant in order:
                task = {"model": "two_tower", "variant": variant, "seed": seed,
                        "threads": threads, "epochs": epochs, "config": config.to_dict(),
                        "recipe": dataclasses.asdict(recipe), "compile": torch_compile,
                        "features": str(tmp / "features.npz"),
                        "test_features": str(tmp / "test_features.npz"),
                        "positives": str(tmp / "positives.npz"), "split": str(tmp / "split"),
                        "init_params": str(init_path), "torch_device": torch_device,
                        # JAX validates inside loop.fit; PyTorch's epochs are scored here.
                        "epoch_embeddings": epoch_embeddings and variant != "jax"}
                out = tmp / f"{variant}_{rep}"
                t0 = time.perf_counter()
                result = harness.run_worker_process(task, out, module=WORKER)
                runs[variant].append(result)
                best = ""
                if task["epoch_embeddings"]:
                    # Scored now, so only one run's epochs are ever loaded.
                    add_time_to_best(result, validate_epochs(out, val_target, metric, k),
                                     monitor)
                    embeddings[variant].append(best_epoch_embeddings(out, result["best_epoch"]))
                else:  # JAX (loop.fit keeps the best epoch); PyTorch unvalidated: last epoch.
                    embeddings[variant].append((np.load(out / "user_embeddings.npy"),
                                                np.load(out / "item_embeddings.npy")))
                if result.get("best_epoch") is not None:
                    best = (f", best {monitor} {result['best_val']:.4f} (epoch "
                            f"{result['best_epoch']}) after {result['time_to_best_s']:.2f}s")
                log(f"rep {rep + 1}/{repetitions} {variant:>8}: {epochs} epochs, steady epoch "
                    f"{steady_epoch(result['history']):.3f}s, final loss "
                    f"{result['history'][-1]['train_loss']:.4f}{best}, worker "
                    f"{time.perf_counter() - t0:.1f}s")
    speed = {v: summarize_runs(runs[v], num_train) for v in variants}
    scored = score_two_tower(embeddings, data.target("test"),
                             bootstrap_resamples=bootstrap_resamples)
    return {
        "benchmark": "two_tower", "dataset": data.dataset,
        "split": data.split_protocol, "split_fingerprint": data.split_fingerprint,
        "num_train": num_train, "num_users": data.num_users, "num_items": data.num_items,
        "full_num_train": full_num_train, "epoch_steps_capped": capped,
        "steps_per_epoch": steps_per_epoch(num_train, recipe.batch_size),
        "full_steps_per_epoch": steps_per_epoch(full_num_train, recipe.batch_size),
        "prepare_s": prepare_s,
        "recipe": dataclasses.asdict(recipe), "torch_compile": torch_compile,
        "monitor": monitor, "epoch_validation": epoch_embeddings,
        "repetitions": repetitions, "torch_device": torch_device,
        "environment": harness.environment(threads, runs), "speed": speed, **scored,
        "runs": {v: [{k: r[k] for k in r if k != "environment"} for r in rs]
                 for v, rs in runs.items()},
    }


def format_two_tower_markdown(result: dict[str, Any]) -> str:
    """The benchmark as Markdown: setup line, one table of speed and quality per variant."""
    speed = {v: result["speed"][v] for v in VARIANTS if v in result["speed"]}
    quality = result["quality"]
    env, r = result["environment"], result["recipe"]
    jax_speed = speed["jax"]
    lines = [
        f"## Two-tower: JAX vs PyTorch on {result['dataset']} ({result['split']} split)",
        "",
        f"{harness.training_rows(result, 'positives')}, {result['num_users']:,} users × "
        f"{result['num_items']:,} items; towers hidden {r['hidden_dim']} → {r['dim']}, history "
        f"pooling {r['history']} (position weights {r.get('history_positions', False)}), "
        f"training pairs' user inputs "
        f"{'causal' if r.get('causal_inputs') else 'from all training events'}, in-batch "
        f"softmax (logQ {r['logq']}, accidental-hit removal "
        f"{r['remove_accidental_hits']}), batch {r['batch_size']}, {r['optimizer']} lr "
        f"{r['lr']:g} weight decay {r['weight_decay']:g}; the same fixed {r['epochs']} epochs "
        f"for every variant (no early stopping), the same initial weights; "
        f"{result['repetitions']} repetition(s) per variant (seeds {r['seed']}.."
        f"{r['seed'] + result['repetitions'] - 1}), medians shown. Test metrics: full "
        f"ranking, train + val items excluded, {result['num_test_users']:,} users, 95% "
        f"bootstrap CI over users (first repetition). CPU: {env['cpu']}, {env['threads']} "
        f"threads for every framework. torch.compile in tuned: "
        f"{'yes' if result['torch_compile'] else 'no'}.",
    ]
    if result.get("monitor") and not result.get("epoch_validation", True):
        lines[-1] += (" PyTorch runs not validated epoch by epoch: tested at their last epoch, "
                      "no time to best val epoch (JAX: its best validation epoch).")
    elif result.get("monitor"):
        lines[-1] += (
            f" Time to best val epoch: set-up + compile + the epochs up to the first epoch "
            f"with the highest {result['monitor']}; JAX runs `loop.fit`, which validates "
            f"inside its epoch loop (validation timed, test scores of the best epoch's "
            f"weights); PyTorch's epochs are scored afterwards by the same evaluation code "
            f"(validation and exports not timed, test scores of the best epoch's weights).")
    lines += [
        "",
        "| variant | steady epoch (s) | train examples/s | JAX speed-up | warm-up/compile (s) "
        "| total train (s) | time to best val epoch (s) | best epochs | HR@100 [95% CI] "
        "| NDCG@100 [95% CI] | ΔHR@100 vs JAX [95% CI] | peak RSS training / process (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for v, s in speed.items():
        hr, ndcg = quality[v]["hr@100"], quality[v]["ndcg@100"]
        delta = ("—" if hr["delta_vs_jax"] is None else
                 f"{hr['delta_vs_jax']:+.4f} [{hr['delta_ci'][0]:+.4f}, "
                 f"{hr['delta_ci'][1]:+.4f}]")
        lines.append(
            f"| {LABELS[v]} | {s['steady_epoch_s']:.3f} | {s['examples_per_s']:,.0f} | "
            f"{'—' if v == 'jax' else _ratio(jax_speed['examples_per_s'], s['examples_per_s'])}"
            f" | {s['warmup_s']:.2f} | {s['total_s']:.2f} | {_fmt_s(s.get('time_to_best_s'))} | "
            f"{', '.join('—' if e is None else str(e) for e in s.get('best_epochs', []))} | "
            f"{hr['first_rep']:.4f} [{hr['first_rep_ci'][0]:.4f}, {hr['first_rep_ci'][1]:.4f}]"
            f" | {ndcg['first_rep']:.4f} [{ndcg['first_rep_ci'][0]:.4f}, "
            f"{ndcg['first_rep_ci'][1]:.4f}] | {delta} | "
            f"{_fmt_mib(s['peak_rss_training_mib'])} / {_fmt_mib(s['peak_rss_process_mib'])} |")
    return "\n".join(lines) + "\n"

