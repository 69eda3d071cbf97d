"""The JAX side of the MF benchmark: what a user runs, ``train_rating_model`` → ``loop.fit``.

``fit_jax_mf`` calls the library's own rating task, ``train_rating_model(config, data,
workdir=None)``: the registry's model, the configured optimizer and loss, ``RatingEvaluator`` on
the validation part and the shared ``loop.fit`` (scanned on-device epochs, validation and early
stopping on validation RMSE inside its epoch loop, the best state restored). ``workdir=None``
means no checkpoints, ``metrics.jsonl`` or TensorBoard files: neither framework writes files
while it trains. Every timing comes from the returned ``FitResult`` plus the wall time measured
around the call (``harness.fit_timings``).

The rating task is imported here and nowhere else in ``benchmarks/`` (it moves to
``recsys_jax.tasks`` with the tasks refactor; re-point this one import).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import ml_collections

from benchmarks import harness
from benchmarks.torch_baseline.mf_training import FitRecord
from recsys_jax.evaluation.validators import predict_ratings
from recsys_jax.tasks.rating import RatingData, train_rating_model


def benchmark_config(config: Any, *, seed: int, max_epochs: int | None = None
                     ) -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``training.seed = seed`` and, when given,
    ``training.epochs = max_epochs`` (early stopping still applies)."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.training.seed = int(seed)
    if max_epochs:
        config.training.epochs = int(max_epochs)
    return config


def fit_jax_mf(config: Any, data: Mapping[str, Any], *, seed: int,
               max_epochs: int | None = None) -> FitRecord:
    """Trains recsys_jax's MF as ``train_rating_model`` does; returns the run's timings and the
    test predictions of the best validation epoch.

    Args:
      config: the MF experiment config (``model``, ``optimizer``, ``training`` blocks).
      data: ``train``, ``val``, ``test`` column dicts, ``num_users``, ``num_items``,
        ``rating_scale`` (as the worker loads them; already validated by the parent).
      seed: model initialisation and shuffling seed (replaces ``training.seed``).
      max_epochs: replaces ``training.epochs`` when given.
    """
    config = benchmark_config(config, seed=seed, max_epochs=max_epochs)
    rating_data = RatingData.from_arrays(
        {part: (data[part]["user"], data[part]["item"], data[part]["rating"])
         for part in ("train", "val", "test")},
        num_users=int(data["num_users"]), num_items=int(data["num_items"]),
        rating_scale=tuple(data["rating_scale"]))
    t0 = time.perf_counter()
    model, result = train_rating_model(config, rating_data, workdir=None)
    wall_s = time.perf_counter() - t0
    timings = harness.fit_timings(result, wall_s)
    return FitRecord(variant="jax", **timings, best_val_rmse=float(result.best_value),
                     test_predictions=predict_ratings(model, data["test"]["user"],
                                                      data["test"]["item"]))
