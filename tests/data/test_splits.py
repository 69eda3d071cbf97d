"""Tests for leakage-free splits (recsys_jax.data.splits).

Property tests draw small interaction frames with many duplicate pairs and tied timestamps and
check every protocol against plain-Python reference computations.
"""

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from recsys_jax.data.errors import DataError
from recsys_jax.data.ids import IdEncoder
from recsys_jax.data.splits import (
    PROTOCOLS,
    TIE_ORDERS,
    LeakageReport,
    Split,
    deduplicate_interactions,
    global_temporal_split,
    leakage_report,
    leave_one_out_split,
    make_split,
    random_split,
    user_temporal_split,
)

FRACTIONS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.5]


def frame_from(events) -> pd.DataFrame:
    """Interactions from (user, item, timestamp) tuples; ``row`` records the file position."""
    users, items, stamps = zip(*events) if events else ((), (), ())
    n = len(events)
    return pd.DataFrame({
        "user_id": np.array(users, dtype=np.int64), "item_id": np.array(items, dtype=np.int64),
        "rating": np.linspace(1, 5, n).astype(np.float32),
        "timestamp": np.array(stamps, dtype=np.int64), "row": np.arange(n, dtype=np.int64)})


# Few users, items and timestamps: lots of duplicate pairs and ties.
events_strategy = st.lists(
    st.tuples(st.integers(0, 7), st.integers(0, 9), st.integers(0, 5)), min_size=1, max_size=70)
fractions_strategy = st.tuples(st.sampled_from(FRACTIONS), st.sampled_from(FRACTIONS)).filter(
    lambda f: f[0] + f[1] < 1)


def round_half_up(n: int, fraction: float) -> int:
    return math.floor(n * Fraction(str(fraction)) + Fraction(1, 2))


def reference_dedup(frame: pd.DataFrame) -> list[int]:
    """Rows kept: per pair the largest timestamp, the last in file order among equals."""
    kept = {}
    for row in frame.itertuples(index=False):
        key = (row.user_id, row.item_id)
        if key not in kept or row.timestamp >= kept[key].timestamp:
            kept[key] = row
    return sorted(r.row for r in kept.values())


def pairs(part: pd.DataFrame) -> set:
    return set(zip(part["user_id"].tolist(), part["item_id"].tolist()))


def check_partition(split: Split, frame: pd.DataFrame) -> None:
    """Parts partition the deduplicated data, keep its columns and file order, share no pair."""
    rows = [split.train["row"].tolist(), split.val["row"].tolist(), split.test["row"].tolist()]
    assert sorted(sum(rows, [])) == reference_dedup(frame)
    for part, part_rows in zip(split.parts().values(), rows):
        assert part_rows == sorted(part_rows)
        assert list(part.columns) == list(frame.columns)
        assert (part.dtypes == frame.dtypes).all()
        assert isinstance(part.index, pd.RangeIndex) and part.index.start == 0
    train, val, test = (pairs(p) for p in split.parts().values())
    assert not (train & val) and not (train & test) and not (val & test)
    report = split.report
    assert report.ok
    assert (report.train_size, report.val_size, report.test_size) == tuple(map(len, rows))
    assert report.duplicate_pairs == 0


def user_sequences(part: pd.DataFrame) -> dict:
    """Per user, its events as (timestamp, item) in time order (ties: item id)."""
    sequences = {}
    for row in part.itertuples(index=False):
        sequences.setdefault(row.user_id, []).append((row.timestamp, row.item_id))
    return {user: sorted(events) for user, events in sequences.items()}


def check_per_user_holdout(split: Split, frame: pd.DataFrame, sizes,
                           tie_order: str = "item_id") -> None:
    """Each user's last t events are test and the v before them val; ``sizes(n) -> (t, v)``.

    With ``tie_order="item_id"`` the events themselves are checked; with ``"random"`` (any order
    inside equal timestamps is allowed) their timestamps.
    """
    dedup = frame[frame["row"].isin(reference_dedup(frame))]
    train, val, test = (user_sequences(p) for p in split.parts().values())

    def seen(events):
        return events if tie_order == "item_id" else [t for t, _ in events]

    for user, events in user_sequences(dedup).items():
        t, v = sizes(len(events))
        n_train = len(events) - t - v
        assert seen(train.get(user, [])) == seen(events[:n_train])
        assert seen(val.get(user, [])) == seen(events[n_train:n_train + v])
        assert seen(test.get(user, [])) == seen(events[n_train + v:])
    assert split.report.temporal_scope == "per_user"


# --------------------------------------------------------------------------- deduplication

@given(events_strategy)
def test_deduplicate_keeps_latest_event_last_in_file_order_on_ties(events):
    frame = frame_from(events)
    dedup = deduplicate_interactions(frame)
    assert dedup["row"].tolist() == reference_dedup(frame)
    assert isinstance(dedup.index, pd.RangeIndex)
    assert not dedup.duplicated(["user_id", "item_id"]).any()


def test_deduplicate_without_timestamps_keeps_last_in_file_order():
    frame = frame_from([(1, 1, 9), (1, 1, 0), (2, 1, 5)]).drop(columns="timestamp")
    assert deduplicate_interactions(frame)["row"].tolist() == [1, 2]


# --------------------------------------------------------------------------- protocols

@given(events_strategy, fractions_strategy, st.integers(0, 2**32))
def test_random_split_sizes_and_invariants(events, fractions, seed):
    val_fraction, test_fraction = fractions
    frame = frame_from(events)
    split = random_split(frame, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    check_partition(split, frame)
    n = len(reference_dedup(frame))
    assert len(split.test) == round_half_up(n, test_fraction)
    assert len(split.val) == round_half_up(n, val_fraction)
    assert split.report.temporal_scope == "none"
    assert split.params == {"seed": seed, "val_fraction": val_fraction,
                            "test_fraction": test_fraction}


def test_halves_round_up_despite_float_error():
    # 90 * 0.35 is 31.499999999999996 in floating point; the documented rule says 31.5 -> 32.
    frame = frame_from([(u, i, u + i) for u in range(9) for i in range(10)])
    split = random_split(frame, val_fraction=0.05, test_fraction=0.35)
    assert (len(split.val), len(split.test)) == (5, 32)
    one_user = frame.assign(user_id=0, item_id=frame["user_id"] * 10 + frame["item_id"])
    user_split = user_temporal_split(one_user, val_fraction=0.05,
                                     test_fraction=0.35)
    assert (len(user_split.val), len(user_split.test)) == (5, 32)


def reference_snap(sorted_ts: list, cut: int) -> int:
    """The run boundary nearest to ``cut`` (the earlier one on a tie)."""
    n = len(sorted_ts)
    boundaries = [b for b in range(n + 1) if b in (0, n) or sorted_ts[b - 1] != sorted_ts[b]]
    return min(boundaries, key=lambda b: (abs(b - cut), b))


@given(events_strategy, fractions_strategy)
def test_global_temporal_split_orders_parts_and_never_splits_ties(events, fractions):
    val_fraction, test_fraction = fractions
    frame = frame_from(events)
    split = global_temporal_split(frame, val_fraction=val_fraction, test_fraction=test_fraction)
    check_partition(split, frame)
    train, val, test = (set(p["timestamp"]) for p in split.parts().values())
    if train and (val | test):
        assert max(train) <= min(val | test)
    if val and test:
        assert max(val) <= min(test)
    assert not (train & val) and not (train & test) and not (val & test)
    sorted_ts = sorted(frame.loc[frame["row"].isin(reference_dedup(frame)), "timestamp"])
    n = len(sorted_ts)
    n_test, n_val = round_half_up(n, test_fraction), round_half_up(n, val_fraction)
    test_start = reference_snap(sorted_ts, n - n_test)
    val_start = min(reference_snap(sorted_ts, n - n_test - n_val), test_start)
    assert (len(split.train), len(split.val), len(split.test)) == (
        val_start, test_start - val_start, n - test_start)
    assert split.report.temporal_scope == "global" and split.report.temporal_violations == 0


def test_global_temporal_split_exact_sizes_with_distinct_timestamps():
    frame = frame_from([(u % 7, u, 1000 - u) for u in range(100)])
    split = global_temporal_split(frame)
    assert (len(split.train), len(split.val), len(split.test)) == (80, 10, 10)
    assert split.train["timestamp"].max() == 980 and split.test["timestamp"].min() == 991


def tie_params(tie_order: str, seed: int) -> dict:
    return {"tie_order": "item_id"} if tie_order == "item_id" else {"tie_order": "random",
                                                                     "seed": seed}


tie_orders = st.sampled_from(TIE_ORDERS)


@given(events_strategy, fractions_strategy, tie_orders, st.integers(0, 5))
def test_user_temporal_split_by_fraction(events, fractions, tie_order, seed):
    val_fraction, test_fraction = fractions
    frame = frame_from(events)
    split = user_temporal_split(frame, val_fraction=val_fraction, test_fraction=test_fraction,
                                tie_order=tie_order, seed=seed)
    check_partition(split, frame)

    def sizes(n):
        t = min(round_half_up(n, test_fraction), n - 1)
        return t, min(round_half_up(n, val_fraction), n - 1 - t)

    check_per_user_holdout(split, frame, sizes, tie_order)
    assert split.report.temporal_violations == 0
    assert split.params == {"val_fraction": val_fraction, "test_fraction": test_fraction,
                            **tie_params(tie_order, seed)}


@given(events_strategy, st.integers(1, 3), tie_orders)
def test_user_temporal_split_last_k(events, k, tie_order):
    frame = frame_from(events)
    split = user_temporal_split(frame, holdout_k=k, tie_order=tie_order)
    check_partition(split, frame)
    check_per_user_holdout(split, frame, lambda n: (k if n >= k + 1 else 0,
                                                    k if n >= 2 * k + 1 else 0), tie_order)
    assert split.params == {"holdout_k": k, **tie_params(tie_order, 0)}


@given(events_strategy, tie_orders, st.integers(0, 5))
def test_leave_one_out_split(events, tie_order, seed):
    frame = frame_from(events)
    split = leave_one_out_split(frame, tie_order=tie_order, seed=seed)
    check_partition(split, frame)
    check_per_user_holdout(split, frame, lambda n: (int(n >= 2), int(n >= 3)), tie_order)
    assert split.params == tie_params(tie_order, seed)


def test_user_temporal_rounding_and_small_users():
    # User 0: 5 events -> 0.5 rounds up: 1 test, 1 val. User 1: 4 events -> 0.4 -> all train.
    # User 2: 1 event -> train. Equal timestamps are ordered by item id (by name).
    events = ([(0, i, 7) for i in range(5)] + [(1, i, i) for i in range(4)] + [(2, 0, 0)])
    split = user_temporal_split(frame_from(events), tie_order="item_id")
    assert pairs(split.test) == {(0, 4)} and pairs(split.val) == {(0, 3)}
    assert len(split.train) == 3 + 4 + 1


def test_leave_one_out_small_users():
    split = leave_one_out_split(frame_from([(0, 1, 5), (0, 2, 6), (1, 1, 1)]), seed=3)
    assert pairs(split.test) == {(0, 2)} and split.val.empty
    assert pairs(split.train) == {(0, 1), (1, 1)}


# --------------------------------------------------------------------------- determinism

distinct_events = st.lists(st.tuples(st.integers(0, 7), st.integers(0, 9), st.integers(0, 5)),
                           min_size=1, max_size=60, unique_by=lambda e: (e[0], e[1]))


@given(distinct_events, st.randoms(use_true_random=False))
def test_splits_do_not_depend_on_row_order(events, rnd):
    shuffled = list(events)
    rnd.shuffle(shuffled)
    for protocol in PROTOCOLS:
        a, b = make_split(frame_from(events), protocol), make_split(frame_from(shuffled), protocol)
        assert [pairs(p) for p in a.parts().values()] == [pairs(p) for p in b.parts().values()]
        assert a.fingerprint() == b.fingerprint()


@given(distinct_events)
def test_splits_are_the_same_before_and_after_id_encoding(events):
    # String ids sort differently from ints; the encoder's codes follow that string order.
    raw = frame_from(events).assign(user_id=lambda f: "u" + f["user_id"].astype(str),
                                    item_id=lambda f: "i" + (f["item_id"] * 7).astype(str))
    users, items = IdEncoder.fit(raw["user_id"], "user"), IdEncoder.fit(raw["item_id"], "item")
    encoded = raw.assign(user_id=users.transform(raw["user_id"]),
                         item_id=items.transform(raw["item_id"]))
    for protocol in PROTOCOLS:
        on_raw, on_codes = make_split(raw, protocol), make_split(encoded, protocol)
        for raw_part, code_part in zip(on_raw.parts().values(), on_codes.parts().values()):
            decoded = set(zip(users.inverse_transform(code_part["user_id"]).tolist(),
                              items.inverse_transform(code_part["item_id"]).tolist()))
            assert decoded == pairs(raw_part)


def random_frame(n: int = 500) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return frame_from(list(zip(rng.integers(0, 50, n), rng.integers(0, 40, n),
                               rng.integers(0, 100, n))))


def test_random_split_is_deterministic_per_seed():
    frame = random_frame()
    a, b, c = (random_split(frame, seed=s) for s in (3, 3, 4))
    for part_a, part_b in zip(a.parts().values(), b.parts().values()):
        pd.testing.assert_frame_equal(part_a, part_b)
    assert a.fingerprint() == b.fingerprint()
    assert pairs(a.test) != pairs(c.test)
    assert a.fingerprint() != c.fingerprint()


# --------------------------------------------------------------------------- leakage report

def hand_built_parts():
    train = frame_from([(1, 10, 1), (1, 11, 2), (2, 10, 3), (2, 12, 9)])
    val = frame_from([(1, 12, 5), (2, 11, 4), (3, 10, 6), (1, 19, 7)])
    test = frame_from([(1, 19, 8), (4, 10, 3), (2, 10, 10), (4, 20, 11)])
    return train, val, test


def test_report_fields_on_hand_built_example():
    report = leakage_report(*hand_built_parts(), protocol="hand", temporal_scope="per_user")
    expected = dict(
        protocol="hand", temporal_scope="per_user",
        train_size=4, val_size=4, test_size=4,
        train_users=2, val_users=3, test_users=3, train_items=3, val_items=4, test_items=3,
        overlap_train_val=0, overlap_train_test=1, overlap_val_test=1, duplicate_pairs=0,
        # user 2: train event at 9 is later than its val event at 4.
        temporal_violations=1,
        val_unseen_user_events=1, val_unseen_user_share=0.25, val_unseen_users=1,
        val_unseen_item_events=1, val_unseen_item_share=0.25, val_unseen_items=1,
        # user 4 is new (2 events); items 19 and 20 are new.
        test_unseen_user_events=2, test_unseen_user_share=0.5, test_unseen_users=1,
        test_unseen_item_events=2, test_unseen_item_share=0.5, test_unseen_items=2)
    assert dataclasses.asdict(report) == expected
    assert not report.ok
    assert report.to_dict() == {**expected, "ok": False}


def test_report_temporal_scopes():
    parts = hand_built_parts()
    # Globally: train 9 > earliest later event 3, and val 4, 5, 6, 7 > earliest test 3.
    assert leakage_report(*parts, temporal_scope="global").temporal_violations == 5
    assert leakage_report(*parts, temporal_scope="none").temporal_violations == 0
    with pytest.raises(ValueError, match="temporal_scope"):
        leakage_report(*parts, temporal_scope="weekly")


def test_report_format_is_a_readable_table():
    text = leakage_report(*hand_built_parts(), protocol="hand", temporal_scope="global").format()
    lines = text.splitlines()
    assert lines[0] == "Leakage report (hand): LEAKAGE"
    assert lines[1].split()[:4] == ["part", "events", "users", "items"]
    assert lines[4].split()[:5] == ["test", "4", "3", "3", "2"]
    assert "train-test 1" in text and "val-test 1" in text
    assert "5 violation(s)" in text
    assert "50.0% of test events come from users unseen in train" in text


def test_report_detects_leakage_that_construction_would_hide():
    split = leave_one_out_split(random_frame())
    assert split.report.ok
    leaked = pd.concat([split.train, split.test.iloc[:3]], ignore_index=True)
    report = leakage_report(leaked, split.val, split.test, temporal_scope="per_user")
    assert report.overlap_train_test == 3 and not report.ok
    moved = pd.concat([split.train, split.val.iloc[:2]], ignore_index=True)
    report = leakage_report(moved, split.val.iloc[2:], split.test, temporal_scope="per_user")
    assert report.overlap_train_val == 0 and report.temporal_violations == 0 and report.ok


def test_global_temporal_report_shows_cold_start_users():
    # Users 0-9 are active early; users 10-19 only appear late, i.e. in test.
    early = [(u, i, u * 10 + i) for u in range(10) for i in range(8)]
    late = [(u, i, 1000 + u * 10 + i) for u in range(10, 20) for i in range(1)]
    split = global_temporal_split(frame_from(early + late), val_fraction=0.0,
                                  test_fraction=10 / 90)
    assert split.report.ok
    assert split.report.test_unseen_users == 10
    assert split.report.test_unseen_user_share == 1.0
    assert "100.0% of test events come from users unseen in train" in split.report.format()


# --------------------------------------------------------------------------- persistence

def test_fingerprint_stable_across_save_load_and_distinct_across_splits(tmp_path):
    frame = random_frame()
    splits = {p: make_split(frame, p) for p in PROTOCOLS}
    splits["user_temporal_k1"] = make_split(frame, "user_temporal", holdout_k=1)
    splits["random_seed1"] = make_split(frame, "random", seed=1)
    fingerprints = {name: s.fingerprint() for name, s in splits.items()}
    assert len(set(fingerprints.values())) == len(fingerprints)
    # Same parts as leave_one_out, but another protocol: still a different fingerprint.
    assert ([pairs(p) for p in splits["user_temporal_k1"].parts().values()]
            == [pairs(p) for p in splits["leave_one_out"].parts().values()])
    for name, split in splits.items():
        split.save(tmp_path / name)
        loaded = Split.load(tmp_path / name)
        assert loaded.fingerprint() == fingerprints[name]
        assert loaded.protocol == split.protocol and loaded.params == split.params
        assert loaded.report == split.report
        for a, b in zip(split.parts().values(), loaded.parts().values()):
            pd.testing.assert_frame_equal(a, b)
    shuffled = dataclasses.replace(splits["random"],
                                   train=splits["random"].train.sample(frac=1, random_state=0))
    assert shuffled.fingerprint() == fingerprints["random"]


def test_save_load_keeps_dtypes_and_string_ids(tmp_path):
    frame = random_frame(200)
    frame = frame.assign(user_id="user-" + frame["user_id"].astype(str),
                         item_id=frame["item_id"].astype(np.int32),
                         timestamp=pd.to_datetime(frame["timestamp"], unit="s"))
    split = make_split(frame, "global_temporal")
    assert split.report.ok
    split.save(tmp_path)
    loaded = Split.load(tmp_path)
    for a, b in zip(split.parts().values(), loaded.parts().values()):
        pd.testing.assert_frame_equal(a, b)
    assert loaded.fingerprint() == split.fingerprint()
    assert (tmp_path / "leakage_report.txt").read_text().startswith("Leakage report")


def test_load_refuses_edited_or_missing_files(tmp_path):
    make_split(random_frame(), "random").save(tmp_path)
    path = tmp_path / "split.npz"
    with np.load(path) as archive:
        arrays = dict(archive)
    arrays["train_0"] = arrays["train_0"].copy()
    arrays["train_0"][0] += 1000
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(DataError, match="fingerprint"):
        Split.load(tmp_path)
    path.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="split.npz"):
        Split.load(tmp_path)
    with pytest.raises(DataError, match="missing"):
        Split.load(tmp_path / "nowhere")


def test_save_refuses_columns_that_need_pickles(tmp_path):
    frame = random_frame(50).assign(genres=[("Drama",)] * 50)
    with pytest.raises(TypeError, match="genres"):
        make_split(frame, "random").save(tmp_path)


# --------------------------------------------------------------------------- argument errors

def test_make_split_argument_errors():
    frame = random_frame(50)
    with pytest.raises(ValueError, match="unknown split protocol"):
        make_split(frame, "temporal")
    with pytest.raises(ValueError, match="holdout_k applies only"):
        make_split(frame, "random", holdout_k=2)
    with pytest.raises(ValueError, match="holdout_k must be a positive"):
        make_split(frame, "user_temporal", holdout_k=0)
    with pytest.raises(ValueError, match="< 1"):
        make_split(frame, "random", val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="test_fraction"):
        make_split(frame, "global_temporal", test_fraction=-0.1)
    with pytest.raises(DataError, match="empty"):
        make_split(frame.iloc[:0], "leave_one_out")
    with pytest.raises(DataError, match="timestamp"):
        make_split(frame.drop(columns="timestamp"), "user_temporal")
    assert make_split(frame.drop(columns="timestamp"), "random").report.ok


def test_report_is_a_frozen_dataclass():
    assert dataclasses.is_dataclass(LeakageReport)
    report = make_split(random_frame(50), "random").report
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.train_size = 0
