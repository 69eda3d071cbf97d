"""Exact top-K of each row through block maxima: the answer of ``jax.lax.top_k``, cheaper on
CPUs.

XLA's CPU ``top_k`` walks every value of a row through a comparison heap, on one thread.
``blocked_top_k`` first takes the maximum of each run of ``block`` consecutive values (one
vectorised pass), picks the K best blocks by their maxima with ``top_k``, and runs ``top_k``
again only over the ``K * block`` values of those blocks: about ``2 * sqrt(n * K)`` values go
through a heap instead of ``n``.

Why it is exact, ties included. Let T be the K-th largest block maximum (ties between blocks
broken by lower block index, ``top_k``'s rule) and v_K the K-th value of the exact answer.
The K chosen blocks each hold a value ≥ T, so v_K ≥ T, and a block not chosen has maximum
≤ T: every value of the exact answer above T lies in a chosen block. Values equal to T in an
unchosen block U: each chosen block whose maximum is T holds a T-valued entry at a lower
index than all of U (it was preferred to U on the tie), and there are enough of them to fill
the answer's remaining places, so no entry of U is needed. The chosen blocks are gathered in
ascending block order, so a candidate's position orders like its index, and ``top_k``'s
lower-position rule on the candidates is the lower-index rule on the row.

Assumes what the ranking kernel guarantees: it raises on NaN before using the lists (a NaN
makes its block's maximum NaN, which ``block_maxima``'s callers can test). -0.0 is ranked as
+0.0, as the ranking's tie rule asks (``top_k`` alone orders -0.0 below +0.0).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# Blocking pays from about this many values per K: each of the two smaller top_k calls keeps a
# cost of order K log K per row (its heap), whatever the number of values it scans.
_MIN_VALUES_PER_K = 128


def block_size(num_values: int, k: int) -> int:
    """Block length for ``blocked_top_k`` over rows of ``num_values`` (0: plain ``top_k``).

    A power of two near sqrt(n / K), which balances the block maxima (n / block values) against
    the candidates (K * block values).
    """
    if k < 1 or num_values < _MIN_VALUES_PER_K * k:
        return 0
    return 1 << round(math.log2(math.sqrt(num_values / k)))


def block_maxima(values: jax.Array, block: int) -> jax.Array:
    """``[rows, ceil(n / block)]`` maxima of consecutive runs of ``block`` values (the last run
    may be shorter). A NaN anywhere in a run makes its maximum NaN."""
    n = values.shape[1]
    pad = -(-n // block) * block - n
    # reduce_window pads the short run with -inf without copying the row (a slice would).
    return jax.lax.reduce_window(values, -jnp.inf, jax.lax.max, (1, block), (1, block),
                                 ((0, 0), (0, pad)))


def blocked_top_k(values: jax.Array, k: int, *,
                  maxima: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """``jax.lax.top_k(values, k)`` over the last axis of a ``[rows, n]`` float32 array, exactly.

    Args:
      values: the scores.
      k: list length, at most n.
      maxima: ``block_maxima(values, block_size(n, k))`` when the caller has them already.

    Returns:
      ``(top values, their indices)``; among equal values the lower index comes first and -0.0
      is returned as +0.0. The entries of a row with fewer than K values above -inf are -inf
      values at any positions, possibly repeated (callers treat -inf as padding).
    """
    rows, n = values.shape
    block = block_size(n, k)
    if not block:
        return jax.lax.top_k(_positive_zero(values), k)
    if maxima is None:
        maxima = block_maxima(values, block)
    _, chosen = jax.lax.top_k(_positive_zero(maxima), k)
    # Ascending block order makes a candidate's position order like its index.
    starts = jnp.sort(chosen, axis=1) * block
    # The last block may be short: its slice is moved back to end at n, and the values it then
    # shares with the block before are dropped (-inf).
    slice_starts = jnp.minimum(starts, n - block)
    slices = jax.vmap(jax.vmap(lambda row, s: jax.lax.dynamic_slice(row, (s,), (block,)),
                               in_axes=(None, 0)))(values, slice_starts)
    index = slice_starts[:, :, None] + jnp.arange(block, dtype=starts.dtype)
    candidates = jnp.where(index >= starts[:, :, None], _positive_zero(slices), -jnp.inf)
    top, position = jax.lax.top_k(candidates.reshape(rows, -1), k)
    return top, jnp.take_along_axis(index.reshape(rows, -1), position, axis=1)


def _positive_zero(values: jax.Array) -> jax.Array:
    return jnp.where(values == 0, 0.0, values)
