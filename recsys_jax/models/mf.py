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

Storage: users and items share one embedding table, one bias vector and one seen mask, items in
the rows after the users (row ``num_users + i`` is item ``i``), as factorisation machines keep
all their ids. A batch then costs one row gather, one gradient scatter and one optimizer update
per kind of parameter instead of two; with Adam updating the whole tables every step that makes
the ML-100K CPU epoch ≈ 10 % faster (``python -m benchmarks.mf_epoch``). The per-side views
(``user_embedding``, ``item_bias``, …) and ``export_arrays`` / ``load_arrays`` keep the user/item
names, and the initial values are the same draws as with two tables (users first).

The embedding and bias tables are ``training.tables.Table`` parameters read with ``lookup``, so
a row-sparse optimizer (``optimizer.tables``) updates only the rows a step reads; the ``"mean"``
fallbacks read them whole through ``all_rows`` (no gradient, as before).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from recsys_jax.training.tables import Table

FALLBACKS = ("zero", "mean")


class SeenMask(nnx.Variable):
    """Marks the ids that have at least one training interaction (not trained, checkpointed)."""


# export_arrays name -> (table attribute, side); side 0 = the user rows, 1 = the item rows.
_SIDE_ARRAYS = {"user_embeddings": ("embedding", 0), "item_embeddings": ("embedding", 1),
                "user_bias": ("bias", 0), "item_bias": ("bias", 1),
                "user_seen": ("seen", 0), "item_seen": ("seen", 1)}


class MatrixFactorization(nnx.Module):
    """User/item embeddings with user/item biases and a global mean.

    Ids must lie in ``[0, num_users)`` / ``[0, num_items)``; JAX clamps out-of-range gathers
    silently, so callers validate ids before they reach ``__call__`` (the training loop and
    ``recsys_jax.evaluation.validators`` do).

    Attributes:
      embedding: ``(num_users + num_items, dim)`` table (``Table``), user rows then item rows.
      bias: ``(num_users + num_items,)`` table, the same order.
      global_mean: the scalar μ.
      seen: ``(num_users + num_items,)`` boolean ``SeenMask``, the same order.
    """

    def __init__(self, num_users: int, num_items: int, dim: int, *, rngs: nnx.Rngs,
                 init_std: float = 0.01, global_mean: float = 0.0, unseen_user: str = "zero",
                 unseen_item: str = "zero"):
        """Creates the parameters; every id counts as seen until ``mark_seen`` is called.

        Args:
          num_users: number of user rows (ids 0..num_users-1).
          num_items: number of item rows.
          dim: embedding dimension.
          rngs: random streams; ``rngs.params()`` draws the user rows, then the item rows.
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
        user_rows = init(rngs.params(), (num_users, dim), jnp.float32)
        item_rows = init(rngs.params(), (num_items, dim), jnp.float32)
        self.embedding = Table(jnp.concatenate([user_rows, item_rows]))
        self.bias = Table(jnp.zeros((num_users + num_items,), jnp.float32))
        self.global_mean = nnx.Param(jnp.asarray(global_mean, jnp.float32))
        self.seen = SeenMask(jnp.ones((num_users + num_items,), jnp.bool_))

    def _side(self, array: jax.Array, side: int) -> jax.Array:
        return array[:self.num_users] if side == 0 else array[self.num_users:]

    @property
    def user_embedding(self) -> jax.Array:
        """The user rows of ``embedding`` (read-only; write with ``load_arrays``)."""
        return self._side(self.embedding[...], 0)

    @property
    def item_embedding(self) -> jax.Array:
        """The item rows of ``embedding`` (read-only; write with ``load_arrays``)."""
        return self._side(self.embedding[...], 1)

    @property
    def user_bias(self) -> jax.Array:
        """The user entries of ``bias`` (read-only)."""
        return self._side(self.bias[...], 0)

    @property
    def item_bias(self) -> jax.Array:
        """The item entries of ``bias`` (read-only)."""
        return self._side(self.bias[...], 1)

    @property
    def user_seen(self) -> jax.Array:
        """The user entries of ``seen`` (read-only; set with ``mark_seen``)."""
        return self._side(self.seen[...], 0)

    @property
    def item_seen(self) -> jax.Array:
        """The item entries of ``seen`` (read-only; set with ``mark_seen``)."""
        return self._side(self.seen[...], 1)

    def mark_seen(self, users: np.ndarray, items: np.ndarray) -> None:
        """Sets the seen mask to exactly the ids present in the training interactions."""
        seen = np.zeros(self.num_users + self.num_items, np.bool_)
        seen[np.asarray(users)] = True
        seen[self.num_users + np.asarray(items)] = True
        self.seen[...] = jnp.asarray(seen)

    def _user_row_mask(self, users: np.ndarray) -> np.ndarray:
        mask = np.zeros(self.num_users + self.num_items, np.bool_)
        mask[np.asarray(users)] = True
        return mask

    def begin_fold_in(self, users: np.ndarray) -> None:
        """Marks ``users`` as seen (``contract.FoldIn``). A user unseen in training starts
        from what the fallback served it with (zero row and bias, or the seen users' means),
        so fold-in refits from the prediction the model made before."""
        new = self._user_row_mask(users) & ~np.asarray(self.seen[...])
        if not new.any():
            return
        if self.unseen_user == "mean":
            row, bias = self._seen_means(0)
        else:
            row, bias = jnp.zeros((self.dim,), jnp.float32), jnp.zeros((), jnp.float32)
        fresh = jnp.asarray(new)
        self.embedding[...] = jnp.where(fresh[:, None], row, self.embedding[...])
        self.bias[...] = jnp.where(fresh, bias, self.bias[...])
        self.seen[...] = self.seen[...] | fresh

    def user_side_rows(self, users: np.ndarray) -> dict[str, np.ndarray]:
        """The rows of ``users`` in the shared tables (``contract.FoldIn``): their embedding
        rows and biases; the item rows, μ and the seen mask are not parameters fold-in moves."""
        mask = self._user_row_mask(users)
        return {"embedding": mask, "bias": mask}

    def _rows(self, users: jax.Array, items: jax.Array) -> jax.Array:
        """Row indices ``(2,) + users.shape``: the users' rows, then the items'."""
        users = jnp.asarray(users)
        return jnp.stack([users, jnp.asarray(items, users.dtype) + self.num_users])

    def __call__(self, users: jax.Array, items: jax.Array) -> jax.Array:
        """Predicted ratings, shape ``users.shape``, for int id arrays of equal shape."""
        rows = self._rows(users, items)
        vectors, bias = self.embedding.lookup(rows), self.bias.lookup(rows)
        seen = self.seen[...][rows]
        p, user_bias, user_known = self._fallback(0, vectors[0], bias[0], seen[0],
                                                  self.unseen_user)
        q, item_bias, item_known = self._fallback(1, vectors[1], bias[1], seen[1],
                                                  self.unseen_item)
        interaction = jnp.where(user_known & item_known, jnp.sum(p * q, axis=-1), 0.0)
        return self.global_mean[...] + user_bias + item_bias + interaction

    def _fallback(self, side: int, vectors: jax.Array, bias: jax.Array, id_seen: jax.Array,
                  mode: str) -> tuple[jax.Array, jax.Array, jax.Array]:
        """One side's rows, biases and has-a-vector mask, unseen ids replaced.

        ``"zero"``: an unseen id has bias 0 and no vector (mask False). ``"mean"``: it gets the
        unweighted mean row and bias of the seen ids (mask True, so its vector is used).
        """
        if mode == "zero":
            return vectors, jnp.where(id_seen, bias, 0.0), id_seen
        mean_row, mean_bias = self._seen_means(side)
        return (jnp.where(id_seen[..., None], vectors, mean_row),
                jnp.where(id_seen, bias, mean_bias), jnp.ones_like(id_seen))

    def _seen_means(self, side: int) -> tuple[jax.Array, jax.Array]:
        """The unweighted mean row and bias of one side's seen ids (the ``"mean"`` fallback)."""
        weight = self._side(self.seen[...], side).astype(jnp.float32)
        count = jnp.maximum(jnp.sum(weight), 1.0)
        # all_rows: the fallback is a read-out of the seen rows (no gradient), not something to
        # train; under a row-sparse optimizer it reads the whole table on every step.
        mean_row = weight @ self._side(self.embedding.all_rows(), side) / count
        mean_bias = weight @ self._side(self.bias.all_rows(), side) / count
        return mean_row, mean_bias

    def row_l2(self, users: jax.Array, items: jax.Array) -> jax.Array:
        """Per-example ‖p_u‖² + ‖q_i‖² + b_u² + b_i² of the rows an example uses.

        This is the regulariser of classic SVD (Funk, Koren): only the rows in the batch are
        penalised, once per rating they take part in, unlike weight decay on whole tables.
        """
        rows = self._rows(users, items)
        vectors, bias = self.embedding.lookup(rows), self.bias.lookup(rows)
        return jnp.sum(jnp.sum(vectors * vectors, axis=-1) + jnp.square(bias), axis=0)

    def export_arrays(self) -> dict[str, np.ndarray]:
        """The learnt tables as NumPy, per side, named as the exported ``.npy`` files."""
        arrays = {name: np.asarray(self._side(getattr(self, table)[...], side))
                  for name, (table, side) in _SIDE_ARRAYS.items()}
        return {**arrays, "global_mean": np.asarray(self.global_mean[...])}

    def seen_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """``(user_seen, item_seen)`` as boolean NumPy (``contract.SeenMasks``)."""
        return np.asarray(self.user_seen), np.asarray(self.item_seen)

    def ranking_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """User and item vectors whose dot product ranks items as the predictions do.

        [p_u, 1] · [q_i, b_i] = p_u·q_i + b_i; the rest of r̂(u, i) = μ + b_u is the same for
        all of a user's items. Rows of unseen ids are masked as the ``"zero"`` fallback masks
        them (an unseen user ranks by item bias; an unseen item scores like one with zero bias
        and no interaction).
        """
        user_seen, item_seen = (m.astype(np.float32)[:, None] for m in self.seen_masks())
        users = np.concatenate([np.asarray(self.user_embedding) * user_seen,
                                np.ones_like(user_seen)], axis=1)
        items = np.concatenate([np.asarray(self.item_embedding) * item_seen,
                                np.asarray(self.item_bias)[:, None] * item_seen], axis=1)
        return users.astype(np.float32), items.astype(np.float32)

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Sets any of the ``export_arrays`` tables by their export names (the inverse).

        Raises:
          ValueError: on an unknown name or a shape that is not the model's.
        """
        exported = self.export_arrays()
        unknown = sorted(set(arrays) - set(exported))
        if unknown:
            raise ValueError(f"unknown MF arrays {unknown}; known: {sorted(exported)}")
        for name, value in arrays.items():
            value = np.asarray(value)
            if value.shape != exported[name].shape:
                raise ValueError(f"{name} has shape {value.shape}, the model's is "
                                 f"{exported[name].shape}")
            if name == "global_mean":
                self.global_mean[...] = jnp.asarray(value, jnp.float32)
                continue
            table, side = _SIDE_ARRAYS[name]
            start = 0 if side == 0 else self.num_users
            variable = getattr(self, table)
            variable[...] = variable[...].at[start:start + len(value)].set(
                jnp.asarray(value, variable[...].dtype))


def build_mf(model_config: Mapping[str, Any], *, num_users: int, num_items: int,
             train: Mapping[str, np.ndarray], rngs: nnx.Rngs) -> MatrixFactorization:
    """Registry builder: MF sized for the data, μ = train mean, seen mask from ``train``.

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
