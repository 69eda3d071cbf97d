"""A tiny planted MF problem shared by the training tests."""

import numpy as np
import optax
from flax import nnx

from recsys_jax.data.columns import rating_columns
from recsys_jax.models.mf import build_mf

NUM_USERS, NUM_ITEMS = 30, 40


def planted_ratings(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Ratings of a fixed rank-2 model plus noise, on a 1-5 scale; ``seed`` picks the pairs."""
    factors = np.random.default_rng(1234)
    p = factors.normal(size=(NUM_USERS, 2))
    q = factors.normal(size=(NUM_ITEMS, 2))
    rng = np.random.default_rng(seed)
    users = rng.integers(0, NUM_USERS, n)
    items = rng.integers(0, NUM_ITEMS, n)
    ratings = np.clip(3.5 + 0.7 * (p[users] * q[items]).sum(1) + rng.normal(0, 0.1, n), 1, 5)
    return rating_columns(users, items, ratings, num_users=NUM_USERS, num_items=NUM_ITEMS)


def make_model_and_optimizer(train, *, dim: int = 4, lr: float = 0.05, seed: int = 0):
    model = build_mf({"dim": dim, "init_std": 0.1}, num_users=NUM_USERS, num_items=NUM_ITEMS,
                     train=train, rngs=nnx.Rngs(seed))
    return model, nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)
