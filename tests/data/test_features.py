"""Two-tower features: hand-checked values, and no held-out event can change a feature."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from recsys_jax.data import ids, splits, synthetic
from recsys_jax.data.features import (
    Standardizer,
    TwoTowerFeatures,
    activity_features,
    build_causal_user_inputs,
    build_two_tower_features,
    causal_activity_features,
    causal_histories,
    causal_user_features,
    demographic_features,
    item_activity_features,
    item_content_features,
    user_histories,
    user_history_features,
)

GENRES = ("Action", "Drama")
ITEM_GENRES = np.array([[1, 0], [0, 1], [1, 1]], bool)


def test_user_history_features_by_hand():
    users = np.array([0, 0, 0, 1])
    items = np.array([0, 1, 2, 1])
    ratings = np.array([5.0, 3.0, 4.0, 2.0])
    f = user_history_features(users, items, ratings, num_users=3, item_genres=ITEM_GENRES,
                              genre_names=GENRES)
    col = {n: f.values[:, j] for j, n in enumerate(f.names)}
    np.testing.assert_allclose(col["log_count"], np.log1p([3, 1, 0]), rtol=1e-6)
    np.testing.assert_allclose(col["rating_mean"], [4.0, 2.0, 3.5], rtol=1e-6)  # 3.5: global
    np.testing.assert_allclose(col["rating_std"], [np.std([5, 3, 4]), 0, 0], rtol=1e-6)
    np.testing.assert_allclose(col["share_Action"], [2 / 3, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(col["share_Drama"], [2 / 3, 1, 0], rtol=1e-6)
    np.testing.assert_allclose(col["mean_rating_Action"], [4.5, 2.0, 3.5], rtol=1e-6)
    np.testing.assert_allclose(col["mean_rating_Drama"], [3.5, 2.0, 3.5], rtol=1e-6)


def test_demographics_one_hot_and_missing_users():
    table = pd.DataFrame({"user_id": [0, 2], "age": [20, 40], "gender": ["M", "F"],
                          "occupation": ["writer", "artist"], "zip": ["1", "2"]})
    f = demographic_features(table, 3)
    assert f.names == ("age", "gender_F", "gender_M", "occupation_artist", "occupation_writer")
    np.testing.assert_array_equal(f.values, [[20, 0, 1, 0, 1], [30, 0, 0, 0, 0],
                                             [40, 1, 0, 1, 0]])
    assert demographic_features(None, 4).values.shape == (4, 0)


def test_item_content_features():
    items = pd.DataFrame({"item_id": [0, 1], "title": ["a", "b"],
                          "year": pd.array([1990, None], dtype="Int64"),
                          "genres": [("Action",), ("Action", "Drama")]})
    f = item_content_features(items, GENRES, np.ones((2, 3), np.float32))
    assert f.names[:3] == ("title_0", "title_1", "title_2")
    np.testing.assert_array_equal(f.values[:, 3:], [[1, 0, 1990, 0], [1, 1, 1990, 1]])
    with pytest.raises(ValueError, match="title embeddings"):
        item_content_features(items, GENRES, np.ones((3, 3), np.float32))


def test_activity_features_by_hand():
    day = 86400
    f = activity_features(np.array([0, 0, 2]), np.array([1 * day, 3 * day, 5 * day]),
                          num_rows=3, prefix="user")
    np.testing.assert_allclose(f.values, [[1, 2, 3], [3, 3, 3], [5, 5, 5]])  # row 1: mean day
    g = item_activity_features(np.array([1, 1]), np.array([0, 2 * day]), 2)
    assert g.names[0] == "item_log_count"
    np.testing.assert_allclose(g.values, [[0, 1, 1, 1], [np.log(3), 0, 1, 2]], rtol=1e-6)


def test_user_histories_newest_first_and_capped():
    ids_, mask = user_histories(np.array([0, 0, 0, 1]), np.array([5, 6, 7, 8]),
                                np.array([10, 30, 20, 5]), num_users=3, max_len=2)
    np.testing.assert_array_equal(ids_, [[6, 7], [8, 0], [0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1], [1, 0], [0, 0]])


def test_standardizer_fits_on_given_rows_only():
    x = np.array([[0.0, 1.0], [2.0, 1.0], [100.0, 1.0]])
    s = Standardizer.fit(x, rows=np.array([0, 1]))
    np.testing.assert_allclose(s(x)[:2], [[-1, 0], [1, 0]])
    assert s.std[1] == 1.0  # Constant column.


@pytest.fixture(scope="module")
def encoded_split():
    ds, _ = ids.encode_dataset(synthetic.generate_synthetic(40, 30, 800, seed=3))
    return ds, splits.make_split(ds.interactions, "leave_one_out")


def _features(ds, train, history_len=4, activity=False):
    return build_two_tower_features(train, users=ds.users, items=ds.items,
                                    genre_names=ds.genre_names, num_users=ds.num_users,
                                    history_len=history_len, activity=activity)


def test_held_out_events_never_change_features(encoded_split, monkeypatch):
    ds, split = encoded_split
    base = _features(ds, split.train)
    # The case is sensitive: the same builder fed train + test gives other user rows.
    leaky = _features(ds, pd.concat([split.train, split.test]))
    assert not np.allclose(base.user, leaky.user)
    assert not np.array_equal(base.history_ids, leaky.history_ids)

    # Through the experiment pipeline: flip the rating of held-out events in the raw data. The
    # split is unchanged (it depends on time, not ratings), so any feature that read a flipped
    # rating would move. Test events may reach no feature; validation events reach only the
    # inputs test users are encoded from (features.test_user_events = "train+val").
    from recsys_jax.tasks import data as task_data
    from recsys_jax.tasks import retrieval as rx
    from tests.retrieval.tiny_config import tiny_two_tower_config
    config = tiny_two_tower_config()

    def flipped(part, delay=0):
        # Ratings flipped; test events may also move later in time (they stay each user's last).
        keys = part[["user_id", "item_id"]].assign(flip=True)
        out = ds.interactions.merge(keys, how="left", on=["user_id", "item_id"])
        flip = out.pop("flip").notna().to_numpy()
        out["rating"] = np.where(flip, 6.0 - out["rating"], out["rating"]).astype(np.float32)
        out["timestamp"] = np.where(flip, out["timestamp"] + delay, out["timestamp"])
        return out

    def prepared(interactions):
        monkeypatch.setattr(task_data, "load_dataset",
                            lambda _c: dataclasses.replace(ds, interactions=interactions))
        return rx.prepare_retrieval_data(config)

    reference = prepared(ds.interactions)
    base = _features(ds, split.train, activity=True)
    np.testing.assert_array_equal(reference.features.user, base.user)
    for part, delay, test_inputs_move in ((split.test, 30 * 86400, False), (split.val, 0, True)):
        got = prepared(flipped(part, delay))
        assert got.split.fingerprint() == split.fingerprint()
        np.testing.assert_array_equal(got.features.user, base.user)
        np.testing.assert_array_equal(got.features.history_ids, base.history_ids)
        np.testing.assert_array_equal(got.features.item, base.item)
        for column in ("user", "item", "event"):  # Causal pairs: pointers and their tables.
            np.testing.assert_array_equal(got.train[column], reference.train[column])
        for name, table in reference.train_tables.items():
            np.testing.assert_array_equal(got.train_tables[name], table, err_msg=name)
        assert np.array_equal(got.test_features.user,
                              reference.test_features.user) != test_inputs_move
    # And the flip is visible to a leaky builder.
    leaky_flipped = _features(ds, pd.concat([split.train, flipped(split.test).merge(
        split.test[["user_id", "item_id"]])]))
    assert not np.allclose(leaky_flipped.user, leaky.user)
    leaky_late = _features(ds, pd.concat([split.train, flipped(split.test, 30 * 86400).merge(
        split.test[["user_id", "item_id"]])]), activity=True)
    assert not np.allclose(leaky_late.item, _features(ds, pd.concat(
        [split.train, split.test]), activity=True).item)


def test_features_save_load_round_trip(encoded_split, tmp_path):
    ds, split = encoded_split
    f = _features(ds, split.train)
    f.save(tmp_path / "features.npz")
    g = TwoTowerFeatures.load(tmp_path / "features.npz")
    np.testing.assert_array_equal(f.user, g.user)
    np.testing.assert_array_equal(f.user_scaler.mean, g.user_scaler.mean)
    assert f.item_names == g.item_names
    np.testing.assert_array_equal(f.history_mask, g.history_mask)


def _earlier_events(users, items, timestamps, row):
    """Indices of the events of ``row``'s user that come before it in (time, item) order."""
    same = users == users[row]
    earlier = (timestamps < timestamps[row]) | ((timestamps == timestamps[row])
                                                & (items < items[row]))
    return np.flatnonzero(same & earlier)


@pytest.fixture(scope="module")
def event_log():
    """Events in scrambled order, with ties in time and items seen twice by a user (but no
    (user, item, time) twice)."""
    rng = np.random.default_rng(0)
    users, items, days = np.unravel_index(rng.choice(4 * 3 * 6, 40, replace=False), (4, 3, 6))
    ratings = rng.integers(1, 6, 40).astype(np.float64)
    return users, items, days * 86400, ratings


def test_causal_user_features_equal_statistics_of_earlier_events(event_log):
    users, items, timestamps, ratings = event_log
    got = causal_user_features(users, items, ratings, timestamps, item_genres=ITEM_GENRES,
                               genre_names=GENRES)
    assert got.names == user_history_features(users, items, ratings, num_users=4,
                                              item_genres=ITEM_GENRES,
                                              genre_names=GENRES).names
    for row in range(len(users)):
        before = _earlier_events(users, items, timestamps, row)
        # Independent computation: the per-user builder on the earlier events alone, whose
        # empty-history fill is the global mean of *all* events.
        expected = user_history_features(
            np.concatenate([users[before], [9]]), np.concatenate([items[before], [0]]),
            np.concatenate([ratings[before], [0.0]]), num_users=10, item_genres=ITEM_GENRES,
            genre_names=GENRES).values[users[row]] if len(before) else None
        if expected is None:
            names = got.names
            np.testing.assert_allclose(got.values[row, names.index("rating_mean")],
                                       ratings.mean(), rtol=1e-6)
            assert got.values[row, names.index("log_count")] == 0
            continue
        np.testing.assert_allclose(got.values[row], expected, rtol=1e-5, atol=1e-6)


def test_causal_activity_features_equal_activity_of_earlier_events(event_log):
    users, items, timestamps, _ = event_log
    got = causal_activity_features(users, items, timestamps)
    assert got.names == ("user_first_day", "user_mean_day", "user_last_day")
    for row in range(len(users)):
        before = _earlier_events(users, items, timestamps, row)
        if len(before):
            expected = activity_features(users[before], timestamps[before], num_rows=4,
                                         prefix="user").values[users[row]]
        else:
            expected = np.full(3, timestamps.mean() / 86400.0)
        np.testing.assert_allclose(got.values[row], expected, rtol=1e-6)


def test_causal_histories_are_the_earlier_items_newest_first(event_log):
    users, items, timestamps, _ = event_log
    got_ids, got_mask = causal_histories(users, items, timestamps, max_len=3)
    for row in range(len(users)):
        before = _earlier_events(users, items, timestamps, row)
        ids_, mask = user_histories(users[before], items[before], timestamps[before],
                                    num_users=4, max_len=3)
        np.testing.assert_array_equal(got_ids[row], ids_[users[row]])
        np.testing.assert_array_equal(got_mask[row], mask[users[row]])
    # A user's inputs as of one event after their last equal the per-user histories.
    full_ids, _ = user_histories(users, items, timestamps, num_users=4, max_len=3)
    last = max(range(len(users)), key=lambda r: (users[r] == 0, timestamps[r], items[r]))
    np.testing.assert_array_equal(np.concatenate([[items[last]], got_ids[last, :2]]),
                                  full_ids[0])


def test_causal_inputs_share_columns_and_scaler_and_ignore_later_events(encoded_split):
    ds, split = encoded_split
    kwargs = dict(users=ds.users, items=ds.items, genre_names=ds.genre_names,
                  num_users=ds.num_users, activity=True)
    features = _features(ds, split.train, activity=True)
    inputs = build_causal_user_inputs(split.train, features, **kwargs)
    assert inputs.user.shape == (len(split.train), features.user.shape[1])
    assert inputs.history_ids.shape == (len(split.train), 4)
    # The first event of every user has an empty history and population-level statistics.
    first = split.train.sort_values(["timestamp", "item_id"]).groupby("user_id").head(1).index
    assert not inputs.history_mask[first].any()
    # Causality: dropping each user's latest training event changes no other row.
    latest = split.train.sort_values(["timestamp", "item_id"]).groupby("user_id").tail(1).index
    earlier = split.train.drop(index=latest)
    again = build_causal_user_inputs(earlier, features, **kwargs)
    keep = ~split.train.index.isin(latest)
    # (Rows with an empty history hold population means, which the dropped events move.)
    has_history = inputs.history_mask[keep, 0] > 0
    np.testing.assert_allclose(again.user[has_history], inputs.user[keep][has_history],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(again.history_ids, inputs.history_ids[keep])
    # Other settings than the features were built with are refused.
    with pytest.raises(ValueError, match="columns differ"):
        build_causal_user_inputs(split.train, features, **{**kwargs, "activity": False})
    subset = inputs.subset(np.arange(3))
    assert subset.user.shape[0] == subset.history_ids.shape[0] == 3
