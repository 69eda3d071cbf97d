"""Biased matrix factorisation for explicit ratings.

    r̂(u, i) = μ + b_u + b_i + p_u · q_i

μ is a learnable scalar initialised to the training mean rating; b_u, b_i start at zero;
p_u, q_i are drawn from N(0, init_std²).

Users or items without a training interaction fall back to the biases and the global mean:
the model stores a boolean *seen mask* per side (``user_seen``, ``item_seen``, a non-trainable
``SeenMask`` variable saved with the checkpoints). For an unseen id the embedding term and its
own bias are replaced by 0, so an unseen user gets μ + b_i, an unseen item μ + b_u and a pair
of both μ. Without this, such ids would be scored from their random initial rows (and, with
weight decay, biases pulled towards zero by nothing but the decay).

That zero fallback treats a new user as the *rating-weighted* average user. ``unseen_user=
"mean"`` (and ``unseen_item="mean"``) serves an unseen id by the unweighted average of the
seen rows instead (mean bias and mean embedding over seen ids): a new user is one more draw from
the user population, and on MovieLens light users rate higher than the heavy raters who dominate
μ, so the average *user* predicts newcomers better than μ does. Training is unaffected (every
training id is seen); only predictions for unseen ids change.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


FALLBACKS = ("zero", "mean")


class SeenMask(nnx.Variable):
    """Marks the ids that have at least one training interaction (not trained, checkpointed)."""


class MatrixFactorization(nnx.Module):
    """User/item embeddings with user/item biases and a global mean.

    Ids must lie in ``[0, num_users)`` / ``[0, num_items)``; JAX clamps out-of-range gathers
    silently, so callers validate ids before they reach ``__call__`` (the training loop and
    ``recsys_jax.training.evaluate`` do).
    """

    def __init__(self, num_users: int, num_items: int, dim: int, *, rngs: nnx.Rngs,
                 init_std: float = 0.01, global_mean: float = 0.0, unseen_user: str = "zero",
                 unseen_item: str = "zero"):
        """Creates the parameters; every id counts as seen until ``mark_seen`` is called.

        Args:
          num_users: number of user rows (ids 0..num_users-1).
          num_items: number of item rows.
          dim: embedding dimension.
          rngs: random streams; ``rngs.params()`` draws the embedding tables.
          init_std: standard deviation of the normal embedding initialiser.
          global_mean: initial value of μ, normally the mean training rating.
          unseen_user: how an unseen user is served: ``"zero"`` (no bias, no embedding term)
            or ``"mean"`` (the mean bias and embedding of the seen users).
          unseen_item: the same for unseen items.
        """
        if num_users <= 0 or num_items <= 0 or dim <= 0:
            raise ValueError(f"num_users, num_items and dim must be positive, got "
                             f"{num_users}, {num_items}, {dim}")
        for side, mode in (("unseen_user", unseen_user), ("unseen_item", unseen_item)):
            if mode not in FALLBACKS:
                raise ValueError(f"{side} must be one of {FALLBACKS}, got {mode!r}")
        self.unseen_user = unseen_user
        self.unseen_item = unseen_item
        self.num_users = num_users
        self.num_items = num_items
        self.dim = dim
        init = jax.nn.initializers.normal(stddev=init_std)
        self.user_embedding = nnx.Param(init(rngs.params(), (num_users, dim), jnp.float32))
        self.item_embedding = nnx.Param(init(rngs.params(), (num_items, dim), jnp.float32))
        self.user_bias = nnx.Param(jnp.zeros((num_users,), jnp.float32))
        self.item_bias = nnx.Param(jnp.zeros((num_items,), jnp.float32))
        self.global_mean = nnx.Param(jnp.asarray(global_mean, jnp.float32))
        self.user_seen = SeenMask(jnp.ones((num_users,), jnp.bool_))
        self.item_seen = SeenMask(jnp.ones((num_items,), jnp.bool_))

    def mark_seen(self, users: np.ndarray, items: np.ndarray) -> None:
        """Sets the seen masks to exactly the ids present in the training interactions."""
        users = np.asarray(users)
        items = np.asarray(items)
        user_seen = np.zeros(self.num_users, np.bool_)
        item_seen = np.zeros(self.num_items, np.bool_)
        user_seen[users] = True
        item_seen[items] = True
        self.user_seen[...] = jnp.asarray(user_seen)
        self.item_seen[...] = jnp.asarray(item_seen)

    def __call__(self, users: jax.Array, items: jax.Array) -> jax.Array:
        """Predicted ratings, shape ``users.shape``, for int id arrays of equal shape."""
        p, user_bias, user_known = _rows_or_fallback(
            self.user_embedding[...], self.user_bias[...], self.user_seen[...], users,
            self.unseen_user)
        q, item_bias, item_known = _rows_or_fallback(
            self.item_embedding[...], self.item_bias[...], self.item_seen[...], items,
            self.unseen_item)
        interaction = jnp.where(user_known & item_known, jnp.sum(p * q, axis=-1), 0.0)
        return self.global_mean[...] + user_bias + item_bias + interaction

    def row_l2(self, users: jax.Array, items: jax.Array) -> jax.Array:
        """Per-example ‖p_u‖² + ‖q_i‖² + b_u² + b_i² of the rows an example uses.

        This is the regulariser of classic SVD (Funk, Koren): only the rows in the batch are
        penalised, once per rating they take part in, unlike weight decay on whole tables.
        """
        p = self.user_embedding[...][users]
        q = self.item_embedding[...][items]
        return (jnp.sum(p * p, axis=-1) + jnp.sum(q * q, axis=-1)
                + jnp.square(self.user_bias[...][users]) + jnp.square(self.item_bias[...][items]))

    def export_arrays(self) -> dict[str, np.ndarray]:
        """The learnt tables as NumPy, named as the exported ``.npy`` files."""
        return {
            "user_embeddings": np.asarray(self.user_embedding[...]),
            "item_embeddings": np.asarray(self.item_embedding[...]),
            "user_bias": np.asarray(self.user_bias[...]),
            "item_bias": np.asarray(self.item_bias[...]),
            "global_mean": np.asarray(self.global_mean[...]),
            "user_seen": np.asarray(self.user_seen[...]),
            "item_seen": np.asarray(self.item_seen[...]),
        }


def _rows_or_fallback(table: jax.Array, bias: jax.Array, seen: jax.Array, ids: jax.Array,
                      mode: str) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Embedding rows, biases and a has-a-vector mask for ``ids``, unseen ones replaced.

    ``"zero"``: an unseen id has bias 0 and no vector (mask False). ``"mean"``: it gets the
    unweighted mean row and bias of the seen ids (mask True, so its vector is used).
    """
    id_seen = seen[ids]
    rows, row_bias = table[ids], bias[ids]
    if mode == "zero":
        return rows, jnp.where(id_seen, row_bias, 0.0), id_seen
    weight = seen.astype(table.dtype)
    count = jnp.maximum(jnp.sum(weight), 1.0)
    # stop_gradient: the fallback is a read-out of the seen rows, not something to train.
    mean_row = jax.lax.stop_gradient(weight @ table / count)
    mean_bias = jax.lax.stop_gradient(weight @ bias / count)
    rows = jnp.where(id_seen[..., None], rows, mean_row)
    return rows, jnp.where(id_seen, row_bias, mean_bias), jnp.ones_like(id_seen)


def build_mf(model_config: Mapping[str, Any], *, num_users: int, num_items: int,
             train: Mapping[str, np.ndarray], rngs: nnx.Rngs) -> MatrixFactorization:
    """Registry builder: MF sized for the data, μ = train mean, seen masks from ``train``.

    Args:
      model_config: ``dim``, ``init_std`` and optionally ``unseen_user`` / ``unseen_item``
        (``"zero"`` when absent).
      num_users: number of user ids.
      num_items: number of item ids.
      train: training columns ``user``, ``item``, ``rating`` (validated ids).
      rngs: random streams for the initialisers.
    """
    ratings = np.asarray(train["rating"], np.float64)
    model = MatrixFactorization(
        num_users, num_items, int(model_config["dim"]), rngs=rngs,
        init_std=float(model_config.get("init_std", 0.01)),
        global_mean=float(ratings.mean()) if ratings.size else 0.0,
        unseen_user=str(model_config.get("unseen_user", "zero")),
        unseen_item=str(model_config.get("unseen_item", "zero")))
    model.mark_seen(train["user"], train["item"])
    return model
