"""k-core filtering (recsys_jax.data.kcore) and its use as a split option."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from recsys_jax.data.errors import DataError
from recsys_jax.data.kcore import k_core, k_core_params
from recsys_jax.data.splits import deduplicate_interactions, make_split


def frame_from(pairs) -> pd.DataFrame:
    users, items = zip(*pairs) if pairs else ((), ())
    return pd.DataFrame({"user_id": np.array(users, np.int64), "item_id": np.array(items, np.int64),
                         "timestamp": np.arange(len(pairs), dtype=np.int64)})


def pair_set(frame: pd.DataFrame) -> set:
    return set(zip(frame["user_id"].tolist(), frame["item_id"].tolist()))


def reference_core(pairs, k_user: int, k_item: int) -> set:
    """Removes one offending event at a time until none is left (plain Python)."""
    left = set(pairs)
    while True:
        users = {u: sum(1 for p in left if p[0] == u) for u, _ in left}
        items = {i: sum(1 for p in left if p[1] == i) for _, i in left}
        bad = next((p for p in sorted(left) if users[p[0]] < k_user or items[p[1]] < k_item),
                   None)
        if bad is None:
            return left
        left.remove(bad)


# Core: users 0, 1 x items 0, 1. A chain hangs off it: (3, 3) is item 3's only event, so
# item 3 goes; then user 3 has one event left and goes; then item 2, then user 2.
CHAIN = [(0, 0), (0, 1), (1, 0), (1, 1), (2, 1), (2, 2), (3, 2), (3, 3)]


def test_hand_worked_chain_needs_four_rounds():
    assert pair_set(k_core(frame_from(CHAIN), 2, 2)) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    # One round alone would only drop (3, 3): every user has 2 events at the start.
    assert reference_core(CHAIN, 2, 2) == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_keeps_file_order_and_columns():
    frame = frame_from(CHAIN[::-1])
    core = k_core(frame, 2, 2)
    assert core["timestamp"].tolist() == [4, 5, 6, 7]  # rows of the core, in file order
    assert list(core.columns) == list(frame.columns) and isinstance(core.index, pd.RangeIndex)


def test_user_and_item_minimums_are_separate():
    assert pair_set(k_core(frame_from(CHAIN), 2, 0)) == set(CHAIN)  # every user has 2
    assert pair_set(k_core(frame_from(CHAIN), 0, 2)) == reference_core(CHAIN, 0, 2)
    assert pair_set(k_core(frame_from(CHAIN), 3, 0)) == set()


pairs_strategy = st.lists(st.tuples(st.integers(0, 9), st.integers(0, 11)), max_size=80,
                          unique=True)


@given(pairs_strategy, st.integers(0, 4), st.integers(0, 4))
def test_core_is_the_fixed_point_and_idempotent(pairs, k_user, k_item):
    frame = frame_from(pairs)
    core = k_core(frame, k_user, k_item)
    if len(core):
        assert core.groupby("user_id").size().min() >= k_user
        assert core.groupby("item_id").size().min() >= k_item
    assert pair_set(core) == reference_core(pairs, k_user, k_item)  # the largest such subset
    pd.testing.assert_frame_equal(k_core(core, k_user, k_item), core)


def test_off_keeps_everything():
    frame = frame_from(CHAIN)
    for k in (0, 1):
        pd.testing.assert_frame_equal(k_core(frame, k, k), frame)
        assert k_core_params(k, k) == {}
    assert k_core_params(5, 1) == {"min_user_interactions": 5, "min_item_interactions": 0}


def test_split_option_filters_before_splitting_and_enters_the_fingerprint():
    rng = np.random.default_rng(0)
    pairs = list(zip(rng.integers(0, 60, 900).tolist(), rng.zipf(1.6, 900).clip(max=200)))
    frame = frame_from(pairs)
    plain = make_split(frame, "leave_one_out")
    cored = make_split(frame, "leave_one_out", min_user_interactions=5, min_item_interactions=3)
    kept = pair_set(k_core(deduplicate_interactions(frame), 5, 3))
    assert set().union(*(pair_set(p) for p in cored.parts().values())) == kept
    assert len(kept) < len(pair_set(frame))
    assert cored.params == {"tie_order": "random", "seed": 0, "min_user_interactions": 5,
                            "min_item_interactions": 3}
    assert cored.fingerprint() != plain.fingerprint() and cored.report.ok
    assert make_split(frame, "leave_one_out", min_user_interactions=1).fingerprint() == \
        plain.fingerprint()


def test_duplicates_count_once():
    frame = frame_from([(0, 0), (0, 0), (0, 1), (1, 1)])
    split = make_split(frame, "random", min_user_interactions=2)
    assert set().union(*(pair_set(p) for p in split.parts().values())) == {(0, 0), (0, 1)}


def test_errors():
    with pytest.raises(DataError, match="min_user_interactions"):
        make_split(frame_from(CHAIN), "random", min_user_interactions=9)
    with pytest.raises(ValueError, match="non-negative integer"):
        k_core(frame_from(CHAIN), -1, 0)
    with pytest.raises(ValueError, match="min_item_interactions"):
        make_split(frame_from(CHAIN), "random", min_item_interactions=2.5)
    with pytest.raises(DataError, match="item_id"):
        k_core(frame_from(CHAIN).drop(columns="item_id"), 2, 2)
