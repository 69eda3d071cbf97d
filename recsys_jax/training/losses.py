"""Loss functions of ``(model, batch, rng) -> (loss, aux_metrics)``.

A batch is a dict of equal-length columns. The training step always adds a ``weight`` column
(1 for real rows, 0 for the padding that fills an epoch's last batch), and every loss must
average with it so padded rows contribute nothing.
"""

from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx

Batch = Mapping[str, jax.Array]
LossFn = Callable[[nnx.Module, Batch, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


def batch_weight(batch: Batch) -> jax.Array:
    """The ``weight`` column, or ones when the batch has none."""
    if "weight" in batch:
        return batch["weight"]
    return jnp.ones(jnp.shape(next(iter(batch.values())))[:1], jnp.float32)


def weighted_mean(values: jax.Array, weight: jax.Array) -> jax.Array:
    """Σ w·v / Σ w (0 for an all-zero weight vector)."""
    return jnp.sum(values * weight) / jnp.maximum(jnp.sum(weight), 1e-12)


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
        model with ``row_l2(users, items)``. The loss is mean(ℓ) + λ·mean(row_l2), so λ is
        comparable to the per-rating λ of SGD-trained SVD.

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
