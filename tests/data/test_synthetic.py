import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_jax.data import synthetic

USERS, ITEMS, EVENTS = 2_000, 20_000, 200_000


@pytest.fixture(scope="module")
def generated():
    return synthetic.generate_synthetic_with_truth(USERS, ITEMS, EVENTS, seed=0)


def _expected(dataset, truth):
    frame = dataset.interactions
    return truth.expected_ratings(frame["user_id"].to_numpy(), frame["item_id"].to_numpy())


def test_same_seed_same_data_other_seed_other_data(generated):
    dataset, truth = generated
    again, truth_again = synthetic.generate_synthetic_with_truth(USERS, ITEMS, EVENTS, seed=0)
    pd.testing.assert_frame_equal(dataset.interactions, again.interactions)
    pd.testing.assert_frame_equal(dataset.items, again.items)
    np.testing.assert_array_equal(truth.item_factors, truth_again.item_factors)
    other = synthetic.generate_synthetic(USERS, ITEMS, EVENTS, seed=1)
    assert not dataset.interactions["item_id"].equals(other.interactions["item_id"])
    assert not dataset.interactions["rating"].equals(other.interactions["rating"])
    assert not dataset.items["genres"].equals(other.items["genres"])


def test_generate_synthetic_matches_the_truth_variant(generated):
    dataset = synthetic.generate_synthetic(USERS, ITEMS, EVENTS, seed=0)
    pd.testing.assert_frame_equal(dataset.interactions, generated[0].interactions)


def test_components_have_their_own_random_streams(generated):
    # More events must not reshuffle the items: factors and catalogue depend on seed and sizes.
    _, truth = generated
    dataset, more = synthetic.generate_synthetic_with_truth(USERS, ITEMS, 2 * EVENTS, seed=0)
    np.testing.assert_array_equal(truth.item_factors, more.item_factors)
    np.testing.assert_array_equal(truth.item_popularity, more.item_popularity)
    np.testing.assert_array_equal(truth.user_factors, more.user_factors)


def test_follows_the_dataset_contract(generated):
    dataset, truth = generated
    assert dataset.validate() is dataset
    frame = dataset.interactions
    assert list(frame.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert [str(t) for t in frame.dtypes] == ["int64", "int64", "float32", "int64"]
    assert len(frame) == EVENTS
    assert dataset.num_users == USERS  # every user gets at least one event
    assert frame["user_id"].is_monotonic_increasing  # grouped by user, as ML-1M's file
    assert frame["item_id"].between(0, ITEMS - 1).all()
    items = dataset.items
    assert list(items.columns) == ["item_id", "title", "year", "genres"]
    np.testing.assert_array_equal(items["item_id"], np.arange(ITEMS))
    assert str(items["year"].dtype) == "Int64"
    assert list(dataset.users["user_id"]) == list(range(USERS))
    assert dataset.rating_scale == (1.0, 5.0)
    assert len(dataset.genre_names) == 18 and dataset.genre_names[0] == "Genre 01"
    assert truth.user_factors.shape == (USERS, 16) and truth.user_factors.dtype == np.float32
    assert truth.item_factors.shape == (ITEMS, 16) and truth.item_factors.dtype == np.float32


def test_titles_are_unique_and_carry_the_release_year(generated):
    items = generated[0].items
    assert items["title"].is_unique
    assert items["title"].iloc[123] == f"Synthetic Item 123 ({items['year'].iloc[123]})"
    # Released before the first possible rating (2000-01-01 by default).
    assert items["year"].max() <= 2000 and items["year"].min() >= 1900


def test_ratings_are_integers_within_the_scale(generated):
    ratings = generated[0].interactions["rating"].to_numpy()
    assert ratings.min() == 1 and ratings.max() == 5
    np.testing.assert_array_equal(ratings, np.round(ratings))
    # MovieLens-like: the middle of the scale dominates, mean near 3.5.
    assert 3.2 < ratings.mean() < 3.8
    assert np.bincount(ratings.astype(int)).argmax() in (3, 4)


def test_half_star_scale():
    dataset = synthetic.generate_synthetic(50, 100, 2_000, rating_scale=(0.5, 5.0),
                                           rating_step=0.5)
    ratings = dataset.interactions["rating"].to_numpy()
    assert ratings.min() >= 0.5 and ratings.max() <= 5.0
    np.testing.assert_array_equal(ratings * 2, np.round(ratings * 2))
    assert len(np.unique(ratings)) > 5


def test_item_popularity_is_heavy_tailed_with_the_requested_exponent(generated):
    dataset, truth = generated
    counts = np.sort(np.bincount(dataset.interactions["item_id"], minlength=ITEMS))[::-1]
    assert counts[:ITEMS // 100].sum() > 0.3 * EVENTS  # top 1% of items: over 30% of events
    # Mid ranks, where no user's draws saturate an item: log-log slope close to -exponent.
    ranks = np.arange(100, 2_000)
    slope = np.polyfit(np.log(ranks + 1), np.log(counts[ranks]), 1)[0]
    assert slope == pytest.approx(-1.0, abs=0.15)
    np.testing.assert_allclose(truth.item_popularity.sum(), 1.0)


def test_popularity_exponent_zero_is_flat():
    dataset = synthetic.generate_synthetic(USERS, ITEMS, EVENTS, popularity_exponent=0.0)
    counts = np.sort(np.bincount(dataset.interactions["item_id"], minlength=ITEMS))[::-1]
    assert counts[:ITEMS // 100].sum() < 0.03 * EVENTS


def test_ratings_follow_the_latent_scores(generated):
    dataset, truth = generated
    ratings = dataset.interactions["rating"].to_numpy()
    expected = _expected(dataset, truth)
    assert np.corrcoef(ratings, expected)[0, 1] > 0.8
    # And not only through the biases: the factor term alone carries signal.
    frame = dataset.interactions
    residual = ratings - truth.global_mean - truth.user_bias[frame["user_id"]] \
        - truth.item_bias[frame["item_id"]]
    interaction = expected - truth.global_mean - truth.user_bias[frame["user_id"]] \
        - truth.item_bias[frame["item_id"]]
    assert np.corrcoef(residual, interaction)[0, 1] > 0.5
    assert np.std(interaction) == pytest.approx(0.8, rel=0.1)


def test_more_noise_weakens_the_signal(generated):
    noisy, truth = synthetic.generate_synthetic_with_truth(USERS, ITEMS, EVENTS, noise_std=2.0)
    clean_corr = np.corrcoef(generated[0].interactions["rating"], _expected(*generated))[0, 1]
    noisy_corr = np.corrcoef(noisy.interactions["rating"], _expected(noisy, truth))[0, 1]
    assert noisy_corr < clean_corr - 0.2


def test_expected_ratings_keeps_the_shape(generated):
    truth = generated[1]
    users, items = np.array([[0, 1], [2, 3]]), np.array([[4, 5], [6, 7]])
    scores = truth.expected_ratings(users, items)
    assert scores.shape == (2, 2) and scores.dtype == np.float32
    manual = (truth.global_mean + truth.user_bias[2] + truth.item_bias[6]
              + truth.user_factors[2] @ truth.item_factors[6])
    assert scores[1, 0] == pytest.approx(manual, rel=1e-5)
    with pytest.raises(ValueError, match="shape"):
        truth.expected_ratings(users, items[0])


def test_genres_come_from_the_item_factors(generated):
    dataset, truth = generated
    names = np.array(dataset.genre_names)
    listed = [tuple(names[row]) for row in truth.item_genres[:500]]
    assert list(dataset.items["genres"].iloc[:500]) == listed  # canonical order, as the truth
    per_item = truth.item_genres.sum(axis=1)
    assert per_item.min() == 1 and per_item.max() == 3
    assert per_item.mean() == pytest.approx(1.7, abs=0.01)
    # Each item's closest genre direction is one of its genres ...
    closest = np.argmax(truth.item_factors @ truth.genre_directions.T, axis=1)
    assert truth.item_genres[np.arange(ITEMS), closest].all()
    # ... and each genre's items cluster around its direction.
    for genre, direction in enumerate(truth.genre_directions):
        centroid = truth.item_factors[truth.item_genres[:, genre]].mean(axis=0)
        assert centroid @ direction / np.linalg.norm(centroid) > 0.7


def test_repeated_pairs_are_redrawn_and_heavy_users_capped(generated):
    dataset, truth = generated
    frame = dataset.interactions
    assert truth.num_repeated_pairs == 0
    assert not frame.duplicated(["user_id", "item_id"]).any()
    assert frame["user_id"].value_counts().max() <= ITEMS // 2


def test_repeats_remain_only_when_the_catalogue_runs_out():
    # 3 users x 4 events over 2 items: two events per user must repeat a pair.
    dataset, truth = synthetic.generate_synthetic_with_truth(3, 2, 12, max_redraw_rounds=5)
    assert truth.num_repeated_pairs == 6
    assert dataset.interactions.duplicated(["user_id", "item_id"]).sum() == 6


def test_timestamps_cover_the_span_in_per_user_windows(generated):
    dataset, _ = generated
    start, end = 946_684_800, 1_041_379_200
    frame = dataset.interactions
    assert frame["timestamp"].min() >= start and frame["timestamp"].max() < end
    span = end - start
    assert frame["timestamp"].min() < start + 0.05 * span
    assert frame["timestamp"].max() > end - 0.05 * span
    per_user = frame.groupby("user_id")["timestamp"].agg(["min", "max"])
    # Users join throughout the period, so a temporal split meets new users in its test part.
    assert (per_user["min"] > end - 0.1 * span).mean() > 0.05
    # Activity windows are months, not the whole period.
    assert (per_user["max"] - per_user["min"]).median() < 0.3 * span


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_users=0), "num_users"),
    (dict(num_interactions=5), "cannot give"),
    (dict(genres_per_item=3.5), "genres_per_item"),
    (dict(rating_scale=(5, 1)), "rating_scale"),
    (dict(rating_step=0), "rating_step"),
    (dict(start_timestamp=10, end_timestamp=10), "end_timestamp"),
    (dict(popularity_exponent=-1), "exponent"),
])
def test_bad_arguments_are_rejected(kwargs, message):
    arguments = dict(num_users=10, num_items=20, num_interactions=100) | kwargs
    with pytest.raises(ValueError, match=message):
        synthetic.generate_synthetic(**arguments)


@settings(max_examples=25)
@given(num_users=st.integers(1, 30), num_items=st.integers(1, 40), extra=st.integers(0, 300),
       num_genres=st.integers(1, 6), minimum=st.integers(0, 3), seed=st.integers(0, 2**32))
def test_any_small_size_gives_a_valid_dataset(num_users, num_items, extra, num_genres, minimum,
                                              seed):
    num_interactions = max(1, num_users * minimum + extra)
    dataset, truth = synthetic.generate_synthetic_with_truth(
        num_users, num_items, num_interactions, seed=seed, num_genres=num_genres,
        genres_per_item=1.0, min_interactions_per_user=minimum)
    dataset.validate()
    frame = dataset.interactions
    assert len(frame) == num_interactions
    assert frame["user_id"].value_counts().reindex(range(num_users), fill_value=0).min() \
        >= minimum
    assert frame.duplicated(["user_id", "item_id"]).sum() == truth.num_repeated_pairs
    assert all(len(genres) == 1 for genres in dataset.items["genres"])


def test_small_sizes_are_fast():
    start = time.perf_counter()
    synthetic.generate_synthetic(943, 1_682, 100_000)
    assert time.perf_counter() - start < 3.0  # about 0.1 s unloaded; slack for a busy machine
