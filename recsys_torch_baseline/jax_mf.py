"""The JAX side of the MF benchmark: recsys_jax's training path under the baseline's protocol.

Uses the library's own pieces unchanged (``build_model``, ``make_optimizer``, the scanned
on-device epoch ``steps.make_train_epoch``, ``RatingEvaluator``, ``predict_ratings``) with the
early-stopping rule of ``fit_torch_mf`` (both use ``training.early_stopping.EarlyStopping``).
What ``recsys_jax.training.loop.fit`` adds on top — orbax checkpoints, ``metrics.jsonl`` — is
left out on both sides, so the comparison measures the frameworks, not checkpoint I/O (inside
``fit`` an ML-100K epoch takes about 0.03 s more).
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import jax
import numpy as np
from flax import nnx

from recsys_jax.models.registry import build_model
from recsys_jax.training import steps as steps_lib
from recsys_jax.training.early_stopping import EarlyStopping
from recsys_jax.training.evaluate import RatingEvaluator, predict_ratings
from recsys_jax.training.losses import make_rating_loss
from recsys_jax.training.optimizers import make_optimizer
from recsys_torch_baseline.mf_training import FitRecord


def fit_jax_mf(config: Any, data: Mapping[str, Any], *, seed: int,
               max_epochs: int | None = None, start: float | None = None) -> FitRecord:
    """Trains recsys_jax's MF with early stopping on validation RMSE; restores the best epoch.

    Args:
      config: the MF experiment config (``model``, ``optimizer``, ``training`` blocks).
      data: ``train``, ``val``, ``test`` column dicts, ``num_users``, ``num_items``,
        ``rating_scale``.
      seed: model initialisation and shuffling seed (replaces ``training.seed``).
      max_epochs: replaces ``training.epochs`` when given.
      start: ``time.perf_counter()`` the set-up time is measured from (default: now).
    """
    start = time.perf_counter() if start is None else start
    t = config.training
    epochs = int(max_epochs or t.epochs)
    train = {k: np.asarray(v) for k, v in data["train"].items()}
    model = build_model(config.model, num_users=data["num_users"], num_items=data["num_items"],
                        train=train, rngs=nnx.Rngs(params=seed))
    num_steps = steps_lib.steps_per_epoch(len(train["rating"]), t.batch_size)
    tx, _ = make_optimizer(config.optimizer, steps_per_epoch=num_steps, num_epochs=epochs)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    device_data = jax.device_put(train)
    key = jax.random.key(seed)
    evaluator = RatingEvaluator(data["val"], data["rating_scale"], prefix="val")
    jax.block_until_ready((state, device_data))
    setup_s = time.perf_counter() - start

    t0 = time.perf_counter()
    run_epoch = steps_lib.make_train_epoch(
        graphdef, make_rating_loss(t.loss, t.l2_reg), t.batch_size).compile(
        state, device_data, key)
    compile_s = time.perf_counter() - t0

    history, early = [], EarlyStopping(t.patience)
    best_state, time_to_best = None, float("nan")
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        state, metrics = run_epoch(state, device_data, key, np.int32(epoch))
        jax.block_until_ready(state)
        t1 = time.perf_counter()
        model, _ = nnx.merge(graphdef, state)
        val_rmse = evaluator(model)["val_rmse"]
        t2 = time.perf_counter()
        train_loss = steps_lib.summarize_steps([jax.device_get(metrics)])["loss"]
        history.append({"epoch": epoch, "train_loss": train_loss, "val_rmse": val_rmse,
                        "epoch_time_s": t1 - t0, "eval_time_s": t2 - t1})
        if early.update(val_rmse, epoch):
            # The next epoch donates ``state``; keep a host copy of the best one.
            best_state = jax.device_get(state)
            time_to_best = time.perf_counter() - start
        elif early.should_stop:
            break
    total_s = time.perf_counter() - start
    model, _ = nnx.merge(graphdef, best_state)
    return FitRecord(variant="jax", setup_s=setup_s, compile_s=compile_s, history=history,
                     best_epoch=early.best_epoch, best_val_rmse=early.best_value,
                     time_to_best_s=time_to_best,
                     total_s=total_s,
                     test_predictions=predict_ratings(model, data["test"]["user"],
                                                      data["test"]["item"]))
