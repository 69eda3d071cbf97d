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
from recsys_jax.evaluation.runs import Run, RunError, in_split_order
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


class InformationError(RunError):
    """A run evaluated on a part it has seen, or runs whose users have seen different parts."""


def check_information(runs: Sequence[Run], part: str,
                      allow_unequal: bool = False) -> tuple[str, ...]:
    """Refuses leaks and unequal information; returns the parts the baselines should see.

    A run whose ``seen_parts`` include ``part`` was given the held-out answers, so it is
    refused. Runs whose ``seen_parts`` differ are refused unless ``allow_unequal``.

    Returns:
      The runs' common ``seen_parts`` (the union when unequal runs are allowed), or
      ``("train",)`` without runs.

    Raises:
      InformationError: naming each offending run, its seen parts and what to do.
    """
    leaks = [f"{r.name} ({r.path}): its users have seen {'+'.join(r.seen_parts)}"
             for r in runs if part in r.seen_parts]
    if leaks:
        raise InformationError(
            f"refusing to evaluate on the {part} part runs that have seen it:\n  "
            + "\n  ".join(leaks) + f"\nEvaluate them on a later part, or export runs whose "
            f"users were computed without the {part} part.")
    kinds = {r.seen_parts for r in runs}
    if len(kinds) > 1 and not allow_unequal:
        detail = "\n  ".join(f"{r.name}: {'+'.join(r.seen_parts)}" for r in runs)
        raise InformationError(
            "refusing to compare runs whose users have seen different parts of the split:\n  "
            f"{detail}\nExport them with the same information, or pass "
            "--allow_unequal_information (allow_unequal=True) to compare anyway; the table "
            "then says what each model saw.")
    union = {p for parts in kinds for p in parts} or {"train"}
    return in_split_order(union)


def check_reference(reference: str, names: Sequence[str]) -> None:
    """Refuses a reference that is not one of the names shown in the table.

    Raises:
      RunError: listing the names.
    """
    if reference not in names:
        raise RunError(f"--reference {reference!r} is not a model in this comparison; use one "
                       f"of the names shown in the table: {list(names)}")


@dataclasses.dataclass(frozen=True)
class ComparisonResult:
    """Evaluations, the table built from them, ranking timings per model, and the parts the
    baselines were fitted on."""

    evaluations: list[ModelEvaluation]
    table: pd.DataFrame
    timings: dict[str, RankingStats]
    baseline_seen_parts: tuple[str, ...] = ("train",)


def compare_ranking(runs: Sequence[Run], target: EvaluationTarget, split_fingerprint: str,
                    ks: Sequence[int], *,
                    baselines: Sequence[str] = baselines_lib.RANKING_BASELINES,
                    reference: str = REFERENCE_BASELINE, protocol: str = "full",
                    num_negatives: int = DEFAULT_NUM_NEGATIVES, sample_seed: int = 0,
                    random_seed: int = 0, graded: bool = False,
                    item_vectors: Mapping[str, np.ndarray] | None = None,
                    bootstrap: BootstrapSettings = BootstrapSettings(),
                    chunk_size: int | None = None, allow_unequal_information: bool = False,
                    baseline_seen_parts: Sequence[str] | None = None) -> ComparisonResult:
    """Evaluates the baselines and every run on ``target`` and tabulates them vs ``reference``.

    Popularity is always evaluated (every comparison table includes it). Under the sampled
    protocol all models are ranked on the same sampled candidates. Runs that have seen
    ``target.part`` are refused, and runs with different ``seen_parts`` too unless
    ``allow_unequal_information`` (``check_information``). The baselines are fitted on
    ``baseline_seen_parts``, by default the parts the runs have seen; the table's
    ``seen_parts`` column says what each model saw. ``reference`` is a name shown in the
    table (a run's name or a baseline), checked before any evaluation.
    """
    check_runs(runs, split_fingerprint, target.num_users, target.num_items)
    fitted_on = check_information(runs, target.part, allow_unequal_information)
    if baseline_seen_parts is not None:
        fitted_on = in_split_order(baseline_seen_parts)
    try:
        seen_matrix = target.seen(fitted_on)
    except ValueError as e:
        raise InformationError(f"baselines cannot be fitted on {'+'.join(fitted_on)}: {e}"
                               ) from None
    names = list(dict.fromkeys([REFERENCE_BASELINE, *baselines]))
    clash = sorted(set(names) & {r.name for r in runs})
    if clash:
        raise RunError(f"run name(s) {clash} clash with baseline names")
    check_reference(reference, names + [r.name for r in runs])
    candidates = None
    if protocol == "sampled":
        candidates = sampled_candidates(target.relevant, target.interacted, num_negatives,
                                        sample_seed)
    sources = [(n, baselines_lib.ranking_baseline(n, seen_matrix, random_seed), fitted_on)
               for n in names]
    sources += [(r.name, r.source, r.seen_parts) for r in runs]
    evaluations, timings = [], {}
    for name, source, seen in sources:
        stats = RankingStats()
        metrics = evaluate_ranking(source, target, ks, protocol=protocol,
                                   candidates=candidates, graded=graded,
                                   item_vectors=item_vectors, chunk_size=chunk_size,
                                   stats=stats)
        evaluations.append(ModelEvaluation(name, metrics, seen_parts=seen))
        timings[name] = stats
    table = comparison_table(evaluations, reference, bootstrap=bootstrap)
    return ComparisonResult(evaluations=evaluations, table=table, timings=timings,
                            baseline_seen_parts=fitted_on)


def compare_rating_baselines(train: tuple[np.ndarray, np.ndarray, np.ndarray],
                             test: tuple[np.ndarray, np.ndarray, np.ndarray], num_users: int,
                             num_items: int, rating_scale: tuple[float, float], *,
                             kinds: Sequence[str] = baselines_lib.RATING_BASELINES,
                             reference: str = "global_mean",
                             bootstrap: BootstrapSettings = BootstrapSettings(),
                             seen_parts: tuple[str, ...] = ("train",)) -> ComparisonResult:
    """Fits the rating baselines on ``train`` (users, items, ratings) and compares test RMSE/MAE.

    ``seen_parts`` names the parts ``train`` holds (shown in the table).
    """
    names = list(dict.fromkeys([reference, *kinds]))
    evaluations = []
    for kind in names:
        model = baselines_lib.fit_rating_baseline(kind, *train, num_users, num_items)
        pred = model.predict(test[0], test[1])
        evaluations.append(ModelEvaluation(kind, rating_metrics(test[0], pred, test[2],
                                                                rating_scale),
                                           seen_parts=seen_parts))
    table = rating_comparison_table(evaluations, reference, bootstrap=bootstrap)
    return ComparisonResult(evaluations=evaluations, table=table, timings={},
                            baseline_seen_parts=seen_parts)
