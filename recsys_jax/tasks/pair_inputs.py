"""Per-pair causal user inputs computed inside the jitted step from O(events) tables.

A training batch of the retrieval task with causal inputs carries, per pair, only ``user``,
``item`` and ``event`` (the pair's position in the user-time ordered training events); the
tables of ``data.causal_events.CausalEventTables`` come with every batch by name (``loop.fit``'s
``tables``). ``causal_pair_inputs`` turns them into the per-row ``user_features``,
``history_ids`` and ``history_mask`` the model's ``encode_batch`` reads: the rows
``features.build_causal_user_inputs`` would have materialised on the host (tested equal), at
O(batch × (L + K × G)) work per step instead of O(events × (d_user + 2L)) memory.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from recsys_jax.data.causal_events import CausalEventTables

Batch = Mapping[str, jax.Array]


def causal_pair_inputs(batch: Batch, *, history_len: int, block: int) -> dict[str, jax.Array]:
    """``user_features`` ``[B, d_user]`` (standardised) and, with ``history_len`` > 0,
    ``history_ids`` ``[B, L]`` (newest first, 0 where masked) and ``history_mask`` ``[B, L]``.

    Args:
      batch: columns ``user`` and ``event`` ``[B]`` plus the ``CausalEventTables`` arrays by
        name.
      history_len: L (``CausalEventTables.history_len``).
      block: K (``CausalEventTables.block``).
    """
    p, u = batch["event"], batch["user"]
    s = batch["user_start"][u]
    out = {}
    if history_len:
        back = p[:, None] - jnp.arange(1, history_len + 1)                  # newest first
        valid = back >= s[:, None]
        out["history_ids"] = jnp.where(valid, batch["event_item"][jnp.maximum(back, 0)], 0)
        out["history_mask"] = valid.astype(jnp.float32)
    n = p - s                                                               # earlier events
    passed = n // block
    window = (s + passed * block)[:, None] + jnp.arange(block)              # since the block
    in_window = window < p[:, None]
    window = jnp.where(in_window, window, 0)
    genres = batch["item_genres"][batch["event_item"][window]] * in_window[..., None]
    count = batch["block_genre_count"][batch["user_block"][u] + passed] + jnp.sum(genres, 1)
    total = (batch["block_genre_total"][batch["user_block"][u] + passed]
             + jnp.sum(genres * batch["event_rating"][window][..., None], 1))
    stats = batch["event_stats"][p]
    earlier = n.astype(jnp.float32)
    share = count / jnp.maximum(earlier, 1.0)[:, None]
    genre_mean = jnp.where(count > 0, total / jnp.maximum(count, 1.0), stats[:, :1])
    raw = jnp.concatenate([jnp.log1p(earlier)[:, None], stats[:, :2], share, genre_mean,
                           batch["user_static"][u], stats[:, 2:]], -1)
    out["user_features"] = (raw - batch["user_mean"]) / batch["user_std"]
    return out


def pair_inputs_fn(tables: CausalEventTables):
    """``causal_pair_inputs`` with ``tables``' static sizes bound (for ``make_retrieval_loss``)."""
    return functools.partial(causal_pair_inputs, history_len=tables.history_len,
                             block=tables.block)


@functools.partial(jax.jit, static_argnames=("history_len", "block"))
def _pair_inputs_jit(batch: Batch, history_len: int, block: int) -> dict[str, jax.Array]:
    return causal_pair_inputs(batch, history_len=history_len, block=block)


def materialise_pair_inputs(users: np.ndarray, events: np.ndarray, tables: CausalEventTables,
                            chunk_size: int = 65536) -> dict[str, np.ndarray]:
    """The per-pair rows on the host, ``[pairs, ...]`` NumPy (what the step computes), for
    code that wants them materialised (the PyTorch baseline; comparisons). Memory: pairs ×
    (d_user + 2L) numbers, what the tables avoid."""
    users, events = np.asarray(users, np.int32), np.asarray(events, np.int32)
    if len(users) == 0:
        raise ValueError("no pairs to materialise")
    device_tables = jax.device_put(tables.arrays())
    n = len(users)
    chunk = max(1, min(chunk_size, n))
    parts = []
    for start in range(0, n, chunk):
        rows = np.minimum(np.arange(start, start + chunk), n - 1)  # One compile: pad the last.
        out = _pair_inputs_jit({**device_tables, "user": users[rows], "event": events[rows]},
                               tables.history_len, tables.block)
        parts.append(jax.device_get(out))
    return {name: np.concatenate([p[name] for p in parts])[:n] for name in parts[0]}
