"""User sequences: time order, parts in order, encoder inputs and next-item training windows."""

import numpy as np
import pandas as pd
import pytest

from recsys_jax.data.sequences import user_sequences

PAD = 99


def _frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def test_events_in_time_order_and_validation_after_training():
    train = _frame([(0, 5, 30), (0, 3, 10), (0, 4, 20), (1, 1, 7), (2, 8, 1)])
    # User 0's validation event has the timestamp of a training event: it still comes last.
    val = _frame([(0, 9, 30), (1, 2, 8)])
    seqs = user_sequences([train], 4, 10)
    assert [seqs.of_user(u).tolist() for u in range(4)] == [[3, 4, 5], [1], [8], []]
    both = user_sequences([train, val], 4, 10)
    assert [both.of_user(u).tolist() for u in range(4)] == [[3, 4, 5, 9], [1, 2], [8], []]
    np.testing.assert_array_equal(both.lengths, [4, 2, 1, 0])


def test_equal_timestamps_follow_a_seeded_order_of_the_events_not_the_file():
    train = _frame([(0, i, 5) for i in range(12)])
    first = user_sequences([train], 1, 12, seed=3).items
    shuffled = user_sequences([train.sample(frac=1.0, random_state=1)], 1, 12, seed=3).items
    np.testing.assert_array_equal(first, shuffled)
    assert sorted(first.tolist()) == list(range(12))
    assert not np.array_equal(first, user_sequences([train], 1, 12, seed=4).items)
    np.testing.assert_array_equal(user_sequences([train], 1, 12, tie_order="item_id").items,
                                  np.arange(12))


def test_last_items_are_left_padded():
    seqs = user_sequences([_frame([(0, 1, 1), (0, 2, 2), (0, 3, 3), (1, 7, 1)])], 3, 10)
    np.testing.assert_array_equal(seqs.last(2, PAD), [[2, 3], [PAD, 7], [PAD, PAD]])


def test_last_windows_are_the_papers_sampler():
    seqs = user_sequences([_frame([(0, i, i) for i in (1, 2, 3, 4)] + [(1, 7, 1), (2, 5, 1),
                                                                       (2, 6, 2)])], 3, 10)
    users, rows = seqs.training_windows(2, PAD, "last")
    # User 1 has a single event: nothing to predict, no row.
    np.testing.assert_array_equal(users, [0, 2])
    np.testing.assert_array_equal(rows, [[2, 3, 4], [PAD, 5, 6]])


@pytest.mark.parametrize("length", [1, 2, 3, 5, 8])
def test_all_windows_make_every_later_event_a_target_once_after_its_predecessor(length):
    lengths = [1, 2, 5, 7, 8, 13]
    rng = np.random.default_rng(0)
    frame = _frame([(u, int(i), t) for u, n in enumerate(lengths)
                    for t, i in enumerate(rng.permutation(50)[:n])])
    seqs = user_sequences([frame], len(lengths), 50)
    users, rows = seqs.training_windows(length, PAD, "all")
    assert rows.shape[1] == length + 1
    inputs, targets = rows[:, :-1], rows[:, 1:]
    kept = inputs != PAD
    # (user, previous item, target) for every kept position: exactly each event but the first
    # of each user, preceded by the user's previous event.
    got = sorted(zip(np.repeat(users, length)[kept.ravel()], inputs[kept], targets[kept]))
    expected = sorted((u, int(s[k - 1]), int(s[k])) for u in range(len(lengths))
                      for s in [seqs.of_user(u)] for k in range(1, len(s)))
    assert got == expected
    assert not (targets[kept] == PAD).any()
