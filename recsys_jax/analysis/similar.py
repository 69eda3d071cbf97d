"""Item-to-item look-ups: the items whose embeddings point the same way as a query item's."""

from __future__ import annotations

import difflib
import numbers
import warnings

import numpy as np
import pandas as pd

SIMILAR_COLUMNS = ("item_id", "title", "genres", "similarity")


class ItemNotFoundError(LookupError):
    """A query item id or title that the items table does not hold.

    Attributes:
      query: the id or title asked for.
      suggestions: close title matches (empty for ids).
    """

    def __init__(self, message: str, query: int | str, suggestions: list[str] | None = None):
        super().__init__(message)
        self.query = query
        self.suggestions = suggestions or []


class AmbiguousTitleError(LookupError):
    """A title shared by several items (MovieLens lists some films twice); query by id."""

    def __init__(self, title: str, item_ids: list[int]):
        super().__init__(f"title {title!r} matches items {item_ids}; query one of them by id")
        self.title = title
        self.item_ids = item_ids


def item_rows(items: pd.DataFrame, num_rows: int) -> np.ndarray:
    """The embedding row of each item in the table: its (contiguous, encoded) item id.

    Raises:
      ValueError: when an item id is not a row of an embedding matrix with ``num_rows`` rows,
        which means the table was encoded with a different id mapping than the embeddings.
    """
    item_ids = items["item_id"].to_numpy(dtype=np.int64)
    outside = (item_ids < 0) | (item_ids >= num_rows)
    if outside.any():
        raise ValueError(
            f"the items table has {int(outside.sum())} item id(s) outside the {num_rows} "
            f"embedding rows (e.g. {int(item_ids[outside][0])}); the table must be encoded "
            f"with the same id mapping as the embeddings")
    return item_ids


def find_item(items: pd.DataFrame, query: int | str) -> int:
    """The item id for ``query``: an item id, or a title.

    Titles are matched exactly first, then case-insensitively (ignoring surrounding spaces).

    Raises:
      ItemNotFoundError: unknown id, or a title with no match (the message lists close
        matches, e.g. ``"Star Wars (1977)"`` for ``"star wars"``).
      AmbiguousTitleError: a title that several items carry.
    """
    if isinstance(query, numbers.Integral) and not isinstance(query, bool):
        item_id = int(query)
        if not (items["item_id"] == item_id).any():
            ids = items["item_id"]
            raise ItemNotFoundError(
                f"item id {item_id} is not in the items table (ids run from {ids.min()} "
                f"to {ids.max()})", query)
        return item_id
    if not isinstance(query, str):
        raise TypeError(f"query must be an item id (int) or a title (str), got {query!r}")

    titles = items["title"].astype(str)
    matches = items["item_id"][titles == query]
    if matches.empty:
        folded = titles.str.strip().str.casefold()
        matches = items["item_id"][folded == query.strip().casefold()]
    if matches.empty:
        raise _unknown_title(query, titles.tolist())
    if len(matches) > 1:
        raise AmbiguousTitleError(query, sorted(int(i) for i in matches))
    return int(matches.iloc[0])


def cosine_similarities(embeddings: np.ndarray, row: int) -> np.ndarray:
    """Cosine similarity of every row of ``embeddings`` with row ``row``.

    A zero vector has similarity 0 with everything (instead of the NaN of 0/0).
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(embeddings, axis=1)
    unit = embeddings / np.where(norms > 0, norms, 1.0)[:, None]
    return np.clip(unit @ unit[row], -1.0, 1.0)  # rounding can overshoot 1 slightly


def similar_items(item_embeddings: np.ndarray, items: pd.DataFrame, query: int | str,
                  k: int = 10) -> pd.DataFrame:
    """The ``k`` items most similar to ``query`` by cosine similarity of their embeddings.

    Args:
      item_embeddings: ``(num_items, dim)``, row ``r`` is (encoded) item id ``r``.
      items: the items table (``item_id``, ``title``, ``genres``), encoded with the same id
        mapping as the embeddings. Only items it lists are candidates.
      query: item id or title (see ``find_item``).
      k: how many items to return (fewer when the table holds fewer other items).

    Returns:
      A DataFrame with columns ``item_id``, ``title``, ``genres``, ``similarity``, most similar
      first, ties broken by lower item id; the query item itself is never included.
    """
    embeddings = np.asarray(item_embeddings)
    if embeddings.ndim != 2:
        raise ValueError(f"item_embeddings must be 2-D, got shape {embeddings.shape}")
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    rows = item_rows(items, len(embeddings))
    query_id = find_item(items, query)
    if not np.any(embeddings[query_id]):
        warnings.warn(f"item {query_id} has an all-zero embedding: every similarity is 0, so "
                      "the list is just the lowest item ids", stacklevel=2)

    similarity = cosine_similarities(embeddings, query_id)[rows]
    candidates = np.flatnonzero(rows != query_id)
    # lexsort's last key is the primary one: highest similarity first, then lowest id.
    order = candidates[np.lexsort((rows[candidates], -similarity[candidates]))][:k]
    result = items.iloc[order][["item_id", "title", "genres"]].reset_index(drop=True)
    result["similarity"] = similarity[order]
    return result


def format_similar(result: pd.DataFrame) -> str:
    """A similar-items table as aligned text: rank, similarity, item id, title, genres."""
    lines = [f"{'#':>3}  {'sim':>6}  {'id':>6}  {'title':<50}  genres"]
    for rank, row in enumerate(result.itertuples(index=False), start=1):
        genres = "|".join(row.genres) or "-"
        lines.append(f"{rank:>3}  {row.similarity:>6.3f}  {row.item_id:>6}  "
                     f"{row.title!s:<50}  {genres}")
    return "\n".join(lines)


def _unknown_title(query: str, titles: list[str]) -> ItemNotFoundError:
    by_folded = {}
    for title in titles:
        by_folded.setdefault(title.casefold(), title)
    close = difflib.get_close_matches(query.strip().casefold(), list(by_folded), n=5, cutoff=0.6)
    if not close:
        # A short part of a long title ("shawshank") is far from it by ratio: try substrings.
        needle = query.strip().casefold()
        close = [t for t in by_folded if needle in t][:5] if needle else []
    suggestions = [by_folded[t] for t in close]
    hint = f"; did you mean {', '.join(map(repr, suggestions))}?" if suggestions else ""
    return ItemNotFoundError(f"no item titled {query!r}{hint}", query, suggestions)
