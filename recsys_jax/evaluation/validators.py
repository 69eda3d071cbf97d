"""Per-epoch validators and model-to-score adapters: how the evaluation suite reads a model.

The suite itself consumes NumPy (or JAX) scores, never models; this module is the bridge for
the model contract (``recsys_jax.models.contract``):

* rating models (``PairScorer`` read as a rating): ``predict_ratings`` and ``RatingEvaluator``,
  RMSE/MAE computed on the device in fixed-size chunks. The evaluation data is padded once to a
  multiple of the chunk size and kept on the device; one jitted function (compiled once per
  model structure) predicts every chunk with ``lax.map`` and reduces to sums, so validating each
  epoch costs one call and two scalars back. Predictions are clipped to the rating scale before
  the errors are taken, as the evaluation suite does.
* ranking models: ``score_source`` hands a ``RankingEmbedder``'s (bias-augmented) embeddings to
  the suite's embedding kernel, a ``UserScores`` model's own whole-row scores (EASE, ItemKNN)
  as a ``ScoreFunction``; other ``PairScorer`` models (GMF, MLP, NeuMF are not dot
  products) hand over a ``ScoreFunction`` that computes the scores of a chunk of users against
  all items with one jitted call. Inside that call users are scored a block at a time
  (``lax.map``), so the ``[users, items, width]`` activations of an MLP never exceed about
  ``_PAIRS_PER_BLOCK`` pairs. ``RankingValidator`` is the ``loop.fit`` callback on top.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from recsys_jax.data.columns import check_id_range
from recsys_jax.evaluation.evaluate import EvaluationTarget, evaluate_ranking
from recsys_jax.evaluation.results import FULL_PROTOCOL
from recsys_jax.evaluation.sampled import DEFAULT_NUM_NEGATIVES, sampled_candidates
from recsys_jax.evaluation.sources import Embeddings, ScoreFunction, ScoreSource
from recsys_jax.models.contract import RankingEmbedder, UserScores


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


_PAIRS_PER_BLOCK = 1 << 18


def _block_users(num_items: int) -> int:
    users = max(1, _PAIRS_PER_BLOCK // max(num_items, 1))
    return 1 << (users.bit_length() - 1)  # a power of two, so padded shapes repeat


@partial(jax.jit, static_argnums=(0, 2))
def _all_item_scores(graphdef: nnx.GraphDef, state: nnx.State, block: int,
                     users: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, state)
    items = jnp.arange(model.num_items, dtype=jnp.int32)[None, :]
    blocks = users.reshape(-1, block)
    scores = jax.lax.map(lambda u: model(u[:, None], items), blocks)
    return scores.reshape(users.shape[0], model.num_items)


def score_function(model: nnx.Module) -> ScoreFunction:
    """``users -> [len(users), num_items]`` logits of ``model`` (a JAX array).

    User ids are padded to a power of two (at least one block) so the jitted scorer compiles
    for a handful of shapes only; ids are checked against ``model.num_users``.
    """
    graphdef, state = nnx.split(model)
    num_users, num_items = model.num_users, model.num_items
    block = _block_users(num_items)

    def fn(users: np.ndarray) -> jax.Array:
        users = np.asarray(users, np.int64)
        if len(users) and (users.min() < 0 or users.max() >= num_users):
            raise ValueError(f"user ids outside [0, {num_users})")
        n = len(users)
        size = max(block, 1 << max(n - 1, 0).bit_length())
        padded = np.zeros(size, np.int32)
        padded[:n] = users
        return _all_item_scores(graphdef, state, block, jnp.asarray(padded))[:n]

    return ScoreFunction(fn=fn, num_items=num_items)


def score_source(model: nnx.Module) -> ScoreSource:
    """Embeddings for a ``RankingEmbedder`` (dot product), the model's own ``user_scores``
    for a ``UserScores`` model (item-item models), else a score function over all items of a
    ``PairScorer``."""
    if isinstance(model, RankingEmbedder):
        users, items = model.ranking_embeddings()
        return Embeddings(users, items, similarity="dot")
    if isinstance(model, UserScores):
        return ScoreFunction(fn=model.user_scores, num_items=model.num_items)
    return score_function(model)


def score_matrix(model: nnx.Module, chunk: int = 1024) -> np.ndarray:
    """The dense ``[num_users, num_items]`` float32 scores (for saving small runs)."""
    source = score_source(model)
    if isinstance(source, Embeddings):
        users, items = source.prepared()
        return users @ items.T
    out = np.empty((model.num_users, model.num_items), np.float32)
    for start in range(0, model.num_users, chunk):
        ids = np.arange(start, min(start + chunk, model.num_users))
        out[ids] = np.asarray(source(ids))
    return out


class RankingValidator:
    """``model -> {"<prefix>_<metric>@<k>": mean}`` on one part of a split: the ``evaluate``
    callback of ``loop.fit`` for the implicit and retrieval tasks.

    The sampled protocol's candidates are drawn once, so every epoch is ranked on the same
    candidates.
    """

    def __init__(self, target: EvaluationTarget, *, ks: Sequence[int] = (10,),
                 protocol: str = FULL_PROTOCOL, metrics: Sequence[str] = ("hr", "ndcg"),
                 num_negatives: int = DEFAULT_NUM_NEGATIVES, sample_seed: int = 0,
                 prefix: str = "val"):
        """Args: the target (``data.target("val")``), cut-offs, ``"full"`` or ``"sampled"``,
        the metrics to report, the sampled protocol's N and seed, the name prefix."""
        if protocol not in (FULL_PROTOCOL, "sampled"):
            raise ValueError(f"protocol must be 'full' or 'sampled', got {protocol!r}")
        self.target, self.ks, self.protocol = target, tuple(ks), protocol
        self.metrics, self.prefix = tuple(metrics), prefix
        self.candidates = (sampled_candidates(target.relevant, target.interacted,
                                              num_negatives, sample_seed)
                           if protocol == "sampled" else None)

    def __call__(self, model: nnx.Module) -> dict[str, float]:
        result = evaluate_ranking(score_source(model), self.target, self.ks,
                                  protocol=self.protocol, candidates=self.candidates,
                                  metrics=self.metrics)
        wanted = {f"{m}@{k}" for m in self.metrics for k in self.ks}
        return {f"{self.prefix}_{name}": result.mean(name) for name in result.metric_names
                if name in wanted}
