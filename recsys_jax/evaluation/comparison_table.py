"""Comparison tables (mean, 95% CI, Δ vs baseline, p-values), their Markdown/CSV/PNG outputs.

Each row compares one model with the baseline on one metric, over the users both were
evaluated on. Tests are paired, on per-user values; p-values are Holm-corrected over the
models compared with the baseline on that metric, and the marker (* p<0.05, ** p<0.01,
*** p<0.001) follows the Holm-corrected paired t-test.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_jax.evaluation import rating_metrics as rating_lib
from recsys_jax.evaluation import significance as sig
from recsys_jax.evaluation.results import PerUserMetrics
from recsys_jax.fileio import atomic_path, atomic_save_npy, atomic_write_json, atomic_write_text

TABLE_COLUMNS = (
    "protocol", "metric", "model", "baseline", "n_users", "mean", "ci_low", "ci_high", "delta",
    "delta_ci_low", "delta_ci_high", "relative_delta", "cohens_d", "t_statistic", "p_ttest",
    "p_ttest_holm", "wilcoxon_statistic", "p_wilcoxon", "p_wilcoxon_holm", "marker",
    "seen_parts")


@dataclasses.dataclass(frozen=True)
class ModelEvaluation:
    """A named model's per-user metrics (what a comparison row is built from).

    ``seen_parts``: the split parts the model's user representations have seen (``None`` when
    unknown); the table shows it as e.g. ``"train+val"``.
    """

    name: str
    metrics: PerUserMetrics
    seen_parts: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class BootstrapSettings:
    """How confidence intervals are drawn."""

    confidence: float = 0.95
    n_resamples: int = sig.DEFAULT_RESAMPLES
    seed: int = 0
    method: str = "percentile"

    def kwargs(self) -> dict[str, Any]:
        return dict(confidence=self.confidence, n_resamples=self.n_resamples, seed=self.seed,
                    method=self.method)


def _aligned(evaluations: Sequence[ModelEvaluation], baseline: str
             ) -> tuple[list[ModelEvaluation], ModelEvaluation]:
    names = [e.name for e in evaluations]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")
    if baseline not in names:
        raise ValueError(f"baseline {baseline!r} is not among the models {names}")
    base = evaluations[names.index(baseline)]
    protocols = {e.metrics.protocol for e in evaluations}
    if len(protocols) != 1:
        raise ValueError(f"cannot compare across protocols {sorted(protocols)}")
    for e in evaluations:
        if not np.array_equal(e.metrics.users, base.metrics.users):
            raise ValueError(f"model {e.name!r} was evaluated on other users than {baseline!r}")
    return [base] + [e for e in evaluations if e.name != baseline], base


def comparison_table(evaluations: Sequence[ModelEvaluation], baseline: str,
                     metrics: Sequence[str] | None = None,
                     bootstrap: BootstrapSettings = BootstrapSettings()) -> pd.DataFrame:
    """Per-user-mean metrics of every model with CIs, Δ vs ``baseline`` and paired tests.

    Args:
      evaluations: models evaluated on the same users under the same protocol.
      baseline: name of the reference model (popularity in every standard comparison).
      metrics: per-user metrics to report (default: all the baseline has); list-set
        aggregates (coverage, Gini) are appended without CIs or tests.
      bootstrap: CI settings.

    Returns:
      Long table with ``TABLE_COLUMNS``, baseline row first within each metric.
    """
    ordered, base = _aligned(evaluations, baseline)
    names = metrics or base.metrics.metric_names
    rows = []
    for metric in names:
        rows.extend(_metric_rows(
            ordered, base, metric,
            value=lambda e: (e.metrics.values[metric],),
            statistic=np.mean,
            tested=lambda e: e.metrics.values[metric], bootstrap=bootstrap))
    for aggregate in base.metrics.aggregates:
        for e in ordered:
            rows.append({"metric": aggregate, "model": e.name,
                         "mean": e.metrics.aggregates.get(aggregate, math.nan),
                         "n_users": len(e.metrics.users)})
    return _finish(rows, base, ordered)


def rating_comparison_table(evaluations: Sequence[ModelEvaluation], baseline: str,
                            bootstrap: BootstrapSettings = BootstrapSettings()) -> pd.DataFrame:
    """RMSE and MAE over ratings with user-level bootstrap CIs, Δ and paired tests.

    The CI of RMSE resamples users with their ratings (RMSE = sqrt(Σ n_u MSE_u / Σ n_u) on
    each resample); Δ resamples the same users for both models. The t-test and Wilcoxon run
    on per-user MSE_u (for RMSE) and MAE_u (for MAE).
    """
    ordered, base = _aligned(evaluations, baseline)
    specs = {"rmse": (rating_lib.USER_MSE, _rmse_statistic),
             "mae": (rating_lib.USER_MAE, _mae_statistic)}
    rows = []
    for metric, (per_user, statistic) in specs.items():
        rows.extend(_metric_rows(
            ordered, base, metric,
            value=lambda e, key=per_user: (e.metrics.values[key],
                                           e.metrics.values[rating_lib.NUM_RATINGS]),
            statistic=statistic,
            tested=lambda e, key=per_user: e.metrics.values[key], bootstrap=bootstrap))
    return _finish(rows, base, ordered)


def _rmse_statistic(mse, counts, axis=-1):
    return np.sqrt(np.sum(mse * counts, axis=axis) / np.sum(counts, axis=axis))


def _mae_statistic(mae, counts, axis=-1):
    return np.sum(mae * counts, axis=axis) / np.sum(counts, axis=axis)


def _metric_rows(ordered, base, metric, *, value, statistic, tested, bootstrap):
    """Rows of one metric: estimate + CI for every model, Δ and tests against ``base``."""
    rows = []
    for e in ordered:
        data = tuple(np.asarray(a, dtype=np.float64) for a in value(e))
        keep = ~np.any([np.isnan(a) for a in data], axis=0)
        data = tuple(a[keep] for a in data)
        low, high = sig.bootstrap_ci(data, statistic, **bootstrap.kwargs())
        row = {"metric": metric, "model": e.name, "n_users": int(keep.sum()),
               "mean": float(statistic(*data, axis=-1)) if keep.any() else math.nan,
               "ci_low": low, "ci_high": high}
        if e is not base:
            a, b = tested(e), tested(base)
            t, tp = sig.paired_t_test(a, b)
            w, wp = sig.wilcoxon_test(a, b)
            base_data = tuple(np.asarray(x, dtype=np.float64) for x in value(base))
            both = keep & ~np.any([np.isnan(x) for x in base_data], axis=0)
            model_data = tuple(np.asarray(x, dtype=np.float64)[both] for x in value(e))
            base_data = tuple(x[both] for x in base_data)
            half = len(model_data)

            def delta_stat(*arrays, axis=-1):
                return statistic(*arrays[:half], axis=axis) - statistic(*arrays[half:],
                                                                        axis=axis)

            d_low, d_high = sig.bootstrap_ci(model_data + base_data, delta_stat,
                                             **bootstrap.kwargs())
            delta = float(delta_stat(*model_data, *base_data)) if both.any() else math.nan
            base_value = float(statistic(*base_data, axis=-1)) if both.any() else math.nan
            row.update(delta=delta, delta_ci_low=d_low, delta_ci_high=d_high,
                       relative_delta=delta / base_value if base_value else math.nan,
                       cohens_d=sig.cohens_d_paired(a, b), t_statistic=t, p_ttest=tp,
                       wilcoxon_statistic=w, p_wilcoxon=wp)
        rows.append(row)
    return rows


def _finish(rows: list[dict], base: ModelEvaluation,
            evaluations: Sequence[ModelEvaluation]) -> pd.DataFrame:
    table = pd.DataFrame(rows).reindex(columns=list(TABLE_COLUMNS))
    table["protocol"] = base.metrics.protocol
    table["baseline"] = base.name
    seen = {e.name: "+".join(e.seen_parts) if e.seen_parts else "" for e in evaluations}
    table["seen_parts"] = table["model"].map(seen).fillna("")
    for metric, group in table.groupby("metric", sort=False):
        tested = group.index[group["model"] != base.name]
        for raw, adjusted in (("p_ttest", "p_ttest_holm"), ("p_wilcoxon", "p_wilcoxon_holm")):
            table.loc[tested, adjusted] = sig.holm(table.loc[tested, raw].to_numpy(float))
    table["marker"] = [sig.significance_marker(p) for p in table["p_ttest_holm"]]
    return table


def _fmt(x: float, digits: int = 4) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _fmt_p(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def to_markdown(table: pd.DataFrame, title: str = "") -> str:
    """The table as Markdown: mean [CI], Δ [CI], Holm-corrected p-values with marker, d_z."""
    if table.empty:
        return f"### {title}\n\n(no rows)\n"
    base = table["baseline"].iloc[0]
    protocol = table["protocol"].iloc[0]
    level = "95%"
    lines = [f"### {title or 'Comparison'} (protocol: {protocol})", "",
             f"| metric | model | mean [{level} CI] | Δ vs {base} [{level} CI] | "
             "p t-test (Holm) | p Wilcoxon (Holm) | d_z |",
             "|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        ci = ("" if not np.isfinite(r["ci_low"]) else
              f" [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]")
        if r["model"] == base or not np.isfinite(r["delta"]):
            delta, pt, pw, d = "—", "—", "—", "—"
        else:
            delta = (f"{r['delta']:+.4f} [{r['delta_ci_low']:+.4f}, {r['delta_ci_high']:+.4f}]"
                     if np.isfinite(r["delta_ci_low"]) else f"{r['delta']:+.4f}")
            pt = _fmt_p(r["p_ttest_holm"]) + (f" {r['marker']}" if r["marker"] else "")
            pw = _fmt_p(r["p_wilcoxon_holm"])
            d = _fmt(r["cohens_d"], 3)
        lines.append(f"| {r['metric']} | {r['model']} | {_fmt(r['mean'])}{ci} | {delta} | "
                     f"{pt} | {pw} | {d} |")
    if protocol.startswith("sampled"):
        lines += ["", f"**Sampled protocol ({protocol})**: each user's held-out items are ranked "
                  "among sampled unseen items only; these numbers are not comparable with "
                  "full-ranking results."]
    lines += _information_note(table)
    lines += ["", f"Means over {int(table['n_users'].max())} users; CIs by bootstrap over "
              "users; Δ = model − baseline (paired); p-values Holm-corrected over the models "
              "compared with the baseline; * p<0.05, ** p<0.01, *** p<0.001 (t-test).", ""]
    return "\n".join(lines)


def _information_note(table: pd.DataFrame) -> list[str]:
    """A line saying which split parts each model's users have seen (empty when unknown)."""
    if "seen_parts" not in table:
        return []
    seen = table.drop_duplicates("model").set_index("model")["seen_parts"].fillna("")
    if (seen == "").all():
        return []
    groups = {parts or "unknown": list(models) for parts, models in
              seen.groupby(seen, sort=False).groups.items()}
    if len(groups) == 1:
        return ["", f"Every model's users have seen: {next(iter(groups))}."]
    detail = "; ".join(f"{', '.join(models)}: {parts}" for parts, models in groups.items())
    return ["", f"**Unequal information** — the models' users have seen different parts of the "
            f"split ({detail}); their differences mix model quality with information."]


def plot_comparison(table: pd.DataFrame, path: str | Path, title: str = "") -> None:
    """Grouped bar chart with CI error bars: one panel per metric family, bars per model."""
    import matplotlib
    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    rows = table[np.isfinite(table["ci_low"].to_numpy(float))]
    family = rows["metric"].str.replace(r"@\d+$", "", regex=True)
    families = list(dict.fromkeys(family))
    models = list(dict.fromkeys(rows["model"]))
    if not families:
        raise ValueError("nothing to plot: no metric with a confidence interval")
    cols = min(3, len(families))
    nrows = math.ceil(len(families) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False)
    width = 0.8 / len(models)
    for ax, fam in zip(axes.flat, families):
        sub = rows[family == fam]
        metrics = list(dict.fromkeys(sub["metric"]))
        x = np.arange(len(metrics))
        for j, model in enumerate(models):
            m = sub[sub["model"] == model].set_index("metric").reindex(metrics)
            err = np.vstack([m["mean"] - m["ci_low"], m["ci_high"] - m["mean"]])
            ax.bar(x + (j - (len(models) - 1) / 2) * width, m["mean"], width, yerr=err,
                   capsize=2, label=model)
        ax.set_xticks(x, [re.sub(r"^.*@", "@", mt) for mt in metrics])
        ax.set_title(fam)
    for ax in list(axes.flat)[len(families):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    protocol = table["protocol"].iloc[0]
    fig.suptitle(f"{title} — protocol: {protocol}, 95% bootstrap CIs".strip(" —"))
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def file_label(protocol: str) -> str:
    """File-name stem of a protocol (``full`` or ``sampled-99``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", protocol)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name.replace("@", "_at_"))


def write_comparison(output_dir: str | Path, table: pd.DataFrame,
                     evaluations: Sequence[ModelEvaluation], *, title: str = "",
                     stem: str = "comparison", info: dict[str, Any] | None = None,
                     plot: bool = True) -> dict[str, Path]:
    """Writes ``<stem>_<protocol>.{md,csv,png,json}`` and per-user ``.npy`` files.

    Per-user values go to ``per_user_<protocol>/<model>/<metric>_<protocol>.npy`` next to the
    model's ``users.npy`` (the user id of each value), so other tools can redo any test.
    """
    output_dir = Path(output_dir)
    label = file_label(table["protocol"].iloc[0])
    paths = {"markdown": output_dir / f"{stem}_{label}.md",
             "csv": output_dir / f"{stem}_{label}.csv",
             "json": output_dir / f"{stem}_{label}.json"}
    atomic_write_text(paths["markdown"], to_markdown(table, title))
    atomic_write_text(paths["csv"], table.to_csv(index=False))
    per_user_dir = output_dir / f"per_user_{label}"
    for e in evaluations:
        model_dir = per_user_dir / _safe(e.name)
        atomic_save_npy(model_dir / "users.npy", e.metrics.users)
        for metric, values in e.metrics.values.items():
            atomic_save_npy(model_dir / f"{_safe(metric)}_{label}.npy", values)
    paths["per_user"] = per_user_dir
    summary = {"protocol": table["protocol"].iloc[0], "baseline": table["baseline"].iloc[0],
               "models": {e.name: e.metrics.summary() for e in evaluations}, **(info or {})}
    atomic_write_json(paths["json"], summary)
    if plot:
        paths["png"] = output_dir / f"{stem}_{label}.png"
        plot_comparison(table, paths["png"], title)
    return paths

