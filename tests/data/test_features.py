"""Two-tower features: hand-checked values, and no held-out event can change a feature."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from recsys_jax.data import ids, splits, synthetic
from recsys_jax.data.features import (Standardizer, TwoTowerFeatures, activity_features,
                                      build_two_tower_features, demographic_features,
                                      item_activity_features, item_content_features,
                                      user_histories, user_history_features)

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
    from tests.retrieval.tiny_config import tiny_two_tower_config
    from recsys_jax.training import retrieval_experiment as rx
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
        monkeypatch.setattr(rx, "load_dataset",
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
