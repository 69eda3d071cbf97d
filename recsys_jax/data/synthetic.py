"""Seeded synthetic ratings with known latent structure, fast enough for 10M events.

The model behind the data:

* **Ratings** come from a biased latent-factor model,
  ``r = mu + b_u + b_i + <p_u, q_i> + noise``, rounded to the rating step and clipped to
  the scale, so a matrix-factorisation model can recover the factors.
* **Item popularity** follows a Zipf-like law: the item of popularity rank ``k`` is drawn with
  probability proportional to ``k ** -popularity_exponent`` (ranks are shuffled over item ids).
  Items are drawn by inverse-CDF sampling (``searchsorted`` on the cumulative distribution).
* **User activity** follows the same kind of law with ``activity_exponent``, on top of a
  guaranteed minimum per user and capped at half the catalogue (or the mean events per user,
  if that is more); events are stored grouped by user (as MovieLens-1M's file is).
* **Repeats**: a user draws items without replacement in effect: draws that repeat one of the
  user's (user, item) pairs are redrawn for up to ``max_redraw_rounds`` rounds. Repeated pairs
  remain only where a user's draws come close to exhausting the catalogue's probability mass
  (e.g. a user with more events than there are items); their count is reported in
  ``SyntheticTruth.num_repeated_pairs`` and is normally 0 or a tiny fraction.
* **Timestamps**: each user joins at a uniform time in ``[start_timestamp, end_timestamp)`` and
  stays active for an exponential time (mean ``mean_activity_days``, cut at the end), with
  events uniform in that window. A global temporal split therefore sees new users in its test
  part, as on real data.
* **Genres** are directions in latent space: an item's genres are the (up to three) directions
  with the largest cosine to its factor vector; the first always counts, the second and third
  when their cosine clears a threshold chosen so items average ``genres_per_item`` genres.
  Genre structure is therefore learnable from ratings.
* **Titles** are unique, ``"Synthetic Item 123 (1994)"``, with a release year no later than the
  year of ``start_timestamp`` (every item is released before its first rating).

Not modelled: selection bias (users rating what they expect to like), drift of tastes over
time, item release dates inside the rating period, and user demographics.

User and item ids are ``0 .. num_users - 1`` and ``0 .. num_items - 1``, so they index the
arrays of :class:`SyntheticTruth` directly. Every random component draws from its own stream
spawned from ``seed``, so e.g. the item factors do not change with ``num_interactions``.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import numpy as np
import pandas as pd

from recsys_jax.data.dataset import Dataset

# Rows per chunk when gathering factor rows: bounds the temporary (chunk x dim) float32 copies.
_CHUNK_ROWS = 1 << 20
# Genres per item are capped as in MovieLens, where almost no film lists more than three.
_MAX_GENRES_PER_ITEM = 3
# Mean age of an item's release year at the start of the rating period (MovieLens-like).
_MEAN_RELEASE_AGE_YEARS = 12.0
_EARLIEST_YEAR = 1900
# No user rates more than this share of the catalogue (MovieLens' heaviest: about 44%).
_MAX_CATALOGUE_SHARE_PER_USER = 0.5
_SECONDS_PER_DAY = 86_400

# Independent random streams, one per component (the order here fixes the spawned seeds).
_STREAMS = ("item_popularity", "item_factors", "item_bias", "item_year", "genre_directions",
            "user_factors", "user_bias", "user_activity", "user_windows", "item_draws",
            "timestamps", "noise")


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticTruth:
    """The parameters the synthetic data was drawn from, indexed by user / item id.

    Attributes:
      user_factors: (num_users, dim) float32 latent vectors ``p_u``.
      item_factors: (num_items, dim) float32 latent vectors ``q_i``.
      user_bias: (num_users,) float32 ``b_u``.
      item_bias: (num_items,) float32 ``b_i``.
      global_mean: ``mu``.
      genre_directions: (num_genres, dim) float32 unit vectors, one per genre.
      item_genres: (num_items, num_genres) bool, the genres assigned to each item.
      item_popularity: (num_items,) float64 probability of drawing each item (sums to 1).
      user_activity: (num_users,) float64 share of the events beyond each user's minimum
        (before the per-user cap).
      num_repeated_pairs: events that repeat an earlier (user, item) pair after redrawing.
    """

    user_factors: np.ndarray
    item_factors: np.ndarray
    user_bias: np.ndarray
    item_bias: np.ndarray
    global_mean: float
    genre_directions: np.ndarray
    item_genres: np.ndarray
    item_popularity: np.ndarray
    user_activity: np.ndarray
    num_repeated_pairs: int

    def expected_ratings(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """Noise-free scores ``mu + b_u + b_i + <p_u, q_i>`` (before rounding and clipping).

        Args:
          user_ids: int array of user ids.
          item_ids: int array of item ids, same shape as ``user_ids``.

        Returns:
          float32 array of the same shape.
        """
        user_ids = np.asarray(user_ids)
        item_ids = np.asarray(item_ids)
        if user_ids.shape != item_ids.shape:
            raise ValueError(f"user_ids {user_ids.shape} and item_ids {item_ids.shape} differ "
                             "in shape")
        flat_users, flat_items = user_ids.ravel(), item_ids.ravel()
        scores = np.empty(flat_users.shape, dtype=np.float32)
        for start in range(0, flat_users.size, _CHUNK_ROWS):
            users = flat_users[start:start + _CHUNK_ROWS]
            items = flat_items[start:start + _CHUNK_ROWS]
            chunk = np.einsum("ij,ij->i", self.user_factors[users], self.item_factors[items])
            chunk += self.user_bias[users]
            chunk += self.item_bias[items]
            scores[start:start + _CHUNK_ROWS] = chunk
        scores += np.float32(self.global_mean)
        return scores.reshape(user_ids.shape)


def generate_synthetic(num_users: int, num_items: int, num_interactions: int, *,
                       seed: int = 0, **options: Any) -> Dataset:
    """Draws a synthetic ratings data set; see :func:`generate_synthetic_with_truth`.

    Args:
      num_users: users, each with at least ``min_interactions_per_user`` events.
      num_items: catalogue size (rarely drawn items may have no events).
      num_interactions: events to draw.
      seed: random seed; the same arguments always give the same data set.
      **options: any other keyword argument of :func:`generate_synthetic_with_truth`.
    """
    dataset, _ = generate_synthetic_with_truth(num_users, num_items, num_interactions,
                                               seed=seed, **options)
    return dataset


def generate_synthetic_with_truth(
        num_users: int,
        num_items: int,
        num_interactions: int,
        *,
        seed: int = 0,
        dim: int = 16,
        num_genres: int = 18,
        genres_per_item: float = 1.7,
        popularity_exponent: float = 1.0,
        activity_exponent: float = 0.5,
        min_interactions_per_user: int = 1,
        global_mean: float | None = None,
        interaction_std: float = 0.8,
        user_bias_std: float = 0.4,
        item_bias_std: float = 0.5,
        noise_std: float = 0.5,
        rating_scale: tuple[float, float] = (1.0, 5.0),
        rating_step: float = 1.0,
        start_timestamp: int = 946_684_800,  # 2000-01-01 UTC
        end_timestamp: int = 1_041_379_200,  # 2003-01-01 UTC
        mean_activity_days: float = 120.0,
        max_redraw_rounds: int = 100,
        name: str = "synthetic",
) -> tuple[Dataset, SyntheticTruth]:
    """Draws a synthetic ratings data set and returns it with the parameters behind it.

    The generative model is described in this module's docstring. All work is vectorised
    NumPy in float32 where precision allows; 10M events over 1M items take seconds.

    Args:
      num_users: users, each with at least ``min_interactions_per_user`` events.
      num_items: catalogue size (rarely drawn items may have no events).
      num_interactions: events to draw; at least ``num_users * min_interactions_per_user``.
      seed: random seed; the same arguments always give the same data.
      dim: latent dimension of the user and item factors.
      num_genres: genres, each a random unit direction in latent space.
      genres_per_item: average genres per item, between 1 and ``min(3, num_genres)``.
      popularity_exponent: Zipf exponent of item popularity (0 = uniform).
      activity_exponent: Zipf exponent of user activity (0 = uniform).
      min_interactions_per_user: events every user gets before the rest are shared out.
      global_mean: ``mu``; by default 5/8 of the way up the scale (3.5 on 1-5, as MovieLens).
      interaction_std: standard deviation of ``<p_u, q_i>`` (factor entries are scaled to it).
      user_bias_std: standard deviation of ``b_u``.
      item_bias_std: standard deviation of ``b_i``.
      noise_std: standard deviation of the Gaussian rating noise.
      rating_scale: (lowest, highest) rating; ratings are clipped to it.
      rating_step: ratings are rounded to ``lowest + k * rating_step`` (0.5 for half stars).
      start_timestamp: first possible event time, Unix seconds.
      end_timestamp: events are strictly before this time, Unix seconds.
      mean_activity_days: mean length of a user's active window.
      max_redraw_rounds: rounds of redrawing repeated (user, item) pairs.
      name: the data set's name.

    Returns:
      ``(dataset, truth)``: a validated :class:`Dataset` whose interactions are grouped by user
      (ids ``0..num_users-1``, items ``0..num_items-1``, a ``users`` table of ids only) and the
      :class:`SyntheticTruth` it was drawn from.

    Raises:
      ValueError: for sizes or parameters out of range.
    """
    _check_arguments(num_users, num_items, num_interactions, dim, num_genres, genres_per_item,
                     min_interactions_per_user, rating_scale, rating_step, start_timestamp,
                     end_timestamp, mean_activity_days, popularity_exponent, activity_exponent)
    low, high = float(rating_scale[0]), float(rating_scale[1])
    if global_mean is None:
        global_mean = low + 0.625 * (high - low)
    rngs = dict(zip(_STREAMS, (np.random.default_rng(s)
                               for s in np.random.SeedSequence(seed).spawn(len(_STREAMS)))))

    # Entries with std s give <p, q> a variance of dim * s**4.
    factor_std = np.float32((interaction_std ** 2 / dim) ** 0.25)
    item_factors = rngs["item_factors"].standard_normal((num_items, dim), dtype=np.float32)
    item_factors *= factor_std
    user_factors = rngs["user_factors"].standard_normal((num_users, dim), dtype=np.float32)
    user_factors *= factor_std
    item_bias = rngs["item_bias"].standard_normal(num_items, dtype=np.float32)
    item_bias *= np.float32(item_bias_std)
    user_bias = rngs["user_bias"].standard_normal(num_users, dtype=np.float32)
    user_bias *= np.float32(user_bias_std)

    genre_directions = rngs["genre_directions"].standard_normal((num_genres, dim),
                                                                dtype=np.float32)
    genre_directions /= np.linalg.norm(genre_directions, axis=1, keepdims=True)
    item_genres = _assign_genres(item_factors, genre_directions, genres_per_item)

    item_popularity = _zipf_weights(num_items, popularity_exponent, rngs["item_popularity"])
    user_activity = _zipf_weights(num_users, activity_exponent, rngs["user_activity"])

    per_user = _events_per_user(num_interactions, num_items, min_interactions_per_user,
                                user_activity, rngs["user_activity"])
    user_ids = np.repeat(np.arange(num_users, dtype=np.int64), per_user)
    item_ids, num_repeated = _draw_items(user_ids, item_popularity, rngs["item_draws"],
                                         max_redraw_rounds)

    truth = SyntheticTruth(
        user_factors=user_factors, item_factors=item_factors, user_bias=user_bias,
        item_bias=item_bias, global_mean=float(global_mean), genre_directions=genre_directions,
        item_genres=item_genres, item_popularity=item_popularity, user_activity=user_activity,
        num_repeated_pairs=num_repeated)

    ratings = truth.expected_ratings(user_ids, item_ids)
    ratings += np.float32(noise_std) * rngs["noise"].standard_normal(ratings.size,
                                                                      dtype=np.float32)
    # Round to the step on the scale's own grid (low, low + step, ...), then clip.
    ratings -= np.float32(low)
    ratings /= np.float32(rating_step)
    np.rint(ratings, out=ratings)
    ratings *= np.float32(rating_step)
    ratings += np.float32(low)
    np.clip(ratings, low, high, out=ratings)

    timestamps = _draw_timestamps(user_ids, num_users, start_timestamp, end_timestamp,
                                  mean_activity_days, rngs["user_windows"], rngs["timestamps"])

    genre_names = tuple(f"Genre {k + 1:0{len(str(num_genres))}d}" for k in range(num_genres))
    last_year = datetime.datetime.fromtimestamp(start_timestamp, datetime.UTC).year
    items = _item_table(item_genres, genre_names, last_year, rngs["item_year"])
    interactions = pd.DataFrame({
        "user_id": user_ids,
        "item_id": item_ids,
        "rating": ratings,
        "timestamp": timestamps,
    })
    users = pd.DataFrame({"user_id": np.arange(num_users, dtype=np.int64)})
    source = (f"synthetic(num_users={num_users}, num_items={num_items}, "
              f"num_interactions={num_interactions}, seed={seed}, dim={dim}, "
              f"popularity_exponent={popularity_exponent}, noise_std={noise_std})")
    dataset = Dataset(name=name, interactions=interactions, items=items, users=users,
                      genre_names=genre_names, rating_scale=(low, high), source=source)
    return dataset.validate(), truth


def _check_arguments(num_users, num_items, num_interactions, dim, num_genres, genres_per_item,
                     min_per_user, rating_scale, rating_step, start, end, mean_activity_days,
                     popularity_exponent, activity_exponent) -> None:
    for label, value in (("num_users", num_users), ("num_items", num_items),
                         ("num_interactions", num_interactions), ("dim", dim),
                         ("num_genres", num_genres)):
        if value < 1:
            raise ValueError(f"{label} must be at least 1, got {value}")
    if min_per_user < 0:
        raise ValueError(f"min_interactions_per_user must be >= 0, got {min_per_user}")
    if num_interactions < num_users * min_per_user:
        raise ValueError(f"num_interactions={num_interactions} cannot give each of "
                         f"{num_users} users {min_per_user} event(s)")
    max_genres = min(_MAX_GENRES_PER_ITEM, num_genres)
    if not 1 <= genres_per_item <= max_genres:
        raise ValueError(f"genres_per_item must be in [1, {max_genres}], got {genres_per_item}")
    if not rating_scale[0] < rating_scale[1]:
        raise ValueError(f"rating_scale must be (low, high) with low < high, got {rating_scale}")
    if rating_step <= 0:
        raise ValueError(f"rating_step must be positive, got {rating_step}")
    if end <= start:
        raise ValueError(f"end_timestamp ({end}) must be after start_timestamp ({start})")
    if mean_activity_days <= 0:
        raise ValueError(f"mean_activity_days must be positive, got {mean_activity_days}")
    if popularity_exponent < 0 or activity_exponent < 0:
        raise ValueError("popularity_exponent and activity_exponent must be >= 0")


def _zipf_weights(size: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Probabilities proportional to ``rank ** -exponent``, ranks shuffled over the ids."""
    by_rank = np.arange(1, size + 1, dtype=np.float64) ** -exponent
    weights = np.empty(size, dtype=np.float64)
    weights[rng.permutation(size)] = by_rank
    return weights / weights.sum()


def _events_per_user(num_interactions: int, num_items: int, minimum: int,
                     activity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The minimum per user plus a multinomial share of the rest, capped per user.

    The cap (half the catalogue, or the mean where that is more) keeps the heaviest users
    from exhausting the catalogue, which would force repeated pairs; what a capped user loses
    is shared out again among the others in proportion to their activity.
    """
    num_users = activity.size
    cap = max(int(np.ceil(_MAX_CATALOGUE_SHARE_PER_USER * num_items)),
              -(-num_interactions // num_users))
    counts = np.full(num_users, minimum, dtype=np.int64)
    unassigned = num_interactions - num_users * minimum
    while unassigned > 0:  # a few rounds: each one fills the users it pushes over the cap
        weights = np.where(counts < cap, activity, 0.0)
        counts += rng.multinomial(unassigned, weights / weights.sum())
        np.minimum(counts, cap, out=counts)
        unassigned = num_interactions - int(counts.sum())
    return counts


def _draw_items(user_ids: np.ndarray, popularity: np.ndarray, rng: np.random.Generator,
                max_rounds: int) -> tuple[np.ndarray, int]:
    """Draws one item per event by popularity, redrawing repeats of a (user, item) pair.

    Returns the item ids and how many events still repeat a pair after ``max_rounds``.
    """
    num_items = popularity.size
    cdf = np.cumsum(popularity)
    cdf[-1] = 1.0  # So a uniform draw in [0, 1) never runs past the last item.

    def draw(count: int) -> np.ndarray:
        return np.searchsorted(cdf, rng.random(count), side="right").astype(np.int64)

    items = draw(user_ids.size)
    # (user, item) as one int64: users * items stays far below 2**63 for any realistic size.
    keys = user_ids * num_items + items
    first = _first_occurrences(keys)
    pending = np.flatnonzero(~first)
    taken = np.sort(keys[first])  # the pairs of the first draw, fixed from here on
    del keys, first
    accepted = np.empty(0, dtype=np.int64)  # sorted pairs accepted in the redraw rounds
    for _ in range(max_rounds):
        if pending.size == 0:
            break
        new_items = draw(pending.size)
        new_keys = user_ids[pending] * num_items + new_items
        fresh = (_first_occurrences(new_keys) & ~_in_sorted(new_keys, taken)
                 & ~_in_sorted(new_keys, accepted))
        items[pending[fresh]] = new_items[fresh]
        accepted = np.sort(np.concatenate([accepted, new_keys[fresh]]))
        pending = pending[~fresh]
    return items, int(pending.size)


def _first_occurrences(keys: np.ndarray) -> np.ndarray:
    """True where a key has not appeared earlier in ``keys``."""
    order = np.argsort(keys, kind="stable")  # stable: the earliest of equal keys comes first
    sorted_keys = keys[order]
    first = np.empty(keys.size, dtype=bool)
    first[order[:1]] = True
    first[order[1:]] = sorted_keys[1:] != sorted_keys[:-1]
    return first


def _in_sorted(values: np.ndarray, sorted_values: np.ndarray) -> np.ndarray:
    """Membership of ``values`` in an ascending array, without re-sorting the large side."""
    if sorted_values.size == 0:
        return np.zeros(values.shape, dtype=bool)
    index = np.searchsorted(sorted_values, values)
    np.minimum(index, sorted_values.size - 1, out=index)
    return sorted_values[index] == values


def _draw_timestamps(user_ids: np.ndarray, num_users: int, start: int, end: int,
                     mean_activity_days: float, window_rng: np.random.Generator,
                     event_rng: np.random.Generator) -> np.ndarray:
    """Event times uniform within each user's active window (join time + exponential stay)."""
    span = end - start
    joined = start + np.floor(window_rng.random(num_users) * span).astype(np.int64)
    stay = window_rng.exponential(mean_activity_days * _SECONDS_PER_DAY, num_users)
    stay = np.minimum(stay, end - joined)  # > 0 because joined < end
    offsets = np.floor(event_rng.random(user_ids.size) * stay[user_ids]).astype(np.int64)
    return joined[user_ids] + offsets


def _assign_genres(item_factors: np.ndarray, directions: np.ndarray,
                   genres_per_item: float) -> np.ndarray:
    """Each item's top-cosine genre, plus runners-up above a threshold; (items, genres) bool."""
    num_items, num_genres = item_factors.shape[0], directions.shape[0]
    max_genres = min(_MAX_GENRES_PER_ITEM, num_genres)
    # Within a row, projections rank genres as cosines do; only the kept ones are normalised.
    projections = item_factors @ directions.T
    norms = np.sqrt(np.einsum("ij,ij->i", item_factors, item_factors))
    np.maximum(norms, np.float32(1e-12), out=norms)
    rows = np.arange(num_items)
    top = np.empty((num_items, max_genres), dtype=np.int64)
    top_cosines = np.empty((num_items, max_genres), dtype=np.float32)
    for rank in range(max_genres):  # repeated argmax: faster than sorting rows; ties go to the lower id  # noqa: E501
        best = np.argmax(projections, axis=1)
        top[:, rank] = best
        top_cosines[:, rank] = projections[rows, best] / norms
        projections[rows, best] = -np.inf

    keep = np.zeros(top.shape, dtype=bool)
    keep[:, 0] = True
    runners_up = top_cosines[:, 1:].ravel()
    extra = int(round((genres_per_item - 1.0) * num_items))
    if extra > 0 and runners_up.size:
        # Threshold = the extra-th largest runner-up cosine; a third genre implies a second.
        extra = min(extra, runners_up.size)
        threshold = np.partition(runners_up, runners_up.size - extra)[runners_up.size - extra]
        keep[:, 1:] = top_cosines[:, 1:] >= threshold
    assigned = np.zeros((num_items, num_genres), dtype=bool)
    assigned[np.broadcast_to(rows[:, None], top.shape)[keep], top[keep]] = True
    return assigned


def _item_table(item_genres: np.ndarray, genre_names: tuple[str, ...], last_year: int,
                rng: np.random.Generator) -> pd.DataFrame:
    """Catalogue rows: ids, unique titles with a release year, genre tuples."""
    num_items = item_genres.shape[0]
    ages = np.floor(rng.exponential(_MEAN_RELEASE_AGE_YEARS, num_items)).astype(np.int64)
    years = np.maximum(last_year - ages, _EARLIEST_YEAR)
    # An f-string list is ~5x faster than pandas string concatenation without pyarrow.
    titles = [f"Synthetic Item {i} ({y})" for i, y in zip(range(num_items), years.tolist())]
    return pd.DataFrame({
        "item_id": np.arange(num_items, dtype=np.int64),
        "title": pd.Series(titles, dtype="str"),
        "year": pd.array(years, dtype="Int64"),
        "genres": pd.Series(_genre_tuples(item_genres, genre_names), dtype=object),
    })


def _genre_tuples(item_genres: np.ndarray, genre_names: tuple[str, ...]) -> np.ndarray:
    """Object array of genre-name tuples in canonical order, one shared tuple per combination."""
    num_items, num_genres = item_genres.shape
    # Code each row's (at most three, ascending) genre indices as base-(G+1) digits: a 1-D
    # unique over int64 codes is far faster than a row-wise unique of the bool matrix.
    rows, columns = np.nonzero(item_genres)  # row-major, so columns ascend within a row
    row_starts = np.searchsorted(rows, np.arange(num_items))
    position = np.arange(rows.size) - row_starts[rows]
    base = num_genres + 1
    codes = np.zeros(num_items, dtype=np.int64)
    np.add.at(codes, rows, (columns + 1) * base ** position)
    unique_codes, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    names = np.asarray(genre_names, dtype=object)
    tuples = np.empty(unique_codes.size, dtype=object)
    for combo, row in enumerate(first):  # one per distinct combination: a few thousand at most
        tuples[combo] = tuple(names[item_genres[row]])
    return tuples[inverse]
