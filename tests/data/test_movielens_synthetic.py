"""Tests for recsys_jax.data.movielens_synthetic: MovieLens-format files drawn offline."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from recsys_jax.data.movielens import CSV_GENRES, read_movielens_csv
from recsys_jax.data.movielens_synthetic import (
    ML20M_SHAPE,
    generate_movielens_csv_dataset,
    write_movielens_csv,
)

# Users and movie ids far beyond 32 bits, so an int32 anywhere on the way would show.
LARGE_IDS = {"first_user_id": 3_000_000_000, "max_movie_id": 2 ** 40}


@pytest.fixture(scope="module")
def generated():
    return generate_movielens_csv_dataset(300, 400, 6_000, seed=3, **LARGE_IDS)


def test_ml20m_shape_is_the_published_one():
    assert ML20M_SHAPE == {"num_users": 138_493, "num_items": 26_744,
                           "num_interactions": 20_000_263}


def test_generated_set_follows_movielens_conventions(generated):
    inter, items = generated.interactions, generated.items
    assert len(inter) == 6_000 and len(items) == 400 and generated.users is None
    assert [str(t) for t in inter.dtypes] == ["int64", "int64", "float32", "int64"]
    # ratings.csv order: by user, then movie.
    keys = inter[["user_id", "item_id"]].to_numpy()
    assert (np.lexsort(keys.T[::-1]) == np.arange(len(keys))).all()
    assert inter["user_id"].min() == LARGE_IDS["first_user_id"]
    assert items["item_id"].max() > 2 ** 32 and items["item_id"].is_monotonic_increasing
    assert set(np.unique(inter["rating"] * 2)) <= set(range(1, 11))  # half stars
    assert (inter["rating"] % 1 == 0.5).any()
    assert generated.genre_names == CSV_GENRES
    assert any(g == () for g in items["genres"]) and max(map(len, items["genres"])) <= 3
    assert items["title"].str.contains(",").any() and items["title"].str.contains('"').any()
    # Runs of equal timestamps within a user (about tie_share of the events repeat one).
    ties = inter.duplicated(["user_id", "timestamp"]).mean()
    assert 0.2 < ties < 0.4, ties
    assert inter["timestamp"].between(789_652_009, 1_427_784_002).all()
    assert inter.groupby("user_id").size().min() >= 6_000 // 300


def test_same_seed_same_data_other_seed_other_data(generated):
    again = generate_movielens_csv_dataset(300, 400, 6_000, seed=3, **LARGE_IDS)
    pd.testing.assert_frame_equal(again.interactions, generated.interactions)
    pd.testing.assert_frame_equal(again.items, generated.items)
    other = generate_movielens_csv_dataset(300, 400, 6_000, seed=4, **LARGE_IDS)
    assert not other.interactions.equals(generated.interactions)


def test_files_are_in_the_grouplens_layout(generated, tmp_path):
    directory = write_movielens_csv(generated, tmp_path / "ml-20m")
    lines = (directory / "ratings.csv").read_text().splitlines()
    assert lines[0] == "userId,movieId,rating,timestamp" and len(lines) == 6_001
    first = generated.interactions.iloc[0]
    assert lines[1] == (f"{int(first.user_id)},{int(first.item_id)},{first.rating:.1f},"
                        f"{int(first.timestamp)}")
    movies = (directory / "movies.csv").read_text(encoding="utf-8")
    assert movies.startswith("movieId,title,genres\n")
    rows = list(csv.reader(movies.splitlines()))[1:]
    assert len(rows) == 400
    assert "(no genres listed)" in {genres for _, _, genres in rows}
    for _, _, genres in rows:  # alphabetical, as in the GroupLens files
        assert genres == "(no genres listed)" or genres.split("|") == sorted(genres.split("|"))
    assert any(line.count('""') for line in movies.splitlines())  # quotes doubled


def test_written_files_parse_back_to_the_generated_set(generated, tmp_path):
    directory = write_movielens_csv(generated, tmp_path / "ml-20m")
    parsed = read_movielens_csv(directory, "ml-20m")
    pd.testing.assert_frame_equal(parsed.interactions, generated.interactions)
    pd.testing.assert_frame_equal(parsed.items, generated.items)
    assert parsed.genre_names == generated.genre_names


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="tie_share"):
        generate_movielens_csv_dataset(10, 10, 100, tie_share=1.0)
    with pytest.raises(ValueError, match="max_movie_id"):
        generate_movielens_csv_dataset(10, 10, 100, max_movie_id=5)
