"""User × item sparse matrices built from id pairs: relevant sets, exclusions, training counts.

Evaluation works on contiguous integer ids (0..num_users-1, 0..num_items-1) held in
``scipy.sparse.csr_array`` matrices, so it never depends on how the data were loaded.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def interaction_matrix(user_ids: np.ndarray, item_ids: np.ndarray, num_users: int,
                       num_items: int, values: np.ndarray | None = None) -> sp.csr_array:
    """A ``num_users × num_items`` CSR matrix with one stored entry per distinct (user, item).

    Args:
      user_ids, item_ids: equal-length integer arrays of encoded ids.
      num_users, num_items: the matrix shape; every id must lie inside it.
      values: optional value per pair (e.g. the rating, used as the graded gain); ``1.0``
        when omitted. A pair listed twice keeps its largest value.

    Returns:
      CSR matrix with sorted column indices in every row and float64 data.

    Raises:
      ValueError: on mismatched lengths or ids outside the shape.
    """
    users = np.asarray(user_ids).astype(np.int64, copy=False).ravel()
    items = np.asarray(item_ids).astype(np.int64, copy=False).ravel()
    if users.shape != items.shape:
        raise ValueError(f"{len(users)} user ids but {len(items)} item ids")
    data = (np.ones(len(users)) if values is None
            else np.asarray(values, dtype=np.float64).ravel())
    if data.shape != users.shape:
        raise ValueError(f"{len(users)} pairs but {len(data)} values")
    _check_range(users, num_users, "user")
    _check_range(items, num_items, "item")
    # Group by user (a stable sort, nearly free when the rows come grouped already), then sort
    # each row's columns in scipy's C++ loop: much cheaper than one global sort of the pairs.
    order = np.argsort(users, kind="stable")
    indptr = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=num_users), out=indptr[1:])
    matrix = sp.csr_array((data[order], items[order], indptr), shape=(num_users, num_items))
    matrix.sort_indices()
    return _keep_largest_duplicate(matrix)


def _keep_largest_duplicate(matrix: sp.csr_array) -> sp.csr_array:
    """One entry per (row, column) of a CSR matrix with sorted indices: the largest value."""
    cols, indptr = matrix.indices, matrix.indptr
    repeat = np.zeros(len(cols), dtype=bool)
    repeat[1:] = cols[1:] == cols[:-1]
    repeat[indptr[:-1][indptr[:-1] < len(cols)]] = False  # a row's first entry repeats nothing
    if not repeat.any():
        return matrix
    first = ~repeat
    data = np.maximum.reduceat(matrix.data, np.flatnonzero(first))
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(indptr))[first]
    new_indptr = np.zeros(len(indptr), dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=matrix.shape[0]), out=new_indptr[1:])
    return sp.csr_array((data, cols[first], new_indptr), shape=matrix.shape)


def binary_union(*matrices: sp.csr_array) -> sp.csr_array:
    """Entry-wise OR of same-shape sparse matrices, as a CSR matrix of ones (sorted indices)."""
    if not matrices:
        raise ValueError("binary_union needs at least one matrix")
    shape = matrices[0].shape
    total = None
    for m in matrices:
        if m.shape != shape:
            raise ValueError(f"shape mismatch: {m.shape} vs {shape}")
        stored = sp.csr_array(m) != 0  # boolean: adding them is an OR
        total = stored if total is None else total + stored
    total = sp.csr_array(total, dtype=np.float64)
    total.eliminate_zeros()
    total.sort_indices()
    return total


def row_counts(matrix: sp.csr_array) -> np.ndarray:
    """Stored entries per row (int64)."""
    return np.diff(sp.csr_array(matrix).indptr).astype(np.int64)


def gather_rows(matrix: sp.csr_array, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column indices of the given rows as flat (position-in-``rows``, column) pairs.

    Vectorised equivalent of ``matrix[rows].nonzero()`` without building a new matrix.
    """
    matrix = sp.csr_array(matrix)
    rows = np.asarray(rows, dtype=np.int64)
    starts = matrix.indptr[rows]
    counts = matrix.indptr[rows + 1] - starts
    local = np.repeat(np.arange(len(rows), dtype=np.int64), counts)
    # Offset of each stored entry inside its row: global position minus the row's start.
    offsets = np.arange(counts.sum(), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts,
                                                                  counts)
    cols = matrix.indices[np.repeat(starts, counts) + offsets]
    return local, cols.astype(np.int64, copy=False)


def _check_range(ids: np.ndarray, n: int, kind: str) -> None:
    if len(ids) and (ids.min() < 0 or ids.max() >= n):
        bad = ids[(ids < 0) | (ids >= n)]
        raise ValueError(f"{len(bad)} {kind} id(s) outside [0, {n}), e.g. {int(bad[0])}")
