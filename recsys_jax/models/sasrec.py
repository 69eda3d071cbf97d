"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

A user is the sequence of their last L items, left-padded with the id ``num_items`` (so
position L − 1 holds the most recent item). Each position t is encoded from the items at
positions ≤ t only, and the score of item i as the next item after position t is
``h_t · e_i``, with ``e_i`` the same item embedding that encodes the inputs (shared input and
output table, as in the paper):

    x_t   = √d · e_{s_t} + p_t                     learnt absolute positions p (0 … L − 1)
    x     = dropout(x) · m                          m_t = 1 for an item, 0 for padding
    block (× ``num_blocks``):
      q   = LayerNorm(x)
      x   = q + MultiHeadAttention(q, x, x)         causal; padding keys masked; dropout on
                                                    the attention weights
      y   = LayerNorm(x)
      x   = (y + dropout(W₂ dropout(ReLU(W₁ y)))) · m      point-wise feed-forward
    h     = LayerNorm(x)

This is the paper's reference implementation (the TensorFlow code and its PyTorch port): the
query is the normalised input and the residuals add normalised values, the input embedding is
scaled by √d, LayerNorm's ε is 1e-8, embeddings start Glorot-normal. One difference:
``nnx.MultiHeadAttention`` has an output projection, which the TensorFlow code does not.

The model implements ``contract.SequenceEncoder``: ``model(sequences, rngs=...)`` gives the
hidden states ``[B, L, d]`` (dropout on when ``rngs`` is given, else deterministic) and
``item_vectors(items)`` the output embeddings. The item table is a ``training.tables.Table``
(``num_items + 1`` rows, the last one padding, never scored), so row-sparse optimizers update
only the rows a step reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from recsys_jax.training.tables import Table

LAYER_NORM_EPSILON = 1e-8


class SASRecBlock(nnx.Module):
    """One self-attention block: causal multi-head attention, then the point-wise
    feed-forward network, each with a residual connection and LayerNorm."""

    def __init__(self, dim: int, num_heads: int, dropout: float, *, rngs: nnx.Rngs):
        self.attention_norm = nnx.LayerNorm(dim, epsilon=LAYER_NORM_EPSILON, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(
            num_heads, dim, dropout_rate=dropout, decode=False, keep_rngs=False, rngs=rngs)
        self.feed_forward_norm = nnx.LayerNorm(dim, epsilon=LAYER_NORM_EPSILON, rngs=rngs)
        self.feed_forward_in = nnx.Linear(dim, dim, rngs=rngs)
        self.feed_forward_out = nnx.Linear(dim, dim, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, item_mask: jax.Array, attention_mask: jax.Array, *,
                 rngs: nnx.Rngs | None) -> jax.Array:
        deterministic = rngs is None
        q = self.attention_norm(x)
        x = q + self.attention(q, x, x, mask=attention_mask, deterministic=deterministic,
                               rngs=rngs)
        y = self.feed_forward_norm(x)
        f = self.dropout(jax.nn.relu(self.feed_forward_in(y)), deterministic=deterministic,
                         rngs=rngs)
        f = self.dropout(self.feed_forward_out(f), deterministic=deterministic, rngs=rngs)
        return (y + f) * item_mask[..., None]


class SASRec(nnx.Module):
    """SASRec over item sequences of length ``max_len``; see the module docstring.

    Attributes:
      num_items: the catalogue; ``num_items`` itself is the padding id.
      max_len: L, the length of every input sequence.
      dim: d, the embedding and hidden size.
    """

    def __init__(self, num_items: int, *, max_len: int = 50, dim: int = 64,
                 num_blocks: int = 2, num_heads: int = 1, dropout: float = 0.2,
                 rngs: nnx.Rngs):
        if num_items <= 0 or max_len <= 0 or dim <= 0 or num_blocks <= 0 or num_heads <= 0:
            raise ValueError(f"sizes must be positive: {num_items} items, max_len {max_len}, "
                             f"dim {dim}, {num_blocks} blocks, {num_heads} heads")
        if dim % num_heads:
            raise ValueError(f"model.dim = {dim} must be a multiple of model.num_heads = "
                             f"{num_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {dropout}")
        self.num_items, self.max_len, self.dim = num_items, max_len, dim
        init = jax.nn.initializers.glorot_normal()
        self.item_embedding = Table(init(rngs.params(), (num_items + 1, dim), jnp.float32))
        self.position_embedding = nnx.Param(init(rngs.params(), (max_len, dim), jnp.float32))
        self.embedding_dropout = nnx.Dropout(dropout)
        self.blocks = nnx.List([SASRecBlock(dim, num_heads, dropout, rngs=rngs)
                                for _ in range(num_blocks)])
        self.final_norm = nnx.LayerNorm(dim, epsilon=LAYER_NORM_EPSILON, rngs=rngs)

    @property
    def pad_id(self) -> int:
        """The id that fills sequences shorter than ``max_len`` (never scored)."""
        return self.num_items

    def __call__(self, sequences: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Hidden states ``[B, L, d]`` of item sequences ``[B, L]`` (L = ``max_len``): h_t
        depends on the items at positions ≤ t only. Dropout applies when ``rngs`` (with a
        ``dropout`` stream) is given."""
        if sequences.shape[-1] != self.max_len:
            raise ValueError(f"sequences have length {sequences.shape[-1]}, the model reads "
                             f"{self.max_len} (model.max_len)")
        deterministic = rngs is None
        item_mask = (sequences != self.pad_id).astype(jnp.float32)
        x = (self.item_embedding.lookup(sequences) * jnp.sqrt(jnp.float32(self.dim))
             + self.position_embedding[...])
        x = self.embedding_dropout(x, deterministic=deterministic, rngs=rngs)
        x = x * item_mask[..., None]
        length = self.max_len
        causal = jnp.arange(length)[:, None] >= jnp.arange(length)[None, :]
        # Query t sees keys s ≤ t that hold an item; every query sees itself, so a padding
        # query has one key and no row of the softmax is empty.
        allowed = causal & ((sequences != self.pad_id)[..., None, :] | jnp.eye(length, dtype=bool))
        attention_mask = allowed[..., None, :, :]  # one mask for every head
        for block in self.blocks:
            x = block(x, item_mask, attention_mask, rngs=rngs)
        return self.final_norm(x)

    def item_vectors(self, items: jax.Array) -> jax.Array:
        """Output embeddings ``items.shape + (d,)``: the score of item i after position t is
        ``h_t · item_vectors(i)``."""
        return self.item_embedding.lookup(items)


def build_sasrec(model_config: Mapping[str, Any], *, num_users: int, num_items: int,
                 train: Mapping[str, np.ndarray], rngs: nnx.Rngs) -> SASRec:
    """Registry builder; config fields ``max_len`` (50), ``dim`` (64), ``num_blocks`` (2),
    ``num_heads`` (1), ``dropout`` (0.2). Users are their sequences: ``num_users`` and the
    training rows do not size anything."""
    del num_users, train
    return SASRec(num_items, max_len=int(model_config.get("max_len", 50)),
                  dim=int(model_config.get("dim", 64)),
                  num_blocks=int(model_config.get("num_blocks", 2)),
                  num_heads=int(model_config.get("num_heads", 1)),
                  dropout=float(model_config.get("dropout", 0.2)), rngs=rngs)
