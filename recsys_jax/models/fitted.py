"""State of models fitted without gradients (EASE, ItemKNN, iALS), and their users' event rows.

Two NNX variable kinds, both saved by ``registry.save_model`` and never handed to an optimizer
(they are not ``nnx.Param``, so neither the gradient loop nor fold-in's masks see them):

* ``Fitted``: arrays a closed-form or alternating fit sets (an item-item matrix, factor
  tables). Their shape is fixed by the id spaces and the model config, and they count as the
  model's parameters (``Task.num_parameters``).
* ``DataSized``: stored inputs whose *length* depends on the data (the events of every user,
  as CSR arrays). ``load_model`` builds a model on zero events and takes the saved length.

``EventRows`` keeps each user's events as CSR (``row_starts`` ``[num_users + 1]``, ``items`` and
``weights`` ``[events]``) and turns event columns into those rows, with optional recency
weights (``recency_weights``).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
import pandas as pd
import scipy.sparse as sp
from flax import nnx


class Fitted(nnx.Variable):
    """Parameters set by a fit without gradients (counted as parameters, saved, never given
    to an optimizer)."""


class DataSized(nnx.Variable):
    """Stored inputs whose length depends on the data (``load_model`` takes the saved
    length instead of refusing it)."""


def recency_weights(users: np.ndarray, timestamps: np.ndarray | None,
                    decay: float) -> np.ndarray:
    """float32 weight per event: ``decay ** r``, r the number of *distinct* timestamps among
    the same user's events that are later than this one (the newest events weigh 1; events
    with equal timestamps weigh the same, so no tie order is needed). ``decay`` = 1 gives 1s.

    Raises:
      ValueError: when ``decay`` < 1 and there are no timestamps, or ``decay`` ∉ (0, 1].
    """
    users = np.asarray(users)
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"model.recency_weight must be in (0, 1], got {decay}")
    if decay == 1.0:
        return np.ones(len(users), np.float32)
    if timestamps is None:
        raise ValueError("model.recency_weight < 1 needs event timestamps, and this data has "
                         "none: set model.recency_weight = 1")
    frame = pd.DataFrame({"user": users, "t": np.asarray(timestamps)})
    rank = frame.groupby("user")["t"].rank(method="dense", ascending=False).to_numpy() - 1.0
    return np.power(float(decay), rank).astype(np.float32)


def event_csr(users: np.ndarray, items: np.ndarray, weights: np.ndarray, num_users: int,
              num_items: int) -> sp.csr_array:
    """The ``[num_users, num_items]`` float32 CSR of the events, indices sorted (a repeated
    pair keeps its largest weight: the splits deduplicate pairs, this guards other input)."""
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    weights = np.asarray(weights, np.float32)
    order = np.lexsort((-weights, items, users))
    users, items, weights = users[order], items[order], weights[order]
    first = np.r_[True, (users[1:] != users[:-1]) | (items[1:] != items[:-1])]
    indptr = np.r_[0, np.cumsum(np.bincount(users[first], minlength=num_users))]
    return sp.csr_array((weights[first], items[first].astype(np.int32), indptr),
                        shape=(num_users, num_items))


class EventRows(nnx.Module):
    """Each user's events (item ids, weights) as CSR, stored with the model.

    Attributes:
      row_starts: ``DataSized`` int32 ``[num_users + 1]``; user u's events are
        ``[row_starts[u], row_starts[u + 1])``.
      items, weights: ``DataSized`` int32 / float32 ``[events]``.
    """

    def __init__(self, num_users: int, num_items: int):
        self.num_users, self.num_items = num_users, num_items
        self.row_starts = DataSized(jnp.zeros((num_users + 1,), jnp.int32))
        self.items = DataSized(jnp.zeros((0,), jnp.int32))
        self.weights = DataSized(jnp.zeros((0,), jnp.float32))

    def matrix(self) -> sp.csr_array:
        """The ``[num_users, num_items]`` float32 CSR of the stored rows."""
        return sp.csr_array((np.asarray(self.weights[...]), np.asarray(self.items[...]),
                             np.asarray(self.row_starts[...])),
                            shape=(self.num_users, self.num_items))

    def set_matrix(self, matrix: sp.csr_array) -> None:
        """Stores ``matrix`` (``[num_users, num_items]`` CSR) as the rows."""
        matrix = sp.csr_array(matrix)
        matrix.sort_indices()
        self.row_starts.set_value(jnp.asarray(matrix.indptr, jnp.int32))
        self.items.set_value(jnp.asarray(matrix.indices, jnp.int32))
        self.weights.set_value(jnp.asarray(matrix.data, jnp.float32))

    def replace_users(self, matrix: sp.csr_array, users: np.ndarray) -> None:
        """Replaces the rows of ``users`` by theirs in ``matrix``; other rows stay."""
        take = np.zeros(self.num_users, np.float32)
        take[np.asarray(users)] = 1.0
        merged = sp.csr_array(sp.diags_array(1.0 - take) @ self.matrix()
                              + sp.diags_array(take) @ sp.csr_array(matrix))
        merged.eliminate_zeros()
        self.set_matrix(merged)


def events_matrix(events: Mapping[str, np.ndarray], num_users: int, num_items: int,
                  recency_weight: float = 1.0) -> sp.csr_array:
    """The event columns (``user``, ``item``, optional ``timestamp``) as a weighted CSR."""
    weights = recency_weights(events["user"], events.get("timestamp"), recency_weight)
    return event_csr(events["user"], events["item"], weights, num_users, num_items)
