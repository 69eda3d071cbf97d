"""ItemKNN: item-based nearest neighbours with shrunk cosine similarity.

    s_ij = x_i · x_j / (‖x_i‖ ‖x_j‖ + shrink)   (i ≠ j; s_ii = 0)

x_i is item i's binary column of the training matrix (so x_i · x_j counts the users of both).
Each item keeps its ``k`` most similar items (row i of B keeps the k largest s_ij; equal
similarities keep the lower item id), every other entry is 0, and a user is scored as
score(u, j) = Σ_{i ∈ I_u} x_ui B_ij (``item_item.ItemItemModel``: training rows for validation,
train + val rows for test users, optionally recency-weighted). This is the item-based KNN of
Sarwar et al. (2001) with Bellogín's shrinkage, as in `implicit`'s ``CosineRecommender``
(which has no shrinkage and counts an item among its own neighbours).

Config (``model`` block): ``k`` (neighbours per item, default 100), ``shrink`` (≥ 0,
default 0), ``recency_weight`` (γ ∈ (0, 1]), ``max_items`` (``item_item.DEFAULT_MAX_ITEMS``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
from flax import nnx

from recsys_jax.models.item_item import ItemItemModel, check_catalogue

DEFAULT_K = 100


def cosine_neighbours(interactions: sp.csr_array | np.ndarray, k: int,
                      shrink: float = 0.0) -> np.ndarray:
    """float64 ``[items, items]``: row i holds item i's ``k`` largest shrunk cosine
    similarities (ties to the lower item id), zero elsewhere and on the diagonal.

    Raises:
      ValueError: for ``k`` < 1 or ``shrink`` < 0.
    """
    if k < 1 or shrink < 0:
        raise ValueError(f"model.k must be >= 1 and model.shrink >= 0, got {k}, {shrink}")
    x = sp.csr_array(interactions, dtype=np.float64)
    co = (x.T @ x).toarray()
    norms = np.sqrt(np.diag(co).copy())
    sims = co / (norms[:, None] * norms[None, :] + shrink)
    sims[~np.isfinite(sims)] = 0.0  # items without events, shrink 0
    np.fill_diagonal(sims, 0.0)
    if k < sims.shape[1]:
        # A stable sort keeps the lower item id first among equal similarities.
        dropped = np.argsort(-sims, axis=1, kind="stable")[:, k:]
        np.put_along_axis(sims, dropped, 0.0, axis=1)
    return sims


class ItemKNN(ItemItemModel):
    """Item-based KNN; see the module docstring."""

    def __init__(self, num_users: int, num_items: int, *, k: int = DEFAULT_K,
                 shrink: float = 0.0, recency_weight: float = 1.0):
        super().__init__(num_users, num_items, recency_weight=recency_weight)
        self.k, self.shrink = int(k), float(shrink)

    def item_weights_from(self, interactions: sp.csr_array) -> tuple[np.ndarray, dict]:
        return (cosine_neighbours(interactions, self.k, self.shrink),
                {"k": self.k, "shrink": self.shrink})


def build(model_config: Mapping[str, Any], *, num_users: int, num_items: int,
          train: Mapping[str, np.ndarray], rngs: nnx.Rngs) -> ItemKNN:
    """ItemKNN for the id spaces (``train`` and ``rngs`` unused: ``fit`` reads the data)."""
    del train, rngs
    check_catalogue("ItemKNN", num_items, model_config)
    return ItemKNN(num_users, num_items, k=int(model_config.get("k", DEFAULT_K)),
                   shrink=float(model_config.get("shrink", 0.0)),
                   recency_weight=float(model_config.get("recency_weight", 1.0)))
