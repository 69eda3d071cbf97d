"""Negative sampling on the device: uniform items that are not among a user's training positives.

For each (user, slot) an item is drawn uniformly from the catalogue; draws that hit one of the
user's training positives are redrawn (only those slots) until none does, inside one
``lax.while_loop``. The result is, per slot independently, uniform over the user's
non-positive items, as in the NCF reference code (which also samples with replacement and
rejects training positives). Held-out (validation/test) items are *not* excluded: the model
must not know them, and they are valid negatives at training time.

Membership of (user, item) in the training positives is tested on the device by one of two
structures (``PositiveSet``), chosen by size:

* ``dense``: a ``[num_users, num_items]`` boolean bitmap (one byte per pair on XLA), one
  gather per test. ML-100K needs 943 × 1,682 = 1.6 MB; used up to ``dense_limit_bytes``.
* ``sorted``: CSR rows of sorted item ids (``indptr`` + ``items``, 4 bytes per positive) and
  a branch-free binary search of ⌈log₂(max row length + 1)⌉ steps. Memory grows with the
  interactions, not with users × items, so it serves catalogues where a bitmap would not fit
  (200K users × 1M items = 200 GB as a bitmap; 10M positives = 40 MB sorted).

Every user with positives must leave at least one item unsampled-from, or rejection would never
end; ``build_positive_set`` checks this on the host. Expected rounds are small: a user who
holds a fraction f of the catalogue needs ~log(slots)/log(1/f) rounds (f = 0.44 for the
heaviest ML-100K user).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("dense", "sorted")
DEFAULT_DENSE_LIMIT_BYTES = 1 << 28


@dataclasses.dataclass(frozen=True)
class PositiveSet:
    """Each user's training positives on the device, for membership tests.

    Attributes:
      num_users, num_items: the id spaces.
      kind: ``"dense"`` or ``"sorted"`` (see the module docstring).
      bitmap: ``[num_users, num_items]`` bool (dense only).
      indptr: ``[num_users + 1]`` int32 row starts (sorted only).
      items: ``[num_positives]`` int32 item ids, sorted within each user (sorted only).
      search_steps: binary-search iterations that cover the longest row (sorted only).
    """

    num_users: int
    num_items: int
    kind: str
    bitmap: jax.Array | None = None
    indptr: jax.Array | None = None
    items: jax.Array | None = None
    search_steps: int = 0

    def contains(self, users: jax.Array, items: jax.Array) -> jax.Array:
        """Whether ``items`` (any shape) are training positives of ``users`` (broadcast)."""
        users, items = jnp.broadcast_arrays(users, items)
        if self.kind == "dense":
            return self.bitmap[users, items]
        start, end = self.indptr[users], self.indptr[users + 1]
        lo, hi = start, end
        last = max(int(self.items.shape[0]) - 1, 0)
        for _ in range(self.search_steps):  # lower_bound of `items` in each row
            mid = (lo + hi) // 2
            active = lo < hi
            below = self.items[jnp.minimum(mid, last)] < items
            lo = jnp.where(active & below, mid + 1, lo)
            hi = jnp.where(active & ~below, mid, hi)
        return (lo < end) & (self.items[jnp.minimum(lo, last)] == items)


def build_positive_set(users: np.ndarray, items: np.ndarray, num_users: int, num_items: int,
                       *, kind: str = "auto",
                       dense_limit_bytes: int = DEFAULT_DENSE_LIMIT_BYTES) -> PositiveSet:
    """The positives ``(users[k], items[k])`` as a device ``PositiveSet``.

    Args:
      users, items: training interactions (validated ids; duplicates are fine).
      num_users, num_items: id-space sizes.
      kind: ``"dense"``, ``"sorted"`` or ``"auto"`` (dense when the bitmap takes at most
        ``dense_limit_bytes``).

    Raises:
      ValueError: for an unknown kind, or a user whose positives cover the whole catalogue
        (no negative exists for them).
    """
    users = np.asarray(users, np.int64)
    items = np.asarray(items, np.int64)
    if kind == "auto":
        kind = "dense" if num_users * num_items <= dense_limit_bytes else "sorted"
    if kind not in KINDS:
        raise ValueError(f"kind must be 'auto' or one of {KINDS}, got {kind!r}")
    keys = np.unique(users * num_items + items)
    row, col = np.divmod(keys, num_items)
    counts = np.bincount(row, minlength=num_users)
    if len(counts) and counts.max(initial=0) >= num_items:
        full = np.flatnonzero(counts >= num_items)
        raise ValueError(f"user(s) {full[:5].tolist()} interacted with every item: no negative "
                         f"can be sampled for them")
    if kind == "dense":
        bitmap = np.zeros((num_users, num_items), np.bool_)
        bitmap[row, col] = True
        return PositiveSet(num_users, num_items, "dense", bitmap=jax.device_put(bitmap))
    indptr = np.zeros(num_users + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    if indptr[-1] >= np.iinfo(np.int32).max:
        raise ValueError(f"{indptr[-1]} positives exceed the int32 indices of the sorted set")
    steps = math.ceil(math.log2(int(counts.max(initial=0)) + 1)) if len(keys) else 0
    return PositiveSet(num_users, num_items, "sorted",
                       indptr=jax.device_put(indptr.astype(np.int32)),
                       items=jax.device_put(col.astype(np.int32)), search_steps=steps)


def sample_negatives(positives: PositiveSet, key: jax.Array, users: jax.Array,
                     num_negatives: int) -> jax.Array:
    """``[*users.shape, num_negatives]`` int32 items, none a training positive of its user.

    Deterministic given ``key`` (jit-compatible); round r of rejection redraws with
    ``fold_in(key, r)``.
    """
    if num_negatives <= 0:
        raise ValueError(f"num_negatives must be positive, got {num_negatives}")
    users = jnp.asarray(users)[..., None]
    shape = users.shape[:-1] + (num_negatives,)

    def draw(round_):
        return jax.random.randint(jax.random.fold_in(key, round_), shape, 0,
                                  positives.num_items, dtype=jnp.int32)

    first = draw(0)

    def redraw(carry):
        round_, negatives, bad = carry
        fresh = draw(round_)
        # Only slots still holding a positive take the fresh draw.
        return (round_ + 1, jnp.where(bad, fresh, negatives),
                bad & positives.contains(users, fresh))

    _, negatives, _ = jax.lax.while_loop(
        lambda carry: jnp.any(carry[2]), redraw,
        (jnp.int32(1), first, positives.contains(users, first)))
    return negatives
