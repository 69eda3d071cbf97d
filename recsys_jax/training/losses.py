"""Loss functions of ``(model, batch, rng) -> (loss, aux_metrics)``.

A batch is a dict of equal-length columns. The training step always adds a ``weight`` column
(1 for real rows, 0 for the padding that fills an epoch's last batch), and every loss must
average with it so padded rows contribute nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
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
