"""The rating task: explicit ratings, a model that predicts them, RMSE/MAE.

Data: the configured data set, encoded and split (``tasks.data``); columns ``user``, ``item``,
``rating``. Model: any ``contract.PairScorer`` whose score is the predicted rating (``mf`` by
default); ``training.l2_reg > 0`` also needs ``contract.RowRegularized``. Loss: per-example MSE
or Huber (``training.loss``) plus the optional row L2. Validation: RMSE on the validation part,
clipped to the rating scale (monitor ``val_rmse``). Test: RMSE and MAE, by default after the
validation events are folded in (``tasks.fold_in``; ``evaluation.test_user_inputs``); for
models with ``contract.SeenMasks`` also how many test rows fell back to biases.

After training, on the in-memory model: the suite's rating baselines on the same test rows
(user-level bootstrap CIs, paired tests) and, with ``analysis.enabled``, t-SNE of the item
embeddings by genre with a genre-cluster score and similar items.

Files under the workdir besides ``runner``'s: ``<name>.npy`` for each array of
``export_arrays()`` (``ArrayExporter`` models), ``test_predictions.npy`` (raw, in test-row
order), ``comparison/`` (the baselines table), ``run/`` (``RankingEmbedder`` models, in the
suite's run format for ranking comparisons), ``tsne_items.png`` with analysis on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pandas as pd
from flax import nnx

from recsys_jax import fileio
from recsys_jax.data import columns as columns_lib
from recsys_jax.data import splits
from recsys_jax.evaluation.runs import save_run
from recsys_jax.evaluation.validators import RatingEvaluator, predict_ratings
from recsys_jax.models.contract import (
    ArrayExporter,
    PairScorer,
    RankingEmbedder,
    RowRegularized,
    SeenMasks,
    require,
)
from recsys_jax.tasks.base import Task, TaskData
from recsys_jax.tasks.data import load_split
from recsys_jax.tasks.fold_in import describe, fold_in_for_test, seen_parts
from recsys_jax.tasks.rating_baselines import compare_with_rating_baselines
from recsys_jax.training.loop import FitResult
from recsys_jax.training.losses import Batch, LossFn, batch_weight, weighted_mean

MONITOR = "val_rmse"


@dataclasses.dataclass
class RatingData(TaskData):
    """Encoded, split rating data (``train`` from ``TaskData``).

    Attributes:
      val, test: columns ``user`` (int32), ``item`` (int32), ``rating`` (float32).
      rating_scale: (lowest, highest) rating; predictions are clipped to it for metrics.
      items: the encoded items table (``item_id`` = row), for the item analysis.
      split_report: the split's leakage report (cold-start shares of val and test).
    """

    val: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    test: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    rating_scale: tuple[float, float] = (1.0, 5.0)
    items: pd.DataFrame | None = None
    split_report: splits.LeakageReport | None = None

    @classmethod
    def from_arrays(cls, parts: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], *,
                    num_users: int, num_items: int, rating_scale: tuple[float, float],
                    dataset: str = "ratings", split_protocol: str = "",
                    split_fingerprint: str = "", report_section: str = "",
                    items: pd.DataFrame | None = None,
                    split_report: splits.LeakageReport | None = None) -> RatingData:
        """Validates ``{"train"|"val"|"test": (users, items, ratings)}`` into columns."""
        cols = {name: columns_lib.rating_columns(*parts[name], num_users=num_users,
                                                  num_items=num_items)
                for name in ("train", "val", "test")}
        return cls(**cols, num_users=num_users, num_items=num_items, dataset=dataset,
                   split_protocol=split_protocol, split_fingerprint=split_fingerprint,
                   report_section=report_section, items=items, split_report=split_report,
                   rating_scale=(float(rating_scale[0]), float(rating_scale[1])))


def load_rating_data(config: ml_collections.ConfigDict,
                     save_dir: str | Path | None = None) -> RatingData:
    """Loads, encodes and splits the ratings of ``config`` (``ids/``, ``split/`` saved into
    ``save_dir`` when given).

    Raises:
      ValueError: when the split fails its leakage checks.
    """
    loaded = load_split(config, save_dir)
    return RatingData.from_arrays(
        {name: (part["user_id"].to_numpy(), part["item_id"].to_numpy(),
                part["rating"].to_numpy())
         for name, part in loaded.split.parts().items()},
        num_users=loaded.mapping.num_users, num_items=loaded.mapping.num_items,
        rating_scale=loaded.dataset.rating_scale, dataset=loaded.dataset.name,
        split_protocol=loaded.split.protocol, split_fingerprint=loaded.split.fingerprint(),
        report_section=loaded.section(), items=loaded.encoded.items,
        split_report=loaded.split.report)


def _squared_error(pred: jax.Array, target: jax.Array) -> jax.Array:
    return jnp.square(pred - target)


def _huber(pred: jax.Array, target: jax.Array) -> jax.Array:
    return optax.huber_loss(pred, target, delta=1.0)


# Per-example rating losses, by config name (``training.loss``).
RATING_LOSSES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "mse": _squared_error,
    "huber": _huber,
}


def make_rating_loss(name: str = "mse", l2_reg: float = 0.0) -> LossFn:
    """A loss on the ``rating`` column of a batch with ``user`` and ``item`` ids.

    Args:
      name: per-example loss from ``RATING_LOSSES``.
      l2_reg: λ of the per-example L2 on the rows each rating uses (classic SVD); needs a
        ``RowRegularized`` model. The loss is mean(ℓ) + λ·mean(row_l2), so λ is comparable to
        the per-rating λ of SGD-trained SVD.

    Returns:
      ``loss_fn(model, batch, rng) -> (loss, {"rating_loss": ..., ["row_l2": ...]})``.
    """
    if name not in RATING_LOSSES:
        raise ValueError(f"unknown rating loss {name!r}; known: {sorted(RATING_LOSSES)}")
    if l2_reg < 0:
        raise ValueError(f"l2_reg must be >= 0, got {l2_reg}")
    per_example = RATING_LOSSES[name]

    def loss_fn(model: nnx.Module, batch: Batch, rng: jax.Array):
        del rng  # Deterministic model; the argument keeps the loss signature shared.
        weight = batch_weight(batch)
        pred = model(batch["user"], batch["item"])
        rating_loss = weighted_mean(per_example(pred, batch["rating"]), weight)
        aux = {"rating_loss": rating_loss}
        loss = rating_loss
        if l2_reg > 0:
            row_l2 = weighted_mean(model.row_l2(batch["user"], batch["item"]), weight)
            aux["row_l2"] = row_l2
            loss = loss + l2_reg * row_l2
        return loss, aux

    return loss_fn


def cold_start_counts(model: SeenMasks, part: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Rows whose user or item had no training interaction (served by the fallback)."""
    user_seen, item_seen = model.seen_masks()
    unseen_user = ~user_seen[part["user"]]
    unseen_item = ~item_seen[part["item"]]
    return {"rows": len(part["user"]), "unseen_user": int(unseen_user.sum()),
            "unseen_item": int(unseen_item.sum()),
            "unseen_either": int((unseen_user | unseen_item).sum())}


class RatingTask(Task):
    """Explicit ratings: see the module docstring."""

    name = "rating"
    model_protocol = PairScorer
    default_monitor = MONITOR

    def prepare(self, config: ml_collections.ConfigDict, workdir: Path | None) -> RatingData:
        return load_rating_data(config, workdir)

    def loss(self, config: ml_collections.ConfigDict, data: TaskData) -> LossFn:
        return make_rating_loss(config.training.loss, config.training.l2_reg)

    def build_model(self, config: ml_collections.ConfigDict, data: TaskData) -> nnx.Module:
        model = super().build_model(config, data)
        if config.training.l2_reg > 0:
            require(model, RowRegularized, "training.l2_reg > 0")
        return model

    def validator(self, config: ml_collections.ConfigDict, data: RatingData
                  ) -> RatingEvaluator:
        return RatingEvaluator(data.val, data.rating_scale, prefix="val",
                               chunk_size=config.training.get("eval_chunk_size", 65536))

    def evaluate(self, config: ml_collections.ConfigDict, data: RatingData,
                 model: nnx.Module) -> dict[str, Any]:
        """Test RMSE/MAE after folding in the validation events (``tasks.fold_in``; in place,
        so the saved model and exports are the folded-in model) unless
        ``evaluation.test_user_inputs="train"``."""
        inputs = fold_in_for_test(config, model, data.train, data.val,
                                  lambda columns: self.loss(config, data))
        test = RatingEvaluator(data.test, data.rating_scale, prefix="test",
                               chunk_size=config.training.get("eval_chunk_size", 65536))(model)
        facts: dict[str, Any] = {**test, **inputs, "num_val": len(data.val["rating"]),
                                 "num_test": len(data.test["rating"]),
                                 "rating_scale": list(data.rating_scale)}
        if isinstance(model, SeenMasks):
            facts["test_cold_start"] = cold_start_counts(model, data.test)
        return facts

    def export(self, config: ml_collections.ConfigDict, data: RatingData, model: nnx.Module,
               workdir: Path, summary: Mapping[str, Any]) -> dict[str, Any]:
        fileio.atomic_save_npy(workdir / "test_predictions.npy", self.test_predictions(
            model, data))
        if isinstance(model, ArrayExporter):
            for name, array in model.export_arrays().items():
                fileio.atomic_save_npy(workdir / f"{name}.npy", array)
        if isinstance(model, RankingEmbedder):
            users, items = model.ranking_embeddings()
            save_run(workdir / "run", name=config.get("run_name") or workdir.name,
                     model=config.model.name, dataset=data.dataset,
                     seen_parts=seen_parts(summary["test_user_inputs"]),
                     split_fingerprint=data.split_fingerprint,
                     split_protocol=data.split_protocol, user_embeddings=users,
                     item_embeddings=items, similarity="dot",
                     metadata={"config": config.to_dict(), "test_rmse": summary["test_rmse"],
                               "embeddings": "the model's ranking_embeddings()"})
        return {}

    @staticmethod
    def test_predictions(model: nnx.Module, data: RatingData) -> np.ndarray:
        """Raw predictions for the test rows, in their order."""
        return predict_ratings(model, data.test["user"], data.test["item"])

    def report_sections(self, config: ml_collections.ConfigDict, data: RatingData,
                        model: nnx.Module, summary: Mapping[str, Any],
                        workdir: Path | None) -> list[str]:
        lines = ["| metric | value |", "|---|---|",
                 f"| test RMSE | {summary['test_rmse']:.4f} |",
                 f"| test MAE | {summary['test_mae']:.4f} |"]
        if summary.get("best_val") is not None:
            epoch = summary.get("best_epoch")
            lines.append(f"| best val RMSE | {summary['best_val']:.4f}"
                         + (f" (epoch {epoch})" if epoch is not None else "") + " |")
        lines += ["", describe(summary)]
        cold = summary.get("test_cold_start")
        if cold:
            lines += ["", f"Test rows served by the bias fallback (user or item unseen in "
                          f"training): {cold['unseen_either']:,} of {cold['rows']:,}."]
        name = config.get("run_name") or (workdir.name if workdir else config.model.name)
        table = compare_with_rating_baselines(
            data, self.test_predictions(model, data),
            None if workdir is None else workdir / "comparison", model_name=name,
            seen_parts=seen_parts(summary.get("test_user_inputs", "train")))
        sections = ["\n".join(lines), data.report_section,
                    "## Against the rating baselines\n\n" + table]
        analysis = config.get("analysis")
        if analysis and analysis.enabled and data.items is not None and workdir is not None \
                and isinstance(model, ArrayExporter):
            sections.append(self._item_analysis(config, data, model, workdir))
        return sections

    @staticmethod
    def _item_analysis(config: ml_collections.ConfigDict, data: RatingData,
                       model: ArrayExporter, workdir: Path) -> str:
        from recsys_jax.analysis.item_report import analyse_item_embeddings
        a = config.analysis
        train_counts = np.bincount(data.train["item"], minlength=data.num_items)
        result = analyse_item_embeddings(
            model.export_arrays()["item_embeddings"], data.items, train_counts, workdir,
            titles=tuple(a.titles), min_count=a.min_count, k=a.neighbours,
            n_permutations=a.permutations, seed=config.training.seed)
        return ("## Item embeddings\n\n![t-SNE](tsne_items.png)\n\n```\n" + result.format()
                + "\n```")

    def headline(self, summary: Mapping[str, Any]) -> str:
        return (f"test RMSE {summary['test_rmse']:.4f}  MAE {summary['test_mae']:.4f}"
                + (f"  (best epoch {summary['best_epoch']} of {summary['epochs_trained']})"
                   if "best_epoch" in summary else ""))


def train_rating_model(config: ml_collections.ConfigDict, data: RatingData,
                       workdir: str | Path | None) -> tuple[nnx.Module, FitResult]:
    """Builds the configured model and trains it on prepared data (sweeps, benchmarks);
    returns it at its best validation epoch. ``workdir=None`` writes nothing."""
    from recsys_jax.tasks.runner import fit_model
    task = RatingTask()
    model = task.build_model(config, data)
    return model, fit_model(task, config, data, model,
                            None if workdir is None else Path(workdir))
