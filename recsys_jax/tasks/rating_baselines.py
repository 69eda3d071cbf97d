"""A trained rating model next to the suite's rating baselines.

``compare_with_rating_baselines`` scores the model's test predictions and the suite's rating
baselines (global/user/item mean, regularised user+item bias) with the suite's clipped
RMSE/MAE, and writes the comparison (user-level bootstrap CIs, paired tests). The baselines are
fitted on the parts the model's test users were scored from (train, or train + val after a
fold-in), so both sides of every Δ had the same information.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from recsys_jax.evaluation import baselines as baselines_lib
from recsys_jax.evaluation.comparison_table import (
    BootstrapSettings,
    ModelEvaluation,
    rating_comparison_table,
    to_markdown,
    write_comparison,
)
from recsys_jax.evaluation.rating_metrics import rating_metrics

REFERENCE = "user_item_bias"
SEEN_PARTS = (("train",), ("train", "val"))


def baseline_evaluations(data: Any, seen_parts: tuple[str, ...] = ("train",)
                         ) -> list[ModelEvaluation]:
    """Test rating metrics of every suite rating baseline, each fitted on the rows of
    ``seen_parts`` of ``data`` (a ``tasks.rating.RatingData``).

    Raises:
      ValueError: for ``seen_parts`` other than train, or train + val.
    """
    if seen_parts not in SEEN_PARTS:
        raise ValueError(f"seen_parts must be one of {SEEN_PARTS}, got {seen_parts}")
    seen = {column: np.concatenate([getattr(data, part)[column] for part in seen_parts])
            for column in ("user", "item", "rating")}
    test = data.test
    evaluations = []
    for kind in baselines_lib.RATING_BASELINES:
        baseline = baselines_lib.fit_rating_baseline(
            kind, seen["user"], seen["item"], seen["rating"], data.num_users, data.num_items)
        evaluations.append(ModelEvaluation(kind, rating_metrics(
            test["user"], baseline.predict(test["user"], test["item"]), test["rating"],
            data.rating_scale)))
    return evaluations


def compare_with_rating_baselines(data: Any, test_predictions: np.ndarray,
                                  output_dir: str | os.PathLike | None, *, model_name: str,
                                  seen_parts: tuple[str, ...] = ("train",),
                                  reference: str = REFERENCE,
                                  bootstrap: BootstrapSettings = BootstrapSettings()) -> str:
    """Test RMSE/MAE of the model and every rating baseline, Δ against ``reference``.

    ``data`` is a ``tasks.rating.RatingData``; ``seen_parts`` the parts the model's test
    predictions were made from (``("train",)`` or ``("train", "val")``): the baselines are
    fitted on the same rows. Writes ``rating_comparison_full.{md,csv,json,png}`` and per-user
    values into ``output_dir`` (unless None); returns the Markdown table.
    """
    test = data.test
    evaluations = baseline_evaluations(data, seen_parts)
    evaluations.append(ModelEvaluation(model_name, rating_metrics(
        test["user"], test_predictions, test["rating"], data.rating_scale)))
    table = rating_comparison_table(evaluations, reference, bootstrap=bootstrap)
    title = (f"Test rating error: {model_name} vs baselines (all fitted on "
             f"{' + '.join(seen_parts)})")
    if output_dir is not None:
        write_comparison(output_dir, table, evaluations, title=title, stem="rating_comparison")
    return to_markdown(table, title)
