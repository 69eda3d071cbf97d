"""An implicit model in one file, fitted without gradients: items ranked by training count.

It implements ``contract.PairScorer`` (score = log(1 + count of the item)), ``RankingEmbedder``
(user vector [1], item vector [score]) and ``SelfFitting`` (``fit`` counts the training
positives), so ``train_and_evaluate`` skips the gradient loop. Registered with one line:
``"popularity": "recsys_jax.models.popularity:build",``.
"""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class Popularity(nnx.Module):
    def __init__(self, num_users: int, num_items: int):
        self.num_users, self.num_items = num_users, num_items
        self.log_count = nnx.Param(jnp.zeros((num_items,), jnp.float32))

    def __call__(self, users: jax.Array, items: jax.Array) -> jax.Array:
        users, items = jnp.broadcast_arrays(users, items)
        return self.log_count[...][items]

    def ranking_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.ones((self.num_users, 1), np.float32),
                np.asarray(self.log_count[...])[:, None])

    def fit(self, train: Mapping[str, np.ndarray], config: Any) -> dict[str, Any]:
        counts = np.bincount(train["item"], minlength=self.num_items)
        self.log_count[...] = jnp.log1p(jnp.asarray(counts, jnp.float32))
        return {"positives_counted": int(counts.sum())}


def build(model_config: Mapping[str, Any], *, num_users: int, num_items: int,
          train: Mapping[str, np.ndarray], rngs: nnx.Rngs) -> Popularity:
    del model_config, train, rngs
    return Popularity(num_users, num_items)
