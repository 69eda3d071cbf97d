"""Full-ranking top-K on the device, in user chunks, with excluded items masked out.

For each chunk of users the jitted kernel builds the ``[chunk, num_items]`` scores (from
embeddings, or takes them from a score function), sets excluded (user, item) pairs to -inf,
and selects the top K. Only one chunk of scores exists at a time per worker, so 100K users ×
50K items never needs the full score matrix. The chunk size and the padded length of the
exclusion list are fixed for a call, so the kernel compiles once.

Selection: ``"top_k"`` is ``jax.lax.top_k`` over the whole row; ``"blocked"``
(``top_k.blocked_top_k``) gives the same lists through block maxima, so ``top_k`` only sees
a few thousand candidates per row: on a CPU, where XLA's ``top_k`` is one thread at about
4 ns per score, it is the default; accelerators keep ``"top_k"``. Two chunks run at once, on
two worker threads: XLA's CPU client runs the calls dispatched from one thread one after
another, and most of a chunk's work after the scores is single-threaded, so this is what keeps
both cores of a small machine busy. The calling thread prepares the chunks (and calls a score
function, one chunk at a time), checks them for NaN in chunk order and reports progress.

Ties: ``jax.lax.top_k`` documents that among equal values the lower index comes first, which
is our rule (lower item id first); both selections map -0.0 to +0.0 first because top_k
orders floats totally (-0.0 < +0.0) while NumPy, used by the sampled protocol, treats them as
equal. Items scored -inf rank nowhere: a list with fewer than K finite-scored candidates is
padded with -1. A NaN score anywhere in a scored row, excluded items included, raises
``ValueError`` naming the user and the item (a model bug, not a ranking).

On a device mesh (``jax.set_mesh``; ``training.sharding.use_mesh``) each chunk's users are split
over the mesh's ``data`` axis (the chunk is rounded up to a multiple of its size) and the item
side is replicated, so every device scores and ranks its users against the whole catalogue.
When the mesh spans several processes (``training.distributed``) each process passes the same
inputs and gets the whole lists back (the kernel's outputs are replicated), so every process
computes the same metrics.

Scores are ranked in float32 (JAX runs without x64). A float64 source whose values do not
survive the cast warns (``Float64ScoresWarning``): scores closer than float32 precision then
tie, and the tie goes to the lower item id.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from recsys_jax.evaluation.interactions import gather_rows, row_counts
from recsys_jax.evaluation.metrics import PAD
from recsys_jax.evaluation.sources import (
    Embeddings,
    RankedLists,
    ScoreFunction,
    ScoreMatrix,
    ScoreSource,
    raise_on_nan,
    warn_if_float64_lossy,
)
from recsys_jax.evaluation.top_k import block_maxima, block_size, blocked_top_k
from recsys_jax.progress import track

# Scores per chunk when the caller does not choose: small enough to stay in a CPU's cache
# hierarchy (measured fastest on 2 cores), large enough to keep an accelerator busy.
_CPU_CHUNK_SCORES = 1 << 22
_ACCELERATOR_CHUNK_SCORES = 1 << 28
_MAX_CHUNK = 8192
# Users per chunk at least: each chunk streams the whole item side from memory, so with few
# users per chunk that stream, not the arithmetic, bounds a large catalogue's ranking (1M items
# × 64 on 2 CPU cores: 26.4 s per 4,096 users at 4 users a chunk, 14.5 s at 64, 16.3 s at 256).
_MIN_CHUNK = 64
SELECTIONS = ("top_k", "blocked")
# Chunks ranked at once, each on its own host thread (and so on its own core on a CPU).
_WORKERS = 2
# The mesh axis that splits users (training.sharding.DATA_AXIS; evaluation sits below training).
_DATA_AXIS = "data"


@dataclasses.dataclass(frozen=True)
class TopK:
    """Top-K lists of a set of users.

    Attributes:
      users: user id of each row.
      items: ``[len(users), K]`` int64 item ids, best first, -1 padding where a user has fewer
        than K candidates.
      scores: matching float32 scores (-inf at padding; NaN when the input was ranked lists).
    """

    users: np.ndarray
    items: np.ndarray
    scores: np.ndarray


@dataclasses.dataclass
class RankingStats:
    """Where the time went in one ``full_ranking`` call (filled in by the call)."""

    chunk_size: int = 0
    num_chunks: int = 0
    exclusion_pad: int = 0
    selection: str = ""
    compile_seconds: float = 0.0
    compiled_now: bool = False
    rank_seconds: float = 0.0
    removed_excluded: int = 0

    def users_per_second(self, num_users: int) -> float:
        """Throughput of the ranking loop (compilation excluded)."""
        return num_users / self.rank_seconds if self.rank_seconds > 0 else float("inf")


def default_chunk_size(num_items: int, num_users: int) -> int:
    """Users per chunk: a power of two sized to the backend (at least 64), never above the
    user count."""
    budget = _CPU_CHUNK_SCORES if jax.default_backend() == "cpu" else _ACCELERATOR_CHUNK_SCORES
    size = 1 << max(0, int(np.floor(np.log2(max(budget // max(num_items, 1), 1)))))
    return int(max(1, min(max(size, _MIN_CHUNK), _MAX_CHUNK, _next_pow2(max(num_users, 1)))))


def default_selection() -> str:
    """``"blocked"`` on a CPU (XLA's CPU ``top_k`` is the slow part there), else ``"top_k"``."""
    return "blocked" if jax.default_backend() == "cpu" else "top_k"


def full_ranking(source: ScoreSource, users: np.ndarray, k: int, *,
                 exclude: sp.csr_array | None = None, chunk_size: int | None = None,
                 selection: str | None = None, stats: RankingStats | None = None) -> TopK:
    """Top-K items for each of ``users`` over the whole catalogue minus their excluded items.

    Args:
      source: embeddings, a score matrix, a score function or precomputed ranked lists.
      users: user ids to rank for.
      k: list length K ≥ 1; when K exceeds the candidate count the list is -1 padded.
      exclude: CSR ``[num_users, num_items]``; row u's items never appear in u's list (the
        training items, plus the validation items when scoring test).
      chunk_size: users per device call (default: ``default_chunk_size``).
      selection: ``"top_k"`` or ``"blocked"`` (default: ``default_selection()``); both give
        the same lists.
      stats: filled with chunking, compile and ranking times when given.

    Returns:
      ``TopK`` with rows in the order of ``users``.
    """
    stats = RankingStats() if stats is None else stats
    users = np.asarray(users, dtype=np.int64)
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    selection = selection or default_selection()
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    if len(users) == 0:
        return TopK(users=users, items=np.full((0, k), PAD, np.int64),
                    scores=np.full((0, k), -np.inf, np.float32))
    if isinstance(source, RankedLists):
        return _filter_ranked_lists(source, users, k, exclude, stats)
    num_items = source.num_items
    if isinstance(source, Embeddings) and len(users) and users.max() >= source.num_users:
        raise ValueError(f"user id {int(users.max())} has no embedding "
                         f"({source.num_users} rows)")
    if exclude is None:
        exclude = sp.csr_array((int(users.max()) + 1 if len(users) else 1, num_items))
    exclude = sp.csr_array(exclude)
    if exclude.shape[1] != num_items:
        raise ValueError(f"exclusions cover {exclude.shape[1]} items, scores {num_items}")
    if len(users) and users.max() >= exclude.shape[0]:
        raise ValueError(f"user id {int(users.max())} outside the exclusion matrix "
                         f"({exclude.shape[0]} rows)")

    users_on = user_sharding()
    chunk = int(chunk_size or default_chunk_size(num_items, len(users)))
    if users_on is not None:  # Each device of the data axis takes an equal part of a chunk.
        split = users_on.mesh.shape[_DATA_AXIS]
        chunk = -(-chunk // split) * split
    k_eff = min(k, num_items)
    starts = list(range(0, len(users), chunk))
    per_user = row_counts(exclude)[users] if len(users) else np.zeros(0, np.int64)
    chunk_nnz = np.add.reduceat(per_user, starts) if starts else np.zeros(1, np.int64)
    pad = _next_pow2(int(chunk_nnz.max(initial=0)))
    stats.chunk_size, stats.num_chunks, stats.exclusion_pad = chunk, len(starts), pad
    stats.selection = selection

    if isinstance(source, Embeddings):
        for what, m in (("user embeddings", source.users), ("item embeddings", source.items)):
            warn_if_float64_lossy(m, what)
        user_emb, item_emb = source.prepared()
        kernel, compile_s, fresh = _compiled_kernel(
            "embeddings", selection, chunk, num_items, user_emb.shape[1], pad, k_eff, users_on)
        item_emb_dev = (jax.device_put(item_emb) if users_on is None else _from_every_process(
            item_emb, NamedSharding(users_on.mesh, PartitionSpec())))

        def chunk_inputs(start, ids):
            block = np.zeros((chunk, user_emb.shape[1]), np.float32)
            block[:len(ids)] = user_emb[ids]
            return block, item_emb_dev
    else:
        kernel, compile_s, fresh = _compiled_kernel("scores", selection, chunk, num_items, 0,
                                                    pad, k_eff, users_on)
        score_fn = source if isinstance(source, (ScoreMatrix, ScoreFunction)) else None
        if score_fn is None:
            raise TypeError(f"unsupported score source {type(source).__name__}")

        def chunk_inputs(start, ids):
            scores = score_fn.rows(ids)
            if start == 0:  # once per call: the first chunk shows the source's dtype
                warn_if_float64_lossy(scores, type(source).__name__)
            scores = _pad_rows(scores, chunk, num_items)
            if users_on is not None:  # A score function's array may live anywhere.
                scores = (jax.device_put(scores, users_on) if users_on.is_fully_addressable
                          else _from_every_process(np.asarray(scores), users_on))
            return (scores,)

    stats.compile_seconds, stats.compiled_now = compile_s, fresh
    items_out = np.full((len(users), k), PAD, dtype=np.int64)
    scores_out = np.full((len(users), k), -np.inf, dtype=np.float32)

    def rank_chunk(start, inputs, rows, cols):
        # Runs on a worker thread: the kernel call, then the copy of its lists to the host.
        idx, values, nan_col = kernel(*inputs, rows, cols)
        n = min(chunk, len(users) - start)
        items_out[start:start + n, :k_eff] = np.asarray(idx)[:n]
        scores_out[start:start + n, :k_eff] = np.asarray(values)[:n]
        return np.asarray(nan_col)[:n]

    t0 = time.perf_counter()
    pending: collections.deque = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(_WORKERS) as pool:
        try:
            for start in track(starts, "full ranking", total=len(users), unit="users",
                               weight=lambda s: len(users[s:s + chunk])):
                ids = users[start:start + chunk]
                local, cols = gather_rows(exclude, ids)
                rows = np.full(pad, chunk, dtype=np.int32)  # row `chunk` is out of range
                cols_p = np.zeros(pad, dtype=np.int32)
                rows[:len(local)], cols_p[:len(cols)] = local, cols
                inputs = chunk_inputs(start, ids)
                pending.append((ids, pool.submit(rank_chunk, start, inputs, rows, cols_p)))
                # One chunk prepared ahead per worker; NaN is reported in chunk order.
                if len(pending) > _WORKERS:
                    ids, done = pending.popleft()
                    raise_on_nan(ids, done.result())
            while pending:
                ids, done = pending.popleft()
                raise_on_nan(ids, done.result())
        finally:
            for _, queued in pending:
                queued.cancel()
    stats.rank_seconds = time.perf_counter() - t0
    return TopK(users=users, items=items_out, scores=scores_out)


def _mask_and_select(scores: jax.Array, rows: jax.Array, cols: jax.Array, k: int):
    """``jax.lax.top_k`` over the row, excluded pairs at -inf; NaN columns checked first."""
    scores = jnp.where(scores == 0, 0.0, scores).astype(jnp.float32)  # -0.0 → +0.0
    # Checked before masking, so a NaN on an excluded item is caught too: per row, the
    # column of the first NaN, or -1.
    is_nan = jnp.isnan(scores)
    nan_col = jnp.where(is_nan.any(axis=1), jnp.argmax(is_nan, axis=1), -1)
    scores = scores.at[rows, cols].set(-jnp.inf, mode="drop")
    values, idx = jax.lax.top_k(scores, k)
    idx = jnp.where(jnp.isneginf(values), PAD, idx)
    return idx, values, nan_col


def _mask_and_select_blocked(scores: jax.Array, rows: jax.Array, cols: jax.Array, k: int):
    """``blocked_top_k`` with excluded pairs at -inf: the lists of ``_mask_and_select``."""
    scores = scores.astype(jnp.float32)
    # min(NaN, -inf) is NaN in XLA: excluded pairs go to -inf but a NaN stays to be reported,
    # and the block maxima (NaN when their block holds one) tell whether any row has one.
    scores = scores.at[rows, cols].min(-jnp.inf, mode="drop")
    num_rows, num_items = scores.shape
    block = block_size(num_items, k)
    maxima = block_maxima(scores, block) if block else scores
    nan_col = jax.lax.cond(jnp.isnan(maxima).any(), _first_nan_column,
                           lambda s: jnp.full((num_rows,), -1, jnp.int32), scores)
    values, idx = blocked_top_k(scores, k, maxima=maxima if block else None)
    idx = jnp.where(jnp.isneginf(values), PAD, idx)
    return idx, values, nan_col


def _first_nan_column(scores: jax.Array) -> jax.Array:
    is_nan = jnp.isnan(scores)
    return jnp.where(is_nan.any(axis=1), jnp.argmax(is_nan, axis=1), -1).astype(jnp.int32)


_SELECT = {"top_k": _mask_and_select, "blocked": _mask_and_select_blocked}


def _embedding_kernel(user_block, item_emb, rows, cols, *, k, selection):
    # HIGHEST keeps float32 products on GPUs (no TF32), so scores agree across backends.
    scores = jax.lax.dot_general(user_block, item_emb, (((1,), (1,)), ((), ())),
                                 precision=jax.lax.Precision.HIGHEST)
    return _SELECT[selection](scores, rows, cols, k)


def _score_kernel(scores, rows, cols, *, k, selection):
    return _SELECT[selection](scores, rows, cols, k)


def _from_every_process(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    # The same whole host array in every process, laid out as ``sharding`` says over the
    # devices of all of them (with one process, ``jax.device_put``; with several, without
    # comparing the processes' copies). training.sharding.replicate is its twin for the
    # engine, which evaluation must not import.
    return jax.make_array_from_process_local_data(sharding, x, x.shape)


def user_sharding() -> NamedSharding | None:
    """How a chunk's ``[users, ...]`` arrays are split: over the current mesh's ``data`` axis,
    or ``None`` (no mesh, or a data axis of one device)."""
    mesh = jax.sharding.get_mesh()
    if not isinstance(mesh, Mesh) or mesh.empty or mesh.shape.get(_DATA_AXIS, 1) <= 1:
        return None
    return NamedSharding(mesh, PartitionSpec(_DATA_AXIS))


@functools.lru_cache(maxsize=32)
def _compiled(kind: str, selection: str, chunk: int, num_items: int, dim: int, pad: int,
              k: int, users_on: NamedSharding | None = None):
    """Ahead-of-time compiled kernel for these shapes (users split as ``users_on`` says, the
    rest replicated), with its compile time."""
    f32, i32 = jnp.float32, jnp.int32
    whole = None if users_on is None else NamedSharding(users_on.mesh, PartitionSpec())
    index = jax.ShapeDtypeStruct((pad,), i32, sharding=whole)
    # A mesh over several processes: the lists come back whole to every process.
    out = whole if users_on is not None and not users_on.is_fully_addressable else None
    t0 = time.perf_counter()
    if kind == "embeddings":
        fn = jax.jit(functools.partial(_embedding_kernel, k=k, selection=selection),
                     out_shardings=out)
        lowered = fn.lower(jax.ShapeDtypeStruct((chunk, dim), f32, sharding=users_on),
                           jax.ShapeDtypeStruct((num_items, dim), f32, sharding=whole),
                           index, index)
    else:
        fn = jax.jit(functools.partial(_score_kernel, k=k, selection=selection),
                     out_shardings=out)
        lowered = fn.lower(jax.ShapeDtypeStruct((chunk, num_items), f32, sharding=users_on),
                           index, index)
    compiled = lowered.compile()
    return compiled, time.perf_counter() - t0


def _compiled_kernel(kind: str, selection: str, chunk: int, num_items: int, dim: int,
                     pad: int, k: int, users_on: NamedSharding | None = None):
    hits_before = _compiled.cache_info().hits
    compiled, seconds = _compiled(kind, selection, chunk, num_items, dim, pad, k, users_on)
    fresh = _compiled.cache_info().hits == hits_before
    return compiled, (seconds if fresh else 0.0), fresh


def _pad_rows(scores: Any, chunk: int, num_items: int) -> Any:
    if scores.shape[1] != num_items:
        raise ValueError(f"score function returned {scores.shape[1]} columns, "
                         f"expected {num_items}")
    missing = chunk - scores.shape[0]
    if isinstance(scores, jax.Array):
        scores = scores.astype(jnp.float32)
        return jnp.pad(scores, ((0, missing), (0, 0))) if missing else scores
    scores = np.asarray(scores, dtype=np.float32)
    return np.pad(scores, ((0, missing), (0, 0))) if missing else scores


def _filter_ranked_lists(source: RankedLists, users: np.ndarray, k: int,
                         exclude: sp.csr_array | None, stats: RankingStats) -> TopK:
    """Rows of ``source`` for ``users``, excluded items dropped (the rest move up), cut to K."""
    lists = np.asarray(source.items).astype(np.int64, copy=False)
    row_users = (np.arange(len(lists), dtype=np.int64) if source.users is None
                 else np.asarray(source.users, dtype=np.int64))
    if len(np.unique(row_users)) != len(row_users):
        raise ValueError("ranked lists hold two rows for the same user")
    order = np.argsort(row_users, kind="stable")
    sorted_users = row_users[order]
    pos = np.minimum(np.searchsorted(sorted_users, users), max(len(order) - 1, 0))
    found = (sorted_users[pos] == users) if len(order) else np.zeros(len(users), bool)
    if not found.all():
        raise ValueError(f"ranked lists lack user(s) {users[~found][:5].tolist()}")
    lists = lists[order[pos]] if len(users) else np.zeros((0, lists.shape[1]), np.int64)
    drop = lists == PAD
    if exclude is not None and len(users):
        exclude = sp.csr_array(exclude)
        local, cols = gather_rows(exclude, users)
        excluded_keys = np.sort(local * exclude.shape[1] + cols)
        keys = np.arange(len(users))[:, None] * exclude.shape[1] + np.where(drop, 0, lists)
        at = np.searchsorted(excluded_keys, keys).clip(max=max(len(excluded_keys) - 1, 0))
        hit = ~drop & (len(excluded_keys) > 0)
        if len(excluded_keys):
            hit &= excluded_keys[at] == keys
        stats.removed_excluded = int(hit.sum())
        drop |= hit
    # Stable sort on the drop flag moves kept items left, preserving their order.
    keep_order = np.argsort(drop, axis=1, kind="stable")
    lists = np.where(np.take_along_axis(drop, keep_order, axis=1), PAD,
                     np.take_along_axis(lists, keep_order, axis=1))
    out = np.full((len(users), k), PAD, dtype=np.int64)
    width = min(k, lists.shape[1])
    out[:, :width] = lists[:, :width]
    return TopK(users=users, items=out, scores=np.full(out.shape, np.nan, np.float32))


def _next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()
