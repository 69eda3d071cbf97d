"""A rating model in one file: r̂(u, i) = μ + b_u + b_i (the classic baseline predictor).

It implements only ``contract.PairScorer``: no embeddings, no seen masks, no row L2 (its config
sets ``training.l2_reg = 0``). Registered with one line in ``MODELS``:
``"bias_only": "recsys_jax.models.bias_only:build",``.
"""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class BiasOnly(nnx.Module):
    def __init__(self, num_users: int, num_items: int, global_mean: float):
        self.num_users, self.num_items = num_users, num_items
        self.mu = nnx.Param(jnp.asarray(global_mean, jnp.float32))
        self.user_bias = nnx.Param(jnp.zeros((num_users,), jnp.float32))
        self.item_bias = nnx.Param(jnp.zeros((num_items,), jnp.float32))

    def __call__(self, users: jax.Array, items: jax.Array) -> jax.Array:
        return self.mu[...] + self.user_bias[...][users] + self.item_bias[...][items]


def build(model_config: Mapping[str, Any], *, num_users: int, num_items: int,
          train: Mapping[str, np.ndarray], rngs: nnx.Rngs) -> BiasOnly:
    del model_config, rngs
    ratings = np.asarray(train["rating"], np.float64)
    return BiasOnly(num_users, num_items, float(ratings.mean()) if ratings.size else 0.0)
