"""A rating-prediction experiment from NumPy columns to a finished workdir.

Given train/val/test columns (``user``, ``item``, ``rating``) and an experiment config (the
fields of ``configs/mf_ml100k.py``), this builds the model named in the config, trains it with
``loop.fit`` (early stopping on validation RMSE, checkpoints, ``metrics.jsonl``), restores the
best epoch, and writes into ``workdir``:

  config.json            the resolved config
  metrics.jsonl          one record per epoch
  checkpoints/           orbax ``latest/`` (resume) and ``best/``
  user_embeddings.npy, item_embeddings.npy, user_bias.npy, item_bias.npy, global_mean.npy,
  user_seen.npy, item_seen.npy     the exported model (rows = encoded ids)
  test_predictions.npy   raw predictions for the test rows, in their order
  test_metrics.json      test RMSE/MAE (clipped to the rating scale) and run facts
  learning_curve.png     train loss and validation metrics per epoch
  report.md              a short Markdown summary

It knows nothing about data sets or splits: the caller (``experiments/train_mf.py``) loads,
encodes and splits the data and may add Markdown sections to the report.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from pathlib import Path
from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from recsys_jax import fileio
from recsys_jax.models.registry import build_model
from recsys_jax.training import columns as columns_lib
from recsys_jax.training.curves import plot_learning_curve
from recsys_jax.training.evaluate import RatingEvaluator, predict_ratings
from recsys_jax.training.loop import FitConfig, FitResult, fit
from recsys_jax.training.losses import make_rating_loss
from recsys_jax.training.optimizers import make_optimizer
from recsys_jax.training.steps import steps_per_epoch

MONITOR = "val_rmse"


@dataclasses.dataclass(frozen=True)
class RatingData:
    """Encoded, split rating data.

    Attributes:
      train, val, test: columns ``user`` (int32), ``item`` (int32), ``rating`` (float32).
      num_users, num_items: sizes of the id spaces (tables have this many rows).
      rating_scale: (lowest, highest) rating; predictions are clipped to it for metrics.
    """

    train: dict[str, np.ndarray]
    val: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    num_users: int
    num_items: int
    rating_scale: tuple[float, float]

    @classmethod
    def from_arrays(cls, parts: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], *,
                    num_users: int, num_items: int,
                    rating_scale: tuple[float, float]) -> "RatingData":
        """Validates ``{"train"|"val"|"test": (users, items, ratings)}`` into columns."""
        cols = {name: columns_lib.rating_columns(*parts[name], num_users=num_users,
                                                  num_items=num_items)
                for name in ("train", "val", "test")}
        return cls(**cols, num_users=num_users, num_items=num_items,
                   rating_scale=(float(rating_scale[0]), float(rating_scale[1])))


def fit_config(config: ml_collections.ConfigDict) -> FitConfig:
    """The loop settings of an experiment config's ``training`` block."""
    t = config.training
    return FitConfig(batch_size=t.batch_size, num_epochs=t.epochs, patience=t.patience,
                     seed=t.seed, monitor=MONITOR, mode="min",
                     data_on_device=t.get("data_on_device", "auto"))


def write_config(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> None:
    """Writes ``config.json``; warns when a resumed run's saved config differs."""
    path = Path(workdir) / "config.json"
    resolved = json.loads(config.to_json())
    if path.exists():
        saved, now = _flatten(json.loads(path.read_text())), _flatten(resolved)
        changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
        if changed:
            logging.warning("config differs from the one saved in %s: %s", path, changed)
    fileio.atomic_write_json(path, resolved)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def train_rating_model(config: ml_collections.ConfigDict, data: RatingData,
                       workdir: str | os.PathLike) -> tuple[nnx.Module, FitResult]:
    """Builds the configured model and trains it; returns it at its best validation epoch."""
    t = config.training
    rngs = nnx.Rngs(params=t.seed)
    model = build_model(config.model, num_users=data.num_users, num_items=data.num_items,
                        train=data.train, rngs=rngs)
    num_steps = steps_per_epoch(len(data.train["rating"]), t.batch_size)
    tx, schedule = make_optimizer(config.optimizer, steps_per_epoch=num_steps,
                                  num_epochs=t.epochs)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    loss_fn = make_rating_loss(t.loss, t.l2_reg)
    evaluator = RatingEvaluator(data.val, data.rating_scale, prefix="val",
                                chunk_size=t.get("eval_chunk_size", 65536))
    result = fit(model, optimizer, loss_fn, data.train, evaluator, fit_config(config),
                 workdir=workdir, schedule=schedule)
    return model, result


def export_model(model: nnx.Module, workdir: str | os.PathLike) -> list[str]:
    """Saves every array of ``model.export_arrays()`` as ``<name>.npy``; returns the names."""
    names = []
    for name, array in model.export_arrays().items():
        fileio.atomic_save_npy(Path(workdir) / f"{name}.npy", array)
        names.append(f"{name}.npy")
    return names


def cold_start_counts(model: nnx.Module, split: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Rows whose user or item had no training interaction (served by the fallback)."""
    arrays = model.export_arrays()
    unseen_user = ~arrays["user_seen"][split["user"]]
    unseen_item = ~arrays["item_seen"][split["item"]]
    return {"rows": int(len(split["user"])), "unseen_user": int(unseen_user.sum()),
            "unseen_item": int(unseen_item.sum()),
            "unseen_either": int((unseen_user | unseen_item).sum())}


def run_rating_experiment(config: ml_collections.ConfigDict, data: RatingData,
                          workdir: str | os.PathLike, *,
                          report_sections: Sequence[str] = ()) -> dict[str, Any]:
    """Trains, tests, exports and reports; see the module docstring for the files.

    Args:
      config: experiment config (``model``, ``optimizer``, ``training`` blocks are used).
      data: the encoded, split ratings.
      workdir: output directory; a run interrupted there resumes.
      report_sections: Markdown appended to ``report.md`` (data set, split report, baselines).

    Returns:
      The contents of ``test_metrics.json``.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    write_config(config, workdir)
    model, result = train_rating_model(config, data, workdir)

    test = RatingEvaluator(data.test, data.rating_scale, prefix="test",
                           chunk_size=config.training.get("eval_chunk_size", 65536))(model)
    fileio.atomic_save_npy(workdir / "test_predictions.npy",
                           predict_ratings(model, data.test["user"], data.test["item"]))
    exported = export_model(model, workdir)
    epoch_times = [r["epoch_time_s"] for r in result.history]
    summary = {
        **test,
        "best_epoch": result.best_epoch,
        MONITOR: result.best_value,
        "epochs_trained": result.last_epoch,
        "stopped_early": result.stopped_early,
        "compile_time_s": result.compile_time_s,
        "median_epoch_time_s": statistics.median(epoch_times) if epoch_times else None,
        "train_ratings_per_s": (len(data.train["rating"]) / statistics.median(epoch_times)
                                if epoch_times else None),
        "num_train": int(len(data.train["rating"])),
        "num_val": int(len(data.val["rating"])),
        "num_test": int(len(data.test["rating"])),
        "num_users": data.num_users,
        "num_items": data.num_items,
        "rating_scale": list(data.rating_scale),
        "test_cold_start": cold_start_counts(model, data.test),
        "model": config.model.name,
    }
    fileio.atomic_write_json(workdir / "test_metrics.json", summary)
    if result.history:
        plot_learning_curve(result.history, workdir / "learning_curve.png", monitor=MONITOR,
                            title=f"{config.model.name}, dim {config.model.get('dim', '')}")
    fileio.atomic_write_text(workdir / "report.md",
                             format_report(config, summary, result, exported, report_sections))
    logging.info("test RMSE %.4f, MAE %.4f (best epoch %s); outputs in %s",
                 test["test_rmse"], test["test_mae"], result.best_epoch, workdir)
    return summary


def append_report_section(workdir: str | os.PathLike, markdown: str) -> None:
    """Adds a Markdown section at the end of ``report.md``."""
    path = Path(workdir) / "report.md"
    text = path.read_text() if path.exists() else ""
    fileio.atomic_write_text(path, text.rstrip("\n") + "\n\n" + markdown.rstrip() + "\n")


def format_report(config: ml_collections.ConfigDict, summary: Mapping[str, Any],
                  result: FitResult, exported: Sequence[str],
                  sections: Sequence[str] = ()) -> str:
    """The Markdown of ``report.md``."""
    m, o, t = config.model, config.optimizer, config.training
    cold = summary["test_cold_start"]
    epoch_time = summary["median_epoch_time_s"]
    lines = [
        f"# {m.name} on {config.data.get('dataset', 'ratings')}",
        "",
        "| metric | value |",
        "|---|---|",
        f"| test RMSE | {summary['test_rmse']:.4f} |",
        f"| test MAE | {summary['test_mae']:.4f} |",
        f"| best val RMSE | {summary[MONITOR]:.4f} (epoch {summary['best_epoch']}) |",
        "",
        "## Setup",
        "",
        f"- data: {summary['num_train']:,} train / {summary['num_val']:,} val / "
        f"{summary['num_test']:,} test ratings, {summary['num_users']:,} users, "
        f"{summary['num_items']:,} items, scale {summary['rating_scale']}",
        f"- model: `{m.name}`, dim {m.get('dim', '-')}, init std {m.get('init_std', '-')}",
        f"- optimizer: {o.name}, lr {o.lr:g} ({o.get('schedule', 'constant')}), weight decay "
        f"{o.get('weight_decay', 0.0):g}; loss {t.loss}, row L2 {t.l2_reg:g}",
        f"- training: batch {t.batch_size}, up to {t.epochs} epochs, patience {t.patience}, "
        f"seed {t.seed}",
        "",
        "## Training",
        "",
        f"- epochs trained: {summary['epochs_trained']}"
        + (" (stopped early)" if summary["stopped_early"] else "")
        + (f", resumed after epoch {result.resumed_from}" if result.resumed_from else ""),
        f"- compile time: {summary['compile_time_s']:.2f}s; median epoch "
        + (f"{epoch_time:.2f}s, {summary['train_ratings_per_s']:,.0f} ratings/s"
           if epoch_time else "n/a")
        + f" (data {'on device' if result.data_on_device else 'streamed from host'})",
        f"- test rows served by the bias fallback (user or item unseen in training): "
        f"{cold['unseen_either']:,} of {cold['rows']:,}",
        "",
        "![learning curve](learning_curve.png)",
        "",
        "## Files",
        "",
        "`config.json`, `metrics.jsonl`, `checkpoints/` (latest, best), `test_metrics.json`, "
        "`test_predictions.npy`, " + ", ".join(f"`{name}`" for name in exported),
        "",
    ]
    for section in sections:
        lines += [section.rstrip(), ""]
    return "\n".join(lines)
