"""CausalEventTables: the per-event layout and block sums by hand, save/load, column checks."""

import numpy as np
import pandas as pd
import pytest

from recsys_jax.data.causal_events import CausalEventTables, build_causal_event_tables
from recsys_jax.data.features import build_two_tower_features

GENRES = ("Action", "Drama")
ITEMS = pd.DataFrame({"item_id": [0, 1, 2], "title": ["a", "b", "c"], "year": [1990] * 3,
                      "genres": [("Action",), ("Drama",), ("Action", "Drama")]})
# User 0: five events, user 1: two, user 2: none; rows scrambled, user 0's last two tie in time.
TRAIN = pd.DataFrame({"user_id": [1, 0, 0, 0, 1, 0, 0], "item_id": [2, 1, 0, 2, 1, 1, 0],
                      "rating": [4.0, 3.0, 5.0, 4.0, 5.0, 2.0, 1.0],
                      "timestamp": [10, 20, 10, 30, 20, 40, 40]})


def _tables(block=2, activity=False, history_len=2):
    features = build_two_tower_features(TRAIN, users=None, items=ITEMS, genre_names=GENRES,
                                        num_users=3, history_len=history_len, activity=activity)
    return build_causal_event_tables(TRAIN, features, users=None, items=ITEMS,
                                     genre_names=GENRES, num_users=3, activity=activity,
                                     block=block)


def test_layout_and_block_sums_by_hand():
    tables, position = _tables(block=2)
    # Sorted by (user, time, item id): user 0 rates items 0 (5), 1 (3), 2 (4), then at the
    # same time 0 (1) and 1 (2); user 1 rates 2 (4), 1 (5).
    np.testing.assert_array_equal(tables.event_item, [0, 1, 2, 0, 1, 2, 1])
    np.testing.assert_array_equal(tables.event_rating, [5, 3, 4, 1, 2, 4, 5])
    np.testing.assert_array_equal(position, [5, 1, 0, 2, 6, 4, 3])
    np.testing.assert_array_equal(tables.user_start, [0, 5, 7])
    # User 0: ceil(5 / 2) = 3 blocks, user 1: 1, user 2: none.
    np.testing.assert_array_equal(tables.user_block, [0, 3, 4])
    # Sums of the user's events before each block (Action, Drama).
    np.testing.assert_array_equal(tables.block_genre_count, [[0, 0], [1, 1], [3, 2], [0, 0]])
    np.testing.assert_array_equal(tables.block_genre_total, [[0, 0], [5, 3], [10, 7], [0, 0]])
    # Mean and std of the earlier ratings; the global mean (24 / 7) before a user's first.
    mean, std = tables.event_stats[:, 0], tables.event_stats[:, 1]
    np.testing.assert_allclose(mean, [24 / 7, 5, 4, 4, 13 / 4, 24 / 7, 4], rtol=1e-6)
    np.testing.assert_allclose(std[3], np.std([5, 3, 4]), rtol=1e-6)
    assert std[0] == std[5] == 0
    assert tables.history_len == 2 and tables.block == 2 and tables.user_static.shape == (3, 0)


def test_save_load_round_trip(tmp_path):
    tables, _ = _tables(block=3, activity=True)
    assert tables.event_stats.shape == (7, 5)
    tables.save(tmp_path / "causal_events.npz")
    again = CausalEventTables.load(tmp_path / "causal_events.npz")
    for name, array in tables.arrays().items():
        np.testing.assert_array_equal(getattr(again, name), array, err_msg=name)
    assert (again.history_len, again.block, again.activity) == (2, 3, True)


def test_columns_must_match_the_features():
    features = build_two_tower_features(TRAIN, users=None, items=ITEMS, genre_names=GENRES,
                                        num_users=3, history_len=2, activity=True)
    with pytest.raises(ValueError, match="columns differ"):
        build_causal_event_tables(TRAIN, features, users=None, items=ITEMS, genre_names=GENRES,
                                  num_users=3, activity=False)
    with pytest.raises(ValueError, match="block"):
        _tables(block=0)
