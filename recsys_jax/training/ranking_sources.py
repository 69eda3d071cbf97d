"""A trained implicit model as a score source of the evaluation suite, and the per-epoch
validation callback built on it.

Evaluation consumes NumPy (or JAX) scores, never models. A dot-product model hands over its
(bias-augmented) embeddings, so the suite's embedding kernel ranks the catalogue; GMF, MLP and
NeuMF are not dot products, so they hand over a ``ScoreFunction`` that computes the scores of a
chunk of users against all items with one jitted call. Inside that call users are scored a
block at a time (``lax.map``), so the ``[users, items, width]`` activations of an MLP never
exceed about ``_PAIRS_PER_BLOCK`` pairs.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from recsys_jax.evaluation.evaluate import EvaluationTarget, evaluate_ranking
from recsys_jax.evaluation.results import FULL_PROTOCOL
from recsys_jax.evaluation.sampled import DEFAULT_NUM_NEGATIVES, sampled_candidates
from recsys_jax.evaluation.sources import Embeddings, ScoreFunction, ScoreSource

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
    """Embeddings for a model with ``ranking_embeddings()`` (dot product), else a score
    function over all items."""
    if hasattr(model, "ranking_embeddings"):
        users, items = model.ranking_embeddings()
        return Embeddings(users, items, similarity="dot")
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
    callback of ``loop.fit`` for implicit models.

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
