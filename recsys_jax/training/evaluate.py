"""Rating predictions and RMSE/MAE computed on the device, in fixed-size chunks.

The evaluation data is padded once to a multiple of the chunk size and kept on the device;
one jitted function (compiled once per model structure) predicts every chunk with
``lax.map`` and reduces to sums, so validating each epoch costs one call and two scalars back.
Predictions are clipped to the rating scale before the errors are taken, as the evaluation
suite does.
"""

from __future__ import annotations

from functools import partial
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from recsys_jax.training.columns import check_id_range


def _chunking(n: int, chunk_size: int) -> tuple[int, int]:
    chunk = max(1, min(chunk_size, n))
    return chunk, -(-n // chunk)


def _pad_chunks(column: np.ndarray, chunk: int, num_chunks: int) -> np.ndarray:
    padded = np.zeros((chunk * num_chunks,) + column.shape[1:], column.dtype)
    padded[:len(column)] = column
    return padded.reshape((num_chunks, chunk) + column.shape[1:])


@partial(jax.jit, static_argnums=0)
def _predict_chunks(graphdef: nnx.GraphDef, state: nnx.State, users: jax.Array,
                    items: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, state)
    return jax.lax.map(lambda ui: model(ui[0], ui[1]), (users, items))


@partial(jax.jit, static_argnums=(0, 1))
def _error_sums(graphdef: nnx.GraphDef, scale: tuple[float, float], state: nnx.State,
                users: jax.Array, items: jax.Array, ratings: jax.Array,
                valid: jax.Array) -> dict[str, jax.Array]:
    model = nnx.merge(graphdef, state)

    def chunk_sums(chunk):
        u, i, r, v = chunk
        err = jnp.clip(model(u, i), scale[0], scale[1]) - r
        return jnp.sum(v * err * err), jnp.sum(v * jnp.abs(err))

    sq, ab = jax.lax.map(chunk_sums, (users, items, ratings, valid))
    return {"sq": jnp.sum(sq), "abs": jnp.sum(ab)}


def _check_model_ids(model: nnx.Module, users: np.ndarray, items: np.ndarray) -> None:
    check_id_range(users, model.num_users, "user")
    check_id_range(items, model.num_items, "item")


def predict_ratings(model: nnx.Module, users: np.ndarray, items: np.ndarray, *,
                    chunk_size: int = 65536) -> np.ndarray:
    """Raw (unclipped) predictions for id pairs, as float32 NumPy.

    Raises:
      ValueError: for ids outside the model's ``num_users`` / ``num_items``.
    """
    users = np.asarray(users)
    items = np.asarray(items)
    if users.shape != items.shape or users.ndim != 1:
        raise ValueError(f"users and items must be 1-D of equal length, got {users.shape} "
                         f"and {items.shape}")
    _check_model_ids(model, users, items)
    if len(users) == 0:
        return np.zeros((0,), np.float32)
    chunk, num_chunks = _chunking(len(users), chunk_size)
    graphdef, state = nnx.split(model)
    preds = _predict_chunks(graphdef, state,
                            _pad_chunks(users.astype(np.int32), chunk, num_chunks),
                            _pad_chunks(items.astype(np.int32), chunk, num_chunks))
    return np.asarray(preds).reshape(-1)[:len(users)]


class RatingEvaluator:
    """RMSE and MAE of a model on fixed rating data, with the data kept on the device."""

    def __init__(self, columns: Mapping[str, np.ndarray], rating_scale: tuple[float, float],
                 *, prefix: str = "val", chunk_size: int = 65536):
        """Pads and uploads ``columns`` (``user``, ``item``, ``rating``) once.

        Args:
          columns: the evaluation interactions.
          rating_scale: (low, high); predictions are clipped to it.
          prefix: metric names are ``{prefix}_rmse`` and ``{prefix}_mae``.
          chunk_size: predictions per ``lax.map`` step (bounds device memory).
        """
        n = len(columns["rating"])
        if n == 0:
            raise ValueError(f"no {prefix} ratings to evaluate on")
        self.num_ratings = n
        self.prefix = prefix
        self.rating_scale = (float(rating_scale[0]), float(rating_scale[1]))
        self._users = np.asarray(columns["user"])
        self._items = np.asarray(columns["item"])
        chunk, num_chunks = _chunking(n, chunk_size)
        valid = np.ones(n, np.float32)
        self._arrays = jax.device_put((
            _pad_chunks(self._users.astype(np.int32), chunk, num_chunks),
            _pad_chunks(self._items.astype(np.int32), chunk, num_chunks),
            _pad_chunks(np.asarray(columns["rating"], np.float32), chunk, num_chunks),
            _pad_chunks(valid, chunk, num_chunks)))
        self._checked_for: tuple[int, int] | None = None

    def __call__(self, model: nnx.Module) -> dict[str, float]:
        """``{prefix_rmse, prefix_mae}`` of ``model`` on the data."""
        sizes = (model.num_users, model.num_items)
        if self._checked_for != sizes:
            _check_model_ids(model, self._users, self._items)
            self._checked_for = sizes
        graphdef, state = nnx.split(model)
        sums = jax.device_get(_error_sums(graphdef, self.rating_scale, state, *self._arrays))
        return {f"{self.prefix}_rmse": float(np.sqrt(sums["sq"] / self.num_ratings)),
                f"{self.prefix}_mae": float(sums["abs"] / self.num_ratings)}
