"""Comparing saved runs and the simple baselines on one split: evaluation → table → files."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from recsys_jax.evaluation import baselines as baselines_lib
from recsys_jax.evaluation.comparison_table import (
    BootstrapSettings,
    ModelEvaluation,
    comparison_table,
    rating_comparison_table,
)
from recsys_jax.evaluation.evaluate import EvaluationTarget, evaluate_ranking
from recsys_jax.evaluation.ranking import RankingStats
from recsys_jax.evaluation.rating_metrics import rating_metrics
from recsys_jax.evaluation.runs import Run, RunError
from recsys_jax.evaluation.sampled import DEFAULT_NUM_NEGATIVES, sampled_candidates

REFERENCE_BASELINE = "popularity"


class SplitMismatchError(RunError):
    """Runs made on different splits (or on another catalogue) cannot be compared."""


def check_runs(runs: Sequence[Run], split_fingerprint: str, num_users: int,
               num_items: int) -> None:
    """Refuses runs whose split fingerprint or catalogue differs from the split's.

    Raises:
      SplitMismatchError: listing every offending run.
    """
    problems = []
    for run in runs:
        if run.split_fingerprint != split_fingerprint:
            problems.append(f"{run.name} ({run.path}): split {run.split_fingerprint[:12]}… ≠ "
                            f"{split_fingerprint[:12]}…")
        elif run.num_items != num_items or (run.kind != "ranked" and run.num_users != num_users):
            problems.append(f"{run.name} ({run.path}): {run.num_users} users × "
                            f"{run.num_items} items ≠ {num_users} × {num_items}")
    names = [r.name for r in runs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"run names used twice: {dupes}")
    if problems:
        raise SplitMismatchError("refusing to compare runs made on a different split:\n  "
                                 + "\n  ".join(problems))


@dataclasses.dataclass(frozen=True)
class ComparisonResult:
    """Evaluations, the table built from them, and ranking timings per model."""

    evaluations: list[ModelEvaluation]
    table: pd.DataFrame
    timings: dict[str, RankingStats]


def compare_ranking(runs: Sequence[Run], target: EvaluationTarget, split_fingerprint: str,
                    ks: Sequence[int], *,
                    baselines: Sequence[str] = baselines_lib.RANKING_BASELINES,
                    reference: str = REFERENCE_BASELINE, protocol: str = "full",
                    num_negatives: int = DEFAULT_NUM_NEGATIVES, sample_seed: int = 0,
                    random_seed: int = 0, graded: bool = False,
                    item_vectors: Mapping[str, np.ndarray] | None = None,
                    bootstrap: BootstrapSettings = BootstrapSettings(),
                    chunk_size: int | None = None) -> ComparisonResult:
    """Evaluates the baselines and every run on ``target`` and tabulates them vs ``reference``.

    Popularity is always evaluated (every comparison table includes it). Under the sampled
    protocol all models are ranked on the same sampled candidates.
    """
    check_runs(runs, split_fingerprint, target.num_users, target.num_items)
    names = list(dict.fromkeys([REFERENCE_BASELINE, *baselines]))
    clash = sorted(set(names) & {r.name for r in runs})
    if clash:
        raise RunError(f"run name(s) {clash} clash with baseline names")
    candidates = None
    if protocol == "sampled":
        candidates = sampled_candidates(target.relevant, target.interacted, num_negatives,
                                        sample_seed)
    sources = [(n, baselines_lib.ranking_baseline(n, target.train, random_seed)) for n in names]
    sources += [(r.name, r.source) for r in runs]
    evaluations, timings = [], {}
    for name, source in sources:
        stats = RankingStats()
        metrics = evaluate_ranking(source, target, ks, protocol=protocol,
                                   candidates=candidates, graded=graded,
                                   item_vectors=item_vectors, chunk_size=chunk_size,
                                   stats=stats)
        evaluations.append(ModelEvaluation(name, metrics))
        timings[name] = stats
    table = comparison_table(evaluations, reference, bootstrap=bootstrap)
    return ComparisonResult(evaluations=evaluations, table=table, timings=timings)


def compare_rating_baselines(train: tuple[np.ndarray, np.ndarray, np.ndarray],
                             test: tuple[np.ndarray, np.ndarray, np.ndarray], num_users: int,
                             num_items: int, rating_scale: tuple[float, float], *,
                             kinds: Sequence[str] = baselines_lib.RATING_BASELINES,
                             reference: str = "global_mean",
                             bootstrap: BootstrapSettings = BootstrapSettings()
                             ) -> ComparisonResult:
    """Fits the rating baselines on ``train`` (users, items, ratings) and compares test RMSE/MAE."""
    names = list(dict.fromkeys([reference, *kinds]))
    evaluations = []
    for kind in names:
        model = baselines_lib.fit_rating_baseline(kind, *train, num_users, num_items)
        pred = model.predict(test[0], test[1])
        evaluations.append(ModelEvaluation(kind, rating_metrics(test[0], pred, test[2],
                                                                rating_scale)))
    table = rating_comparison_table(evaluations, reference, bootstrap=bootstrap)
    return ComparisonResult(evaluations=evaluations, table=table, timings={})
