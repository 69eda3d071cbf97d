"""Synthetic data sets in MovieLens's CSV format (ML-20M, ML-25M, ML-latest-small), offline.

GroupLens cannot always be reached (CI, air-gapped machines), yet the CSV loader and its binary
cache have to be tested and timed at the real scale. :func:`generate_movielens_csv_dataset` draws
a data set with :mod:`recsys_jax.data.synthetic` (popularity skew, per-user activity windows,
genres learnable from the ratings) and dresses it in MovieLens's conventions; then
:func:`write_movielens_csv` writes any such :class:`Dataset` as ``ratings.csv`` and
``movies.csv`` exactly as GroupLens lays them out:

* ``ratings.csv``: header ``userId,movieId,rating,timestamp``; ratings in half stars written
  with one decimal (``4.0``, ``0.5``); Unix seconds; rows ordered by user, then movie.
* ``movies.csv``: header ``movieId,title,genres``; genres ``|``-separated in alphabetical order
  (``(no genres listed)`` for none); titles quoted only where needed (commas, quotes), with
  embedded quotes doubled, UTF-8.

The MovieLens conventions added to the synthetic draw:

* user ids ``first_user_id ..`` (1-based, as in MovieLens); movie ids a sorted random sample of
  ``1 .. max_movie_id`` (sparse, as MovieLens's are: ML-20M's reach 131,262);
* the 19 genres of the README (:data:`~recsys_jax.data.movielens.CSV_GENRES`), and about 1% of
  the movies with none;
* titles in MovieLens's styles, e.g. ``"Synthetic Item 7, The (1994)"`` (a comma, so quoted),
  ``Synthetic "Quoted" Item 11 (1994)``, ``Misérables Item 13 (1994)``;
* timestamps over ML-20M's period (1995-01-09 to 2015-03-31), and runs of equal timestamps
  within a user (a share ``tie_share`` of events copy the time of the user's previous event,
  as when MovieLens users rate a page of films at once).

:data:`ML20M_SHAPE` holds ML-20M's counts (138,493 users, 26,744 movies, 20,000,263 ratings).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_jax.data.dataset import Dataset
from recsys_jax.data.movielens import CSV_GENRES, CSV_NO_GENRES
from recsys_jax.data.synthetic import generate_synthetic

ML20M_SHAPE = {"num_users": 138_493, "num_items": 26_744, "num_interactions": 20_000_263}
# ML-20M's largest movie id over its movie count: how sparse the ids are.
_ML20M_ID_SPREAD = 131_262 / 26_744
_ML20M_START = 789_652_009  # 1995-01-09, the first ML-20M rating
_ML20M_END = 1_427_784_002  # 2015-03-31, the last
_MIN_RATINGS_PER_USER = 20  # every ML-20M user rated at least 20 movies
_NO_GENRE_SHARE = 0.01
# Rows per chunk when writing ratings.csv: bounds the memory of the formatted text.
_WRITE_CHUNK_ROWS = 1 << 21


def generate_movielens_csv_dataset(num_users: int, num_items: int, num_interactions: int, *,
                                   seed: int = 0, tie_share: float = 0.3,
                                   first_user_id: int = 1, max_movie_id: int | None = None,
                                   name: str = "ml-20m") -> Dataset:
    """Draws a data set shaped like MovieLens's CSV releases (see the module docstring).

    Args:
      num_users: users, each with ``min(20, num_interactions // num_users)`` ratings or more.
      num_items: movies in the catalogue (the rarest may have no ratings).
      num_interactions: ratings.
      seed: random seed; the same arguments always give the same data set.
      tie_share: share of events (after a user's first) that take the timestamp of the
        user's previous event, making runs of equal timestamps.
      first_user_id: the smallest user id (MovieLens starts at 1).
      max_movie_id: movie ids are a sample of ``1 .. max_movie_id``; default as sparse as
        ML-20M's (about 4.9 times ``num_items``).
      name: the data set's name.

    Returns:
      A validated :class:`Dataset` (no user table), interactions ordered by user then movie,
      as ``ratings.csv`` is; rating scale (0.5, 5) in half stars.

    Raises:
      ValueError: for sizes or parameters out of range.
    """
    if not 0.0 <= tie_share < 1.0:
        raise ValueError(f"tie_share must be in [0, 1), got {tie_share}")
    if max_movie_id is None:
        max_movie_id = max(num_items, int(num_items * _ML20M_ID_SPREAD))
    if max_movie_id < num_items:
        raise ValueError(f"max_movie_id={max_movie_id} leaves no room for {num_items} movies")
    if first_user_id < 0:
        raise ValueError(f"first_user_id must be >= 0, got {first_user_id}")
    synthetic = generate_synthetic(
        num_users, num_items, num_interactions, seed=seed, num_genres=len(CSV_GENRES),
        rating_scale=(0.5, 5.0), rating_step=0.5, global_mean=3.5,
        min_interactions_per_user=min(_MIN_RATINGS_PER_USER, num_interactions // num_users),
        start_timestamp=_ML20M_START, end_timestamp=_ML20M_END, name=name)
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    movie_ids = np.sort(rng.choice(max_movie_id, num_items, replace=False)) + 1

    events = synthetic.interactions
    users = events["user_id"].to_numpy()
    timestamps = _with_ties(users, events["timestamp"].to_numpy(), tie_share, rng)
    # ratings.csv is ordered by user, then movie; movie ids grow with the synthetic item ids.
    order = np.lexsort((events["item_id"].to_numpy(), users))
    interactions = pd.DataFrame({
        "user_id": users[order] + np.int64(first_user_id),
        "item_id": movie_ids[events["item_id"].to_numpy()[order]],
        "rating": events["rating"].to_numpy()[order],
        "timestamp": timestamps[order],
    })
    items = _movie_table(synthetic.items, movie_ids, rng)
    return Dataset(name, interactions, items, None, CSV_GENRES, (0.5, 5.0),
                   source=f"movielens_synthetic({synthetic.source}, tie_share={tie_share})"
                   ).validate()


def write_movielens_csv(dataset: Dataset, directory: str | os.PathLike) -> Path:
    """Writes ``dataset`` as MovieLens's ``ratings.csv`` and ``movies.csv`` in ``directory``.

    Ratings are written in the interactions' order with one decimal (half stars print
    exactly); genres in alphabetical order. Returns ``directory``.

    Raises:
      ValueError: for a rating that one decimal cannot print exactly (not a multiple of 0.1).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write_ratings(dataset.interactions, directory / "ratings.csv")
    _write_movies(dataset.items, directory / "movies.csv")
    return directory


def _with_ties(users: np.ndarray, timestamps: np.ndarray, share: float,
               rng: np.random.Generator) -> np.ndarray:
    """``timestamps`` where about ``share`` of each user's events (in time order, after the
    first) repeat the time of the event before them."""
    order = np.lexsort((timestamps, users))
    tied = rng.random(users.size) < share
    tied[0] = False
    sorted_users = users[order]
    tied[1:] &= sorted_users[1:] == sorted_users[:-1]  # never across users
    # Each event takes the time of the last untied event at or before it (its run's start).
    source = np.maximum.accumulate(np.where(tied, 0, np.arange(users.size)))
    result = np.empty_like(timestamps)
    result[order] = timestamps[order][source]
    return result


def _movie_table(items: pd.DataFrame, movie_ids: np.ndarray,
                 rng: np.random.Generator) -> pd.DataFrame:
    """The synthetic catalogue with MovieLens ids, genre names and title styles."""
    years = items["year"].to_numpy(dtype=np.int64)
    names = {f"Genre {k + 1:02d}": genre for k, genre in enumerate(CSV_GENRES)}
    genres = [tuple(names[g] for g in combo) for combo in items["genres"]]
    for index in np.flatnonzero(rng.random(len(genres)) < _NO_GENRE_SHARE):
        genres[index] = ()
    titles = [_title(int(movie), int(year)) for movie, year in zip(movie_ids, years)]
    return pd.DataFrame({
        "item_id": movie_ids.astype(np.int64),
        "title": pd.Series(titles, dtype="str"),
        "year": pd.array(years, dtype="Int64"),
        "genres": pd.Series(genres, dtype=object),
    })


def _title(movie_id: int, year: int) -> str:
    """A title in one of MovieLens's styles, chosen by the id."""
    if movie_id % 7 == 0:
        return f"Synthetic Item {movie_id}, The ({year})"
    if movie_id % 11 == 0:
        return f'Synthetic "Quoted" Item {movie_id} ({year})'
    if movie_id % 13 == 0:
        return f"Misérables Item {movie_id} ({year})"
    return f"Synthetic Item {movie_id} ({year})"


def _write_ratings(interactions: pd.DataFrame, path: Path) -> None:
    ratings = interactions["rating"].to_numpy(dtype=np.float32)
    tenths = np.rint(ratings.astype(np.float64) * 10)
    if not np.array_equal((tenths / 10).astype(np.float32), ratings):
        raise ValueError("write_movielens_csv writes ratings with one decimal; some ratings "
                         "are not multiples of 0.1")
    # One decimal as text, e.g. 35 -> "3.5": formatting floats row by row would be slower.
    labels = {t: f"{t / 10:.1f}" for t in np.unique(tenths).tolist()}
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write("userId,movieId,rating,timestamp\n")
        for start in range(0, len(interactions), _WRITE_CHUNK_ROWS):
            chunk = slice(start, start + _WRITE_CHUNK_ROWS)
            frame = pd.DataFrame({
                "userId": interactions["user_id"].to_numpy()[chunk],
                "movieId": interactions["item_id"].to_numpy()[chunk],
                "rating": pd.Categorical.from_codes(
                    np.searchsorted(list(labels), tenths[chunk]),
                    categories=list(labels.values())),
                "timestamp": interactions["timestamp"].to_numpy()[chunk],
            })
            frame.to_csv(out, header=False, index=False, lineterminator="\n")


def _write_movies(items: pd.DataFrame, path: Path) -> None:
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")  # quotes only where needed, "" inside
        writer.writerow(("movieId", "title", "genres"))
        for movie, title, genres in zip(items["item_id"].tolist(), items["title"].tolist(),
                                        items["genres"].tolist()):
            writer.writerow((movie, title, "|".join(sorted(genres)) or CSV_NO_GENRES))
