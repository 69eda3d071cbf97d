"""A retrieval model in one file: id-embedding towers, L2-normalised, learnable temperature.

It implements ``contract.RetrievalEncoder``. It uses no features (``set_user_inputs`` has
nothing to replace; ``encode_users`` for a new user without an id returns the mean user
vector). Registered with one line:
``"id_towers": "recsys_jax.models.id_towers:build",``.
"""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def _unit(x: jax.Array) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))


class IdTowers(nnx.Module):
    def __init__(self, num_users: int, num_items: int, dim: int, *, rngs: nnx.Rngs):
        self.num_users, self.num_items, self.dim = num_users, num_items, dim
        init = jax.nn.initializers.normal(0.1)
        self.users = nnx.Param(init(rngs.params(), (num_users, dim), jnp.float32))
        self.items = nnx.Param(init(rngs.params(), (num_items, dim), jnp.float32))
        self.log_temperature = nnx.Param(jnp.log(jnp.asarray(0.1, jnp.float32)))

    @property
    def temperature(self) -> jax.Array:
        return jnp.exp(jnp.clip(self.log_temperature[...], -7.0, 0.0))

    def encode_batch(self, batch, item_ids):
        return self.user_embeddings(batch["user"]), _unit(self.items[...][item_ids])

    def user_embeddings(self, user_ids, item_table=None):
        return _unit(self.users[...][user_ids])

    def encode_users(self, features, *, history_ids=None, history_mask=None, item_table=None):
        mean = _unit(jnp.mean(self.users[...], axis=0))
        return jnp.broadcast_to(mean, features.shape[:-1] + (self.dim,))

    def set_user_inputs(self, features: Any) -> None:
        del features  # Ids only: nothing stored per user but the learnt vectors.

    def __call__(self, users: jax.Array, items: jax.Array) -> jax.Array:
        return jnp.sum(self.user_embeddings(users) * _unit(self.items[...][items]), -1)

    def ranking_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.asarray(_unit(self.users[...])), np.asarray(_unit(self.items[...])))


def build(model_config: Mapping[str, Any], *, num_users: int, num_items: int,
          train: Mapping[str, np.ndarray], rngs: nnx.Rngs, features: Any = None) -> IdTowers:
    del train, features
    return IdTowers(num_users, num_items, int(model_config.get("dim", 16)), rngs=rngs)
