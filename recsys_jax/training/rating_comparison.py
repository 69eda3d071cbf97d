"""A trained rating model next to the evaluation suite: baseline table and a ranking run.

* ``compare_with_rating_baselines`` scores the model's test predictions and the suite's rating
  baselines (global/user/item mean, regularised user+item bias) with the suite's clipped
  RMSE/MAE, and writes the comparison (user-level bootstrap CIs, paired tests).
* ``save_ranking_run`` exports the model in the suite's run format so ranking comparisons
  (``recsys_jax.evaluation.comparison``) can score it alongside other models.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from recsys_jax.evaluation import baselines as baselines_lib
from recsys_jax.evaluation.compare import (BootstrapSettings, ModelEvaluation,
                                           rating_comparison_table, to_markdown,
                                           write_comparison)
from recsys_jax.evaluation.rating import rating_metrics
from recsys_jax.evaluation.runs import save_run
from recsys_jax.training.rating_experiment import RatingData

REFERENCE = "user_item_bias"


def compare_with_rating_baselines(data: RatingData, test_predictions: np.ndarray,
                                  output_dir: str | os.PathLike, *, model_name: str,
                                  reference: str = REFERENCE,
                                  bootstrap: BootstrapSettings = BootstrapSettings()) -> str:
    """Test RMSE/MAE of the model and every rating baseline, Δ against ``reference``.

    Writes ``rating_comparison_full.{md,csv,json,png}`` and per-user values into
    ``output_dir``; returns the Markdown table.
    """
    test, train = data.test, data.train
    evaluations = []
    for kind in baselines_lib.RATING_BASELINES:
        baseline = baselines_lib.fit_rating_baseline(
            kind, train["user"], train["item"], train["rating"], data.num_users, data.num_items)
        evaluations.append(ModelEvaluation(kind, rating_metrics(
            test["user"], baseline.predict(test["user"], test["item"]), test["rating"],
            data.rating_scale)))
    evaluations.append(ModelEvaluation(model_name, rating_metrics(
        test["user"], test_predictions, test["rating"], data.rating_scale)))
    table = rating_comparison_table(evaluations, reference, bootstrap=bootstrap)
    title = f"Test rating error: {model_name} vs baselines"
    write_comparison(output_dir, table, evaluations, title=title, stem="rating_comparison")
    return to_markdown(table, title)


def ranking_embeddings(arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """User and item vectors whose dot product ranks items as the MF model's predictions do.

    [p_u, 1] · [q_i, b_i] = p_u·q_i + b_i; the rest of r̂(u, i) = μ + b_u is the same for all
    of a user's items. Rows of unseen ids are masked as the model masks them (an unseen user
    ranks by item bias; an unseen item scores like one with zero bias and no interaction).
    """
    user_seen = arrays["user_seen"].astype(np.float32)[:, None]
    item_seen = arrays["item_seen"].astype(np.float32)[:, None]
    users = np.concatenate([arrays["user_embeddings"] * user_seen,
                            np.ones_like(user_seen)], axis=1)
    items = np.concatenate([arrays["item_embeddings"] * item_seen,
                            arrays["item_bias"][:, None] * item_seen], axis=1)
    return users.astype(np.float32), items.astype(np.float32)


def save_ranking_run(directory: str | os.PathLike, arrays: Mapping[str, np.ndarray], *,
                     name: str, model: str, dataset: str, split_fingerprint: str,
                     split_protocol: str, metadata: dict[str, Any] | None = None) -> Path:
    """Writes the model as an ``embeddings`` run (``ranking_embeddings``, dot similarity)."""
    users, items = ranking_embeddings(arrays)
    return save_run(directory, name=name, model=model, dataset=dataset,
                    split_fingerprint=split_fingerprint, split_protocol=split_protocol,
                    user_embeddings=users, item_embeddings=items, similarity="dot",
                    metadata={"embeddings": "bias-augmented [p_u, 1] . [q_i, b_i]",
                              **(metadata or {})})
