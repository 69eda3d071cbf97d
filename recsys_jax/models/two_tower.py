"""Two-tower retrieval model (Flax NNX): a user tower and an item tower meeting in a dot product.

Each tower is Linear → ReLU → Linear → LayerNorm (hidden 256, output 128 by default) followed by
L2 normalisation, so a score u·v is a cosine in [-1, 1]; the in-batch softmax divides it by a
learnable temperature τ (initialised to 0.07, parametrised as log τ and clipped to
[``MIN_TEMPERATURE``, ``MAX_TEMPERATURE``] so it stays positive and finite).

Inputs are feature rows (``recsys_jax.data.features``), stored in the model as non-trainable
``FeatureTable`` variables so that training batches carry only ids and the tables travel with the
checkpoints. Optional extras:

* ``history``: the user tower also sees the mean of a vector per item over the user's most
  recent training items; with ``history_positions`` a weighted mean, with a learnt weight per
  position (newest first), so recency can count. ``history_source`` chooses the item vectors:
  ``"item_tower"`` (default) their item-tower embeddings, ``"id_embedding"`` rows of a learnt
  per-item table ``history_item_embedding`` (``training.tables.Table``, read with ``lookup``;
  Covington et al.'s "embedded watches"), so the item tower never runs on history items and a
  step's history costs B × L row gathers whatever the catalogue's size.
* ``max_step_items``: a cap on the rows the item tower encodes per training step (see below).

The item side of a training step (``encode_batch``) with the item-tower history: the batch's
history ids and candidate ids are deduplicated with a *static* bound (``jnp.unique(size=...)``), the
item tower runs on those rows only and the pooled histories and candidate vectors are gathered
through the inverse indices: the same function as encoding the whole catalogue and gathering
from it, at a cost independent of the catalogue. The bound is the number of ids the step
gathers, B × (L + 1) + M for B rows, history length L and M random negatives, which no step can
exceed; when the catalogue is no larger than that (ML-100K: 1,682 items against 22,528) the tower
simply runs over the whole catalogue. ``max_step_items`` lowers the bound further (batches share
items); a step that needs more distinct items than the cap stops training with an error naming
both numbers, never truncates. Serving and export (``export_arrays``, ``user_embeddings``) still
encode the whole catalogue, once per call.
With ``history_source="id_embedding"`` the item tower encodes only the step's B + M
candidates, as without a history.
* ``user_id_dim`` / ``item_id_dim``: learnt id embeddings concatenated to the tower inputs (0: off);
  like the history table they are ``Table`` parameters, so row-sparse optimizers can train them.

Encoding a *new* user means standardising their raw features with the saved ``Standardizer`` and
calling ``encode_users`` (see ``recsys_jax.retrieval.retriever``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from recsys_jax.data.columns import check_id_range
from recsys_jax.training.tables import Table

MIN_TEMPERATURE = 1e-3
MAX_TEMPERATURE = 1.0
# Position weights are exp(scale · parameter): a 10× step for these few numbers, which under the
# towers' Adam step (≈ lr per update) otherwise move too little in a short run to learn how
# steeply recency matters (ML-100K leave-one-out, lr 1e-3: validation recall@100 0.695 → 0.71).
HISTORY_POSITION_SCALE = 10.0
# Where the pooled history's item vectors come from (``TwoTower``'s ``history_source``).
HISTORY_SOURCES = ("item_tower", "id_embedding")


class FeatureTable(nnx.Variable):
    """Fixed input rows (features, histories): checkpointed with the model, never trained."""


class Tower(nnx.Module):
    """Linear → ReLU → Linear → LayerNorm → L2 normalisation."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(in_dim, hidden_dim, rngs=rngs)
        self.out = nnx.Linear(hidden_dim, out_dim, rngs=rngs)
        self.norm = nnx.LayerNorm(out_dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Unit-norm embeddings ``[..., out_dim]`` of inputs ``[..., in_dim]``."""
        h = self.norm(self.out(jax.nn.relu(self.hidden(x))))
        return h * jax.lax.rsqrt(jnp.maximum(jnp.sum(h * h, axis=-1, keepdims=True), 1e-12))


class TwoTower(nnx.Module):
    """User and item towers over stored feature tables, with a learnable temperature."""

    def __init__(self, user_features: np.ndarray, item_features: np.ndarray, *,
                 rngs: nnx.Rngs, hidden_dim: int = 256, dim: int = 128,
                 temperature: float = 0.07, history_ids: np.ndarray | None = None,
                 history_mask: np.ndarray | None = None, user_id_dim: int = 0,
                 item_id_dim: int = 0, id_init_std: float = 0.01,
                 history_positions: bool = False, max_step_items: int = 0,
                 history_source: str = "item_tower"):
        """Creates the towers.

        Args:
          user_features: float32 ``[num_users, d_user]`` standardised rows.
          item_features: float32 ``[num_items, d_item]`` standardised rows.
          rngs: ``rngs.params()`` initialises the layers.
          hidden_dim, dim: tower widths.
          temperature: initial τ.
          history_ids, history_mask: ``[num_users, L]`` for the history pooling (None: off).
          user_id_dim, item_id_dim: id-embedding sizes (0: no id embedding).
          id_init_std: standard deviation of the id-embedding initialiser.
          history_positions: learn a pooling weight per history position.
          max_step_items: the most distinct items a training step may encode (0: the step's
            static bound, which cannot be exceeded; see the module docstring).
          history_source: the pooled item vectors, ``"item_tower"`` (their item-tower
            embeddings) or ``"id_embedding"`` (a learnt ``[num_items, dim]`` table, initialised
            like the id embeddings).
        """
        if history_source not in HISTORY_SOURCES:
            raise ValueError(f"history_source must be one of {HISTORY_SOURCES}, got "
                             f"{history_source!r}")
        if max_step_items < 0:
            raise ValueError(f"max_step_items must be >= 0, got {max_step_items}")
        if not MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE:
            raise ValueError(f"temperature must lie in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}]")
        self.num_users, self.user_dim = map(int, np.shape(user_features))
        self.num_items, self.item_dim = map(int, np.shape(item_features))
        self.dim = dim
        self.max_step_items = int(max_step_items)
        self.user_features = FeatureTable(jnp.asarray(user_features, jnp.float32))
        self.item_features = FeatureTable(jnp.asarray(item_features, jnp.float32))
        self.use_history = history_ids is not None and np.shape(history_ids)[1] > 0
        if self.use_history:
            if np.shape(history_ids) != np.shape(history_mask) or len(history_ids) != \
                    self.num_users:
                raise ValueError("history ids and mask must both be [num_users, L]")
            # Checked here, on the host: the jitted pooling's gather would clamp silently.
            check_id_range(history_ids, self.num_items, "history item")
            self.history_ids = FeatureTable(jnp.asarray(history_ids, jnp.int32))
            self.history_mask = FeatureTable(jnp.asarray(history_mask, jnp.float32))
        self.history_positions = bool(history_positions) and self.use_history
        if self.history_positions:
            # Zeros: the plain mean at initialisation.
            self.history_position_logits = nnx.Param(
                jnp.zeros((np.shape(history_ids)[1],), jnp.float32))
        init = jax.nn.initializers.normal(stddev=id_init_std)
        self.user_id_dim, self.item_id_dim = int(user_id_dim), int(item_id_dim)
        if self.user_id_dim:
            self.user_id_embedding = Table(
                init(rngs.params(), (self.num_users, self.user_id_dim), jnp.float32))
        if self.item_id_dim:
            self.item_id_embedding = Table(
                init(rngs.params(), (self.num_items, self.item_id_dim), jnp.float32))
        self.history_source = history_source if self.use_history else "item_tower"
        if self.history_source == "id_embedding":
            self.history_item_embedding = Table(
                init(rngs.params(), (self.num_items, dim), jnp.float32))
        user_in = self.user_dim + self.user_id_dim + (dim if self.use_history else 0)
        self.user_tower = Tower(user_in, hidden_dim, dim, rngs=rngs)
        self.item_tower = Tower(self.item_dim + self.item_id_dim, hidden_dim, dim, rngs=rngs)
        self.log_temperature = nnx.Param(jnp.asarray(math.log(temperature), jnp.float32))

    @property
    def temperature(self) -> jax.Array:
        """τ = exp(clip(log τ)), always in [MIN_TEMPERATURE, MAX_TEMPERATURE]."""
        return jnp.exp(jnp.clip(self.log_temperature[...], math.log(MIN_TEMPERATURE),
                                math.log(MAX_TEMPERATURE)))

    def encode_items(self, features: jax.Array, item_ids: jax.Array | None = None) -> jax.Array:
        """Item embeddings from standardised feature rows (``item_ids`` needed with id
        embeddings)."""
        if self.item_id_dim:
            if item_ids is None:
                raise ValueError("this model has item id embeddings: pass item_ids")
            features = jnp.concatenate([features, self.item_id_embedding.lookup(item_ids)], -1)
        return self.item_tower(features)

    def item_embeddings(self, item_ids: jax.Array) -> jax.Array:
        """Embeddings of catalogue items by encoded id."""
        return self.encode_items(self.item_features[...][item_ids], item_ids)

    def pooled_history(self, history_ids: jax.Array, history_mask: jax.Array,
                       item_table: jax.Array | None = None) -> jax.Array:
        """Masked (position-weighted) mean of the vectors of ``history_ids`` (``[..., L]``):
        their item-tower embeddings, or their rows of ``history_item_embedding`` with
        ``history_source="id_embedding"``.

        ``item_table`` (all item embeddings, e.g. precomputed once for serving) saves running
        the item tower over the catalogue on every call; unused with ``"id_embedding"``.
        """
        if self.history_source == "id_embedding":
            items = self.history_item_embedding.lookup(history_ids)
        else:
            if item_table is None:
                item_table = self.item_embeddings(jnp.arange(self.num_items))
            items = item_table[history_ids]
        weights = history_mask
        if self.history_positions:
            logits = (HISTORY_POSITION_SCALE
                      * self.history_position_logits[...][:history_ids.shape[-1]])
            weights = weights * jnp.exp(logits - jnp.max(logits))
        vectors = items * weights[..., None]
        return jnp.sum(vectors, -2) / jnp.maximum(jnp.sum(weights, -1), 1e-6)[..., None]

    def encode_users(self, features: jax.Array, *, user_ids: jax.Array | None = None,
                     history_ids: jax.Array | None = None,
                     history_mask: jax.Array | None = None,
                     item_table: jax.Array | None = None) -> jax.Array:
        """User embeddings from standardised feature rows (plus history / ids when the model
        uses them; an empty history pools to zeros; ``item_table`` as in ``pooled_history``)."""
        parts = [features]
        if self.user_id_dim:
            if user_ids is None:
                raise ValueError("this model has user id embeddings: pass user_ids")
            parts.append(self.user_id_embedding.lookup(user_ids))
        if self.use_history:
            if history_ids is None:
                history_ids = jnp.zeros(features.shape[:-1] + (1,), jnp.int32)
                history_mask = jnp.zeros(features.shape[:-1] + (1,), jnp.float32)
            parts.append(self.pooled_history(history_ids, history_mask, item_table))
        return self.user_tower(jnp.concatenate(parts, -1) if len(parts) > 1 else parts[0])

    def user_embeddings(self, user_ids: jax.Array,
                        item_table: jax.Array | None = None) -> jax.Array:
        """Embeddings of known users by encoded id (their stored training-time features)."""
        history = ({"history_ids": self.history_ids[...][user_ids],
                    "history_mask": self.history_mask[...][user_ids], "item_table": item_table}
                   if self.use_history else {})
        return self.encode_users(self.user_features[...][user_ids], user_ids=user_ids, **history)

    def encode_batch(self, batch: Mapping[str, jax.Array], item_ids: jax.Array
                     ) -> tuple[jax.Array, jax.Array]:
        """The batch's user vectors and ``item_ids``' vectors (``contract.RetrievalEncoder``).

        Users are encoded from per-row inputs when the batch carries them (``user_features``
        and, with the history tower, ``history_ids``/``history_mask``: each training pair's
        causal inputs), else from the stored per-user rows. With the item-tower history the item
        tower runs once, on the rows ``step_item_table`` chooses for the histories and the
        candidates together, and both sides gather from that table; otherwise it runs on the
        candidates alone.
        """
        users = batch["user"]
        if "user_features" in batch:
            features = batch["user_features"]
            history_ids, history_mask = batch.get("history_ids"), batch.get("history_mask")
        else:
            features = self.user_features[...][users]
            history_ids = self.history_ids[...][users] if self.use_history else None
            history_mask = self.history_mask[...][users] if self.use_history else None
        if not self.use_history or self.history_source == "id_embedding":
            return (self.encode_users(features, user_ids=users, history_ids=history_ids,
                                      history_mask=history_mask),
                    self.item_embeddings(item_ids))
        if history_ids is None:  # Per-row features without histories: pools to zeros.
            history_ids = jnp.zeros(features.shape[:-1] + (1,), jnp.int32)
            history_mask = jnp.zeros(features.shape[:-1] + (1,), jnp.float32)
        table, (local_history, local_items) = self.step_item_table(history_ids, item_ids)
        user_vectors = self.encode_users(features, user_ids=users, history_ids=local_history,
                                         history_mask=history_mask, item_table=table)
        return user_vectors, table[local_items]

    def step_item_table(self, *ids: jax.Array) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        """Item-tower outputs for every id in ``ids``, computed once per distinct item.

        Returns ``(table, local)``: ``table[local[k]]`` are the embeddings of ``ids[k]`` (same
        shapes). ``table`` holds the distinct ids' rows (static size: the number of ids, or
        ``max_step_items`` if smaller), or is the whole catalogue, indexed by item id, when that
        is no larger. With a binding ``max_step_items``, a call that needs more distinct items
        raises (under ``jit``: when the step runs).
        """
        flat = jnp.concatenate([jnp.ravel(i) for i in ids])
        bound = min(flat.shape[0], self.num_items)   # No call can need more rows.
        rows = min(bound, self.max_step_items) if self.max_step_items else bound
        if rows == self.num_items:
            return self.item_embeddings(jnp.arange(self.num_items)), ids
        if rows < bound:
            _refuse_too_many_items(flat, rows)
        unique, inverse = jnp.unique(flat, size=rows, fill_value=0, return_inverse=True)
        sizes = np.cumsum([i.size for i in ids])[:-1]
        local = tuple(part.reshape(i.shape) for part, i in
                      zip(jnp.split(jnp.ravel(inverse), sizes), ids, strict=True))
        return self.item_embeddings(unique), local

    def set_user_inputs(self, features: Any) -> None:
        """Points the stored user inputs (features, histories) at ``features`` (a
        ``TwoTowerFeatures`` of the same shapes), e.g. train + validation events for test."""
        if np.shape(features.user) != (self.num_users, self.user_dim):
            raise ValueError(f"user features {np.shape(features.user)} ≠ ({self.num_users}, "
                             f"{self.user_dim}) of the model")
        if self.use_history:
            if np.shape(features.history_ids) != np.shape(self.history_ids[...]):
                raise ValueError(f"history ids {np.shape(features.history_ids)} ≠ "
                                 f"{np.shape(self.history_ids[...])} of the model")
            check_id_range(features.history_ids, self.num_items, "history item")
        self.user_features[...] = features.user
        if self.use_history:
            self.history_ids[...] = features.history_ids
            self.history_mask[...] = features.history_mask

    def ranking_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """``(user_embeddings, item_embeddings)`` of ``export_arrays``: cosine scores are dot
        products of these unit vectors."""
        arrays = self.export_arrays()
        return arrays["user_embeddings"], arrays["item_embeddings"]

    def __call__(self, user_ids: jax.Array, item_ids: jax.Array) -> jax.Array:
        """Cosine scores u·v of (user, item) pairs of equal shape."""
        return jnp.sum(self.user_embeddings(user_ids) * self.item_embeddings(item_ids), -1)

    def export_arrays(self, chunk_size: int = 8192) -> dict[str, np.ndarray]:
        """``user_embeddings`` ``[num_users, dim]`` and ``item_embeddings`` ``[num_items, dim]``
        as float32 NumPy (rows = encoded ids)."""
        graphdef, state = nnx.split(self)
        return {"user_embeddings": _embed_all(graphdef, state, "user", self.num_users,
                                              chunk_size),
                "item_embeddings": _embed_all(graphdef, state, "item", self.num_items,
                                              chunk_size)}


def _refuse_too_many_items(ids: jax.Array, cap: int) -> None:
    """Raises (when the step runs) if ``ids`` hold more than ``cap`` distinct items."""
    ordered = jnp.sort(ids)
    distinct = 1 + jnp.sum(ordered[1:] != ordered[:-1])

    def refuse(distinct):
        raise ValueError(
            f"this training step needs the item tower on {int(distinct):,} distinct items, but "
            f"model.max_step_items = {cap:,}: raise it, or set it to 0 (a bound of "
            f"{ids.shape[0]:,}, the ids of a step, which no step can exceed). Nothing was "
            "truncated; the step was refused.")

    jax.lax.cond(distinct > cap, lambda: jax.debug.callback(refuse, distinct), lambda: None)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _embed_chunk(graphdef: nnx.GraphDef, state: nnx.State, side: str,
                 ids: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, state)
    return model.user_embeddings(ids) if side == "user" else model.item_embeddings(ids)


def _embed_all(graphdef: nnx.GraphDef, state: nnx.State, side: str, n: int,
               chunk_size: int) -> np.ndarray:
    chunk = max(1, min(chunk_size, n))
    out = []
    for start in range(0, n, chunk):
        ids = np.arange(start, start + chunk, dtype=np.int32)
        ids = np.minimum(ids, n - 1)  # Pads the last chunk (rows cut off below): one compile.
        out.append(np.asarray(_embed_chunk(graphdef, state, side, ids)))
    return np.concatenate(out)[:n].astype(np.float32)


def build_two_tower(model_config: Mapping[str, Any], *, num_users: int, num_items: int,
                    train: Mapping[str, np.ndarray], rngs: nnx.Rngs,
                    features: Any = None) -> TwoTower:
    """Registry builder.

    Args:
      model_config: ``hidden_dim``, ``dim``, ``temperature``, ``history`` (bool),
        ``history_positions`` (bool), ``history_source``, ``user_id_dim``, ``item_id_dim``,
        ``max_step_items``.
      num_users, num_items: id-space sizes (must match the feature rows).
      train: training columns (unused: the features already summarise them).
      rngs: initialiser streams.
      features: a ``recsys_jax.data.features.TwoTowerFeatures``.
    """
    del train
    if features is None:
        raise ValueError("the two-tower model needs features=TwoTowerFeatures(...)")
    if features.user.shape[0] != num_users or features.item.shape[0] != num_items:
        raise ValueError(f"features cover {features.user.shape[0]} users × "
                         f"{features.item.shape[0]} items, data {num_users} × {num_items}")
    history = bool(model_config.get("history", False))
    if history and features.history_ids.shape[1] == 0:
        raise ValueError("model.history needs features built with history_len > 0")
    return TwoTower(
        features.user, features.item, rngs=rngs,
        hidden_dim=int(model_config.get("hidden_dim", 256)),
        dim=int(model_config.get("dim", 128)),
        temperature=float(model_config.get("temperature", 0.07)),
        history_ids=features.history_ids if history else None,
        history_mask=features.history_mask if history else None,
        user_id_dim=int(model_config.get("user_id_dim", 0)),
        item_id_dim=int(model_config.get("item_id_dim", 0)),
        history_positions=bool(model_config.get("history_positions", False)),
        max_step_items=int(model_config.get("max_step_items", 0) or 0),
        history_source=str(model_config.get("history_source", "item_tower")))
