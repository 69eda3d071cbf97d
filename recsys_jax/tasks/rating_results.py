"""Test error of rating models and the suite's baselines over seeds, per split protocol.

For each seed, ``run_protocol`` builds the split (the seed also drives the ``random`` split;
temporal splits ignore it), trains every configured model with ``training.seed`` = seed, fits
the evaluation suite's rating baselines (global/user/item mean, user+item bias) on the same
training part, and scores everything on test with the suite's clipped RMSE/MAE. It records the
cold-start share of the test part from the split's leakage report. ``format_markdown`` renders
mean ± sample standard deviation over seeds.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections

from recsys_jax.evaluation import baselines as baselines_lib
from recsys_jax.tasks.fold_in import seen_parts, test_user_inputs
from recsys_jax.tasks.rating import RatingData, load_rating_data
from recsys_jax.tasks.rating_baselines import baseline_evaluations
from recsys_jax.tasks.rating_search import score_config

# Model name -> config for a protocol (e.g. the tuned config's ``get_config``).
ConfigFactory = Callable[[str], ml_collections.ConfigDict]
BASELINES = baselines_lib.RATING_BASELINES
COLD_START_FIELDS = ("test_unseen_user_share", "test_unseen_item_share")


@dataclasses.dataclass
class ProtocolResults:
    """Per-seed test scores of every method on one split protocol.

    Attributes:
      protocol: the split protocol.
      seeds: the seeds run.
      cold_start: per seed, the test shares of events from unseen users / items.
      runs: one record per (method, seed): ``method``, ``seed``, ``test_rmse``, ``test_mae``,
        and for trained models ``val_rmse``, ``best_epoch``, ``epochs_trained``.
    """

    protocol: str
    seeds: list[int]
    cold_start: list[dict[str, float]]
    runs: list[dict[str, Any]]

    def methods(self) -> list[str]:
        """Method names in first-run order."""
        return list(dict.fromkeys(r["method"] for r in self.runs))

    def values(self, method: str, metric: str) -> list[float]:
        """``metric`` of ``method`` per seed."""
        return [r[metric] for r in self.runs if r["method"] == method]

    def summary(self, method: str, metric: str) -> tuple[float, float]:
        """Mean and sample standard deviation (0 for one seed) over seeds."""
        values = self.values(method, metric)
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    def cold_start_mean(self, field: str) -> float:
        """Mean over seeds of a cold-start share (constant for temporal splits)."""
        return statistics.fmean(c[field] for c in self.cold_start)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the summaries."""
        summaries = {m: {metric: dict(zip(("mean", "std"), self.summary(m, metric)))
                         for metric in ("test_rmse", "test_mae")} for m in self.methods()}
        return {**dataclasses.asdict(self), "summary": summaries,
                "cold_start_mean": {f: self.cold_start_mean(f) for f in COLD_START_FIELDS}}


def baseline_scores(data: RatingData, seen_parts: tuple[str, ...] = ("train",)
                    ) -> dict[str, dict[str, float]]:
    """Test RMSE/MAE of each suite baseline fitted on the ``seen_parts`` of ``data`` (the
    parts the models' test users were scored from)."""
    return {e.name: {"test_rmse": e.metrics.aggregates["rmse"],
                     "test_mae": e.metrics.aggregates["mae"]}
            for e in baseline_evaluations(data, seen_parts)}


def seeded(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
    """A copy of ``config`` with the model seed set and, for ``random``, the split seed."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.training.seed = seed
    if config.split.name == "random":
        config.split.seed = seed
    return config


def run_protocol(protocol: str, models: Mapping[str, ConfigFactory], seeds: Sequence[int], *,
                 on_run: Callable[[dict[str, Any]], None] | None = None) -> ProtocolResults:
    """Trains and tests every model and baseline on ``protocol`` for each seed.

    Raises:
      ValueError: when two models would see different data or splits (their ``data`` and
        ``split`` blocks differ), which would make the comparison meaningless.
    """
    configs = {name: factory(protocol) for name, factory in models.items()}
    shared = {name: (c.data.to_dict(), c.split.to_dict()) for name, c in configs.items()}
    if len({repr(v) for v in shared.values()}) > 1:
        raise ValueError(f"models differ in their data or split blocks: {shared}")
    inputs = {name: test_user_inputs(c) for name, c in configs.items()}
    if len(set(inputs.values())) > 1:
        raise ValueError(f"models score test users from different parts: {inputs}")
    baseline_parts = seen_parts(next(iter(inputs.values())))
    results = ProtocolResults(protocol, list(seeds), [], [])
    for seed in seeds:
        prepared = load_rating_data(seeded(next(iter(configs.values())), seed))
        report = prepared.split_report
        results.cold_start.append({f: float(getattr(report, f)) for f in COLD_START_FIELDS})
        records = [{"method": kind, **scores}
                   for kind, scores in baseline_scores(prepared, baseline_parts).items()]
        for name, config in configs.items():
            scores = score_config(seeded(config, seed), prepared, with_test=True)
            records.append({"method": name, "test_rmse": scores["test_rmse"],
                            "test_mae": scores["test_mae"], "val_rmse": scores["val_rmse"],
                            "best_epoch": scores["best_epoch"],
                            "epochs_trained": scores["epochs_trained"]})
        for record in records:
            record["seed"] = seed
            results.runs.append(record)
            if on_run is not None:
                on_run(record)
    return results


def format_markdown(results: Sequence[ProtocolResults], metric: str = "test_rmse", *,
                    labels: Mapping[str, str] | None = None,
                    goals: Mapping[str, float] | None = None, goal_method: str = "") -> str:
    """One row per protocol: cold-start shares, then ``metric`` mean ± std per method.

    Args:
      results: one entry per protocol.
      metric: ``test_rmse`` or ``test_mae``.
      labels: column titles by method name (default the name).
      goals: an optional target per protocol, shown with whether ``goal_method`` meets it.
      goal_method: the method compared with the goal.
    """
    labels = labels or {}
    methods = list(dict.fromkeys(m for r in results for m in r.methods()))
    header = (["protocol", "test events, unseen users", "test events, unseen items"]
              + [labels.get(m, m) for m in methods] + (["goal"] if goals else []))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        cells = [f"`{r.protocol}`", f"{r.cold_start_mean('test_unseen_user_share'):.1%}",
                 f"{r.cold_start_mean('test_unseen_item_share'):.1%}"]
        best = min(methods, key=lambda m: r.summary(m, metric)[0])
        for m in methods:
            mean, std = r.summary(m, metric)
            cell = f"{mean:.4f} ± {std:.4f}"
            cells.append(f"**{cell}**" if m == best else cell)
        if goals:
            goal = goals.get(r.protocol)
            met = goal is not None and r.summary(goal_method, metric)[0] <= goal
            cells.append("-" if goal is None else f"≤ {goal:.2f}: {'met' if met else 'not met'}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
