"""The headline table of benchmarks/headline_ml100k.sh, from experiments/compare.py's outputs.

  python -m benchmarks.headline_table --workdir=workdirs/headline --reference=sasrec_softmax
  python -m benchmarks.headline_table --best_of=W/compare_vs_popularity/comparison_full.json

With ``--workdir``: reads ``<workdir>/compare/comparison_full.csv`` (means, 95% bootstrap CIs,
Holm-corrected paired tests against ``--reference``), ``comparison_sampled-100.csv`` when there,
and each run's ``run.json`` for its fit time; writes ``<workdir>/headline.{md,json}``. With
``--best_of``: prints the name of the run (not a baseline) with the highest ``--metric``.

Fit time: the training loop for gradient-trained models (``train_time_s``: every epoch and its
validation, compilation apart; early stopping's patience epochs included), the fit for closed
forms and iALS (``fit_time_s``), the median of three fits for `implicit`, train + fold-in for
Keras-RS (its compilation included): what each run recorded, on whatever machine ran it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from absl import app, flags

from benchmarks import harness
from recsys_jax.fileio import atomic_write_json, atomic_write_text

BASELINES = ("popularity", "random")
METRICS = ("hr@10", "ndcg@10", "hr@100")
SAMPLED_METRICS = ("hr@10", "ndcg@10")
# label → (shown name, library, tuning on validation). The budgets are the sweeps of each
# model's docs page (docs/results.md lists them).
ROWS: dict[str, tuple[str, str, str]] = {
    "sasrec_softmax": ("SASRec, in-batch softmax + logQ", "recsys_jax",
                       "grid lr {1e-3, 3e-3} × dropout {0.2, 0.5} (4) + d 100 (1) "
                       "+ L 200 (1, unfinished)"),
    "sasrec_bce": ("SASRec, BCE (the paper's loss)", "recsys_jax",
                   "grid lr {1e-3, 3e-3} × dropout {0.2, 0.5} (4)"),
    "two_tower": ("two-tower (item-tower history)", "recsys_jax",
                  "no grid: the default recipe, its ablations on validation (two-tower page)"),
    "ease_recency": ("EASE, recency-weighted rows", "recsys_jax", "grid λ × γ (35)"),
    "ease": ("EASE", "recsys_jax", "same grid, γ = 1 (7)"),
    "ials": ("iALS", "recsys_jax", "grid α × λ (25) + Rendle et al.'s (12)"),
    "dot_mf": ("dot-product MF", "recsys_jax", "weight decay (4)"),
    "neumf": ("NeuMF", "recsys_jax", "weight decay (4)"),
    "bpr": ("BPR (dot MF, pairwise loss)", "recsys_jax", "row L2 (4)"),
    "item_knn": ("ItemKNN", "recsys_jax", "grid k × shrink (20 + 6)"),
    "implicit_als": ("`implicit` ALS", "implicit 0.7.3", "grid α × λ (25)"),
    "implicit_bpr": ("`implicit` BPR", "implicit 0.7.3", "grid lr × λ (6)"),
    "implicit_itemknn": ("`implicit` ItemKNN (cosine)", "implicit 0.7.3", "K (5)"),
    "kerasrs_two_tower": ("Keras-RS two-tower (ids)", "keras-rs", "grid d × lr (6)"),
}


def best_run(comparison: Mapping[str, Any], metric: str) -> str:
    """The model of a ``comparison_*.json`` with the highest mean ``metric``, baselines aside
    (ties: the first listed)."""
    models = {name: s[metric] for name, s in comparison["models"].items()
              if name not in BASELINES and metric in s}
    if not models:
        raise ValueError(f"no run with {metric!r} in the comparison")
    return max(models, key=models.get)


def fit_seconds(metadata: Mapping[str, Any]) -> float | None:
    """The fit time a run recorded: ``fit_time_s`` (closed forms, iALS, peers), else the
    training loop's ``train_time_s``."""
    for key in ("fit_time_s", "train_time_s"):
        if metadata.get(key) is not None:
            return float(metadata[key])
    return None


def run_paths(entries: Sequence[str]) -> dict[str, Path]:
    """``label=dir`` entries of compare.py's ``--runs`` → {label: dir}."""
    return {label: Path(path) for label, _, path in (e.partition("=") for e in entries)}


def _cell(row: pd.Series) -> str:
    return f"{row['mean']:.4f} [{row['ci_low']:.4f}, {row['ci_high']:.4f}]"


def _p(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def headline(full: pd.DataFrame, sampled: pd.DataFrame | None, fits: Mapping[str, float | None],
             reference: str) -> list[dict[str, Any]]:
    """One record per model (sorted by NDCG@10, best first): means with CIs, Δ and
    Holm-corrected p (paired t, Wilcoxon) against ``reference``, sampled means, fit time."""
    records = []
    for model, rows in full.groupby("model", sort=False):
        by_metric = rows.set_index("metric")
        shown, library, tuning = ROWS.get(model, (model, "", ""))
        record = {"model": model, "name": shown, "library": library, "tuning": tuning,
                  "seen_parts": by_metric["seen_parts"].iloc[0], "fit_s": fits.get(model)}
        for m in METRICS:
            r = by_metric.loc[m]
            record[m] = {"mean": float(r["mean"]), "ci": [float(r["ci_low"]), float(r["ci_high"])],
                         "cell": _cell(r), "delta": _num(r["delta"]),
                         "p_holm": _num(r["p_ttest_holm"]),
                         "p_wilcoxon_holm": _num(r["p_wilcoxon_holm"])}
        if sampled is not None:
            srows = sampled[sampled["model"] == model].set_index("metric")
            record["sampled"] = {m: float(srows.loc[m, "mean"]) for m in SAMPLED_METRICS
                                 if m in srows.index}
        records.append(record)
    records.sort(key=lambda r: -r["ndcg@10"]["mean"])
    return records


def _num(x: Any) -> float | None:
    x = float(x) if x is not None and x == x else None  # NaN (the reference's own row) → None
    return x


def to_markdown(records: Sequence[Mapping[str, Any]], reference: str) -> str:
    """The table: one row per model, the reference's p-values empty."""
    header = ["model", "library", "test users from", "HR@10", "NDCG@10", "HR@100",
              f"p HR@10 vs {reference}", f"p NDCG@10 vs {reference}", "sampled-100 HR@10",
              "fit s", "tuning on validation (trials)"]
    rows = []
    for r in records:
        ref = r["model"] == reference
        rows.append([
            f"**{r['name']}**" if ref else r["name"], r["library"], r["seen_parts"],
            *(r[m]["cell"] for m in METRICS),
            "(reference)" if ref else _p(r["hr@10"]["p_holm"]),
            "(reference)" if ref else _p(r["ndcg@10"]["p_holm"]),
            f"{r['sampled']['hr@10']:.4f}" if r.get("sampled", {}).get("hr@10") is not None
            else "—",
            harness.fmt_s(r["fit_s"]), r["tuning"]])
    return harness.markdown_table(header, rows, align="lllrrrrrrrl") + "\n"


def main(argv: Sequence[str]) -> None:
    del argv
    f = flags.FLAGS
    if f.best_of:
        print(best_run(json.loads(Path(f.best_of).read_text()), f.metric))
        return
    if not (f.workdir and f.reference):
        raise app.UsageError("give --workdir and --reference (or --best_of)")
    compare = Path(f.workdir) / "compare"
    info = json.loads((compare / "comparison_full.json").read_text())
    if info["baseline"] != f.reference:
        raise SystemExit(f"error: {compare} compares with {info['baseline']!r}, not "
                         f"{f.reference!r}")
    full = pd.read_csv(compare / "comparison_full.csv")
    sampled_path = compare / "comparison_sampled-100.csv"
    sampled = pd.read_csv(sampled_path) if sampled_path.exists() else None
    fits = {label: fit_seconds(json.loads((path / "run.json").read_text())["metadata"])
            for label, path in run_paths(info["runs"]).items()}
    records = headline(full, sampled, fits, f.reference)
    markdown = to_markdown(records, f.reference)
    out = Path(f.workdir)
    atomic_write_json(out / "headline.json", {"reference": f.reference, "rows": records,
                                              "split_fingerprint": info["split_fingerprint"],
                                              "environment": harness.environment()})
    atomic_write_text(out / "headline.md", markdown)
    print(markdown)


if __name__ == "__main__":
    # Defined here, not on import: the tests import this module beside other benchmarks.
    flags.DEFINE_string("workdir", None, "benchmarks/headline_ml100k.sh's directory.")
    flags.DEFINE_string("reference", None, "The model the tests compare with.")
    flags.DEFINE_string("best_of", None, "A comparison_*.json: print its best run.")
    flags.DEFINE_string("metric", "ndcg@10", "Metric --best_of ranks on.")
    app.run(main)
