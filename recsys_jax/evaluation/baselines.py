"""Simple baselines every comparison is measured against.

Ranking (they produce score sources, so they go through exactly the models' ranking code):
- popularity: score(u, i) = c_i, the number of training interactions of item i (ties → lower
  id, like everything else);
- random: score(u, i) ~ U[0, 1), drawn by ``jax.random`` from key fold_in(PRNGKey(seed), u), so a
  user's scores depend only on the seed and the user, not on the chunking.

Rating, with μ the mean training rating, R(u) / R(i) the training ratings of a user / an item:
- global mean: r̂_ui = μ;
- user mean: r̂_ui = mean of R(u) (μ for a user without training ratings);
- item mean: r̂_ui = mean of R(i) (μ for an item without training ratings);
- user + item bias: r̂_ui = μ + b_u + b_i, minimising
  Σ_{(u,i)∈train} (r_ui − μ − b_u − b_i)² + λ_u Σ_u b_u² + λ_i Σ_i b_i² by alternating exact
  updates (starting from b_u = 0):
      b_i ← Σ_{u∈R(i)} (r_ui − μ − b_u) / (λ_i + |R(i)|),
      b_u ← Σ_{i∈R(u)} (r_ui − μ − b_i) / (λ_u + |R(u)|).
  The first sweep gives Koren's damped baseline estimates (TKDD 2010, λ_i = 25, λ_u = 10, our
  defaults); further sweeps converge to the regularised least-squares solution. Unseen users
  and items get bias 0.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from recsys_jax.evaluation.sources import Embeddings, ScoreFunction

RANKING_BASELINES = ("popularity", "random")
RATING_BASELINES = ("global_mean", "user_mean", "item_mean", "user_item_bias")


def item_popularity(train: sp.csr_array) -> np.ndarray:
    """c_i: stored training entries per item (one per distinct user after de-duplication)."""
    train = sp.csr_array(train)
    return np.bincount(train.indices, minlength=train.shape[1]).astype(np.int64)


def popularity_source(train_counts: np.ndarray, num_users: int) -> Embeddings:
    """Popularity as 1-dimensional embeddings: user vector [1], item vector [c_i]."""
    counts = np.asarray(train_counts, dtype=np.float64)
    if counts.max(initial=0) >= 2 ** 24:
        raise ValueError("item counts above 2^24 are not exact in float32")
    return Embeddings(users=np.ones((num_users, 1), np.float32),
                      items=counts.astype(np.float32)[:, None])


def random_source(num_items: int, seed: int = 0) -> ScoreFunction:
    """Uniform random scores per (user, item), reproducible per user."""
    key = jax.random.PRNGKey(seed)

    @jax.jit
    def scores(users: jax.Array) -> jax.Array:
        return jax.vmap(lambda u: jax.random.uniform(jax.random.fold_in(key, u),
                                                     (num_items,)))(users)

    return ScoreFunction(fn=lambda users: scores(jnp.asarray(users, dtype=jnp.int32)),
                         num_items=num_items)


def ranking_baseline(name: str, train: sp.csr_array, seed: int = 0):
    """The named ranking baseline's score source (``"popularity"`` or ``"random"``)."""
    if name == "popularity":
        return popularity_source(item_popularity(train), train.shape[0])
    if name == "random":
        return random_source(train.shape[1], seed)
    raise ValueError(f"unknown ranking baseline {name!r}; known: {RANKING_BASELINES}")


@dataclasses.dataclass(frozen=True)
class RatingBaseline:
    """A fitted rating baseline: r̂_ui = global_mean + user_bias[u] + item_bias[i]."""

    kind: str
    global_mean: float
    user_bias: np.ndarray
    item_bias: np.ndarray
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Unclipped predictions (float64); the metrics clip them to the rating range."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if len(users) and (users.min() < 0 or users.max() >= len(self.user_bias)):
            raise ValueError(f"user ids outside [0, {len(self.user_bias)})")
        if len(items) and (items.min() < 0 or items.max() >= len(self.item_bias)):
            raise ValueError(f"item ids outside [0, {len(self.item_bias)})")
        return self.global_mean + self.user_bias[users] + self.item_bias[items]


def fit_rating_baseline(kind: str, users: np.ndarray, items: np.ndarray, ratings: np.ndarray,
                        num_users: int, num_items: int, *, reg_user: float = 10.0,
                        reg_item: float = 25.0, iterations: int = 10) -> RatingBaseline:
    """Fits one of ``RATING_BASELINES`` on training ratings (formulas in the module doc).

    ``reg_user``, ``reg_item`` and ``iterations`` only affect ``"user_item_bias"``.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    r = np.asarray(ratings, dtype=np.float64)
    if not len(r):
        raise ValueError("no training ratings")
    mu = float(r.mean())
    n_u = np.bincount(users, minlength=num_users)
    n_i = np.bincount(items, minlength=num_items)
    b_u, b_i = np.zeros(num_users), np.zeros(num_items)
    params: dict[str, Any] = {}
    if kind == "global_mean":
        pass
    elif kind == "user_mean":
        b_u = _mean_offset(users, r - mu, n_u)
    elif kind == "item_mean":
        b_i = _mean_offset(items, r - mu, n_i)
    elif kind == "user_item_bias":
        if iterations < 1:
            raise ValueError("iterations must be ≥ 1")
        for _ in range(iterations):
            b_i = np.bincount(items, weights=r - mu - b_u[users], minlength=num_items) / (
                reg_item + n_i)
            b_u = np.bincount(users, weights=r - mu - b_i[items], minlength=num_users) / (
                reg_user + n_u)
        params = {"reg_user": reg_user, "reg_item": reg_item, "iterations": iterations}
    else:
        raise ValueError(f"unknown rating baseline {kind!r}; known: {RATING_BASELINES}")
    return RatingBaseline(kind=kind, global_mean=mu, user_bias=b_u, item_bias=b_i,
                          params=params)


def _mean_offset(ids: np.ndarray, residual: np.ndarray, counts: np.ndarray) -> np.ndarray:
    sums = np.bincount(ids, weights=residual, minlength=len(counts))
    return np.divide(sums, counts, out=np.zeros(len(counts)), where=counts > 0)
