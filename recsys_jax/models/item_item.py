"""What EASE and ItemKNN share: a user is scored as x_u · B, an item-item matrix B.

score(u, j) = Σ_i x_ui B_ij, with x_u the user's (optionally recency-weighted) event row and
B ``[num_items, num_items]`` fitted on the binary training matrix by the subclass
(``item_weights_from``). B is dense float32: ``num_items² × 4`` bytes (11 MB at ML-100K's
1,682 items, 2.9 GB at ML-20M's 26,744); a catalogue above ``model.max_items`` (default
``DEFAULT_MAX_ITEMS``) is refused when the model is built, before any fit.

The model keeps every user's event row (``fitted.EventRows``), so it implements:

* ``contract.UserScores``: the evaluation ranks a chunk of users by ``X[users] @ B`` (SciPy
  sparse times dense, on the host), never pair by pair;
* ``contract.UserRefit``: test users' rows are replaced by their train + val events
  (``tasks.fold_in``), B frozen — the item-item analogue of fold-in;
* ``contract.SelfFitting``: ``fit`` computes B and stores the training rows.

Recency weighting (``model.recency_weight`` = γ ∈ (0, 1], default 1 = off): the *rows a user
is scored from* weigh each event γ^r, r the number of distinct later timestamps of that user
(``fitted.recency_weights``); B is always fitted on the binary matrix. (On ML-100K's
validation, weighting the rows B is fitted on as well scored lower than weighting only the
scoring rows; docs/models/baselines.md.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from flax import nnx

from recsys_jax.models.fitted import EventRows, Fitted, event_csr, events_matrix

# The largest catalogue whose dense item-item matrix is built unless the config allows more:
# B alone is 1.6 GB of float32 there, and EASE's float64 solve needs about 3× that again.
DEFAULT_MAX_ITEMS = 20_000


def check_catalogue(name: str, num_items: int, model_config: Mapping[str, Any]) -> None:
    """Refuses a catalogue above ``model.max_items`` before anything is allocated.

    Raises:
      ValueError: naming the memory a dense ``[num_items, num_items]`` matrix would take.
    """
    bound = int(model_config.get("max_items", DEFAULT_MAX_ITEMS))
    if num_items > bound:
        gib = num_items * num_items * 4 / 2**30
        raise ValueError(
            f"{name} keeps a dense {num_items:,} × {num_items:,} item-item matrix ({gib:.1f} GiB "
            f"of float32, more while fitting), above model.max_items = {bound:,}; raise "
            "model.max_items if the machine has the memory, or use a factor model (ials)")


class ItemItemModel(nnx.Module):
    """A user's scores are their event row times a fitted item-item matrix.

    Attributes:
      item_weights: ``Fitted`` float32 ``[num_items, num_items]``, B.
      rows: the users' event rows (``EventRows``), weighted by recency when configured.
    """

    def __init__(self, num_users: int, num_items: int, *, recency_weight: float = 1.0):
        self.num_users, self.num_items = num_users, num_items
        self.recency_weight = float(recency_weight)
        self.item_weights = Fitted(jnp.zeros((num_items, num_items), jnp.float32))
        self.rows = EventRows(num_users, num_items)

    def item_weights_from(self, interactions: sp.csr_array) -> tuple[np.ndarray, dict]:
        """``(B [num_items, num_items], facts)`` from the binary ``[users, items]`` CSR."""
        raise NotImplementedError

    def fit(self, train: Mapping[str, np.ndarray], config: Any) -> dict[str, Any]:
        """Fits B on the binary training matrix and stores the (weighted) training rows."""
        del config
        binary = event_csr(train["user"], train["item"], np.ones(len(train["user"])),
                           self.num_users, self.num_items)
        weights, facts = self.item_weights_from(binary)
        self.item_weights.set_value(jnp.asarray(weights, jnp.float32))
        self.rows.set_matrix(events_matrix(train, self.num_users, self.num_items,
                                           self.recency_weight))
        return {**facts, "events": int(binary.nnz), "recency_weight": self.recency_weight}

    def refit_users(self, events: Mapping[str, np.ndarray], users: np.ndarray
                    ) -> dict[str, Any]:
        """Replaces the rows of ``users`` by ``events`` (their train + val events); B and
        every other user stay as they were."""
        users = np.unique(np.asarray(users))
        keep = np.isin(np.asarray(events["user"]), users)
        chosen = {name: np.asarray(column)[keep] for name, column in events.items()}
        self.rows.replace_users(events_matrix(chosen, self.num_users, self.num_items,
                                              self.recency_weight), users)
        return {"users": int(len(users)), "rows": int(keep.sum())}

    def user_scores(self, users: np.ndarray) -> np.ndarray:
        """float32 ``[len(users), num_items]``: ``X[users] @ B``.

        Raises:
          ValueError: for user ids outside ``[0, num_users)``.
        """
        users = np.asarray(users, np.int64)
        if len(users) and (users.min() < 0 or users.max() >= self.num_users):
            raise ValueError(f"user ids outside [0, {self.num_users})")
        rows = self.rows.matrix()[users]
        return np.asarray(rows @ np.asarray(self.item_weights[...]), np.float32)

    def __call__(self, users: Any, items: Any) -> jnp.ndarray:
        """Scores of (user, item) pairs (broadcast together), computed on the host: this
        model is ranked through ``user_scores``, never traced."""
        users, items = np.broadcast_arrays(np.asarray(users), np.asarray(items))
        rows = self.rows.matrix()[users.reshape(-1).astype(np.int64)]
        columns = np.asarray(self.item_weights[...])[:, items.reshape(-1)].T
        scores = np.asarray(sp.csr_array(rows).multiply(columns).sum(axis=1)).reshape(-1)
        return jnp.asarray(scores.reshape(users.shape), jnp.float32)
