"""t-SNE maps of item embeddings, coloured by each item's primary genre."""

from __future__ import annotations

import collections
import inspect
import os
import warnings
from collections.abc import Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.manifold import TSNE

from recsys_jax.analysis.genre_clusters import genres_by_row
from recsys_jax.fileio import atomic_path
from recsys_jax.progress import stage

NO_GENRE = "(no genre)"
OTHER = "(other)"
PRIMARY_GENRE_RULES = ("rarest", "first")

# scikit-learn renamed TSNE's n_iter to max_iter in 1.5 and dropped n_iter in 1.7.
_TSNE_ITER_ARG = "max_iter" if "max_iter" in inspect.signature(TSNE).parameters else "n_iter"
# tab20's dark shades, then its light ones, so the most frequent labels get distinct hues;
# its grey pair (14, 15) is kept for NO_GENRE and OTHER.
_TAB20 = matplotlib.colormaps["tab20"].colors
_COLOURS = [_TAB20[i] for i in [*range(0, 20, 2), *range(1, 20, 2)] if i not in (14, 15)]
_GREY = _TAB20[15]


def primary_genres(genres: Sequence[Sequence[str]], rule: str = "rarest") -> list[str]:
    """One genre per item, to colour a plot by; ``NO_GENRE`` for items without any.

    Rules:
      ``"rarest"`` (default): the item's genre that the fewest items in ``genres`` carry,
        ties going to the one listed first. MovieLens lists genres in a fixed, alphabetical
        order, not by relevance, and most films are Drama or Comedy, so "first listed" paints
        the map by alphabet (Action, Adventure, ...) and "most common" paints it Drama/Comedy;
        the rarest genre is the most specific one (Film-Noir over Drama, Sci-Fi over Action)
        and the one most likely to show a cluster.
      ``"first"``: the first genre listed, for data sets that list genres by relevance.

    Args:
      genres: one sequence of genre names per item; the frequencies of the rarest rule are
        counted over all of them, so pass the whole catalogue for colours that do not depend
        on which items are later plotted.
      rule: ``"rarest"`` or ``"first"``.
    """
    if rule not in PRIMARY_GENRE_RULES:
        raise ValueError(f"unknown primary-genre rule {rule!r}; choose from {PRIMARY_GENRE_RULES}")
    if rule == "first":
        return [item_genres[0] if len(item_genres) else NO_GENRE for item_genres in genres]
    frequency = collections.Counter(g for item_genres in genres for g in set(item_genres))
    # min() keeps the first of equally rare genres, so ties follow the listed order.
    return [min(item_genres, key=frequency.__getitem__) if len(item_genres) else NO_GENRE
            for item_genres in genres]


def max_perplexity(num_points: int) -> float:
    """The largest perplexity ``tsne_2d`` uses for ``num_points`` points: ``(n - 1) / 3``.

    scikit-learn only requires perplexity < n, but its Barnes-Hut t-SNE looks at the
    ``3 * perplexity`` nearest neighbours of each point; beyond ``(n - 1) / 3`` that is every
    point, and the map stops reflecting local structure.
    """
    return (num_points - 1) / 3


def tsne_2d(embeddings: np.ndarray, *, perplexity: float = 30.0, seed: int = 0,
            max_iter: int = 1000) -> np.ndarray:
    """2-D t-SNE coordinates of ``embeddings``, shape ``(n, 2)``, under cosine geometry.

    Rows are L2-normalised first: Euclidean distance between unit vectors is a monotone
    function of cosine distance, which matches the similar-item look-ups and genre-cluster
    score, and lets t-SNE start from a PCA layout. All-zero rows stay at the origin.

    A perplexity above ``max_perplexity(n)`` is lowered to it with a warning.

    Raises:
      ValueError: fewer than 2 points, or a non-positive perplexity.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be 2-D, got shape {embeddings.shape}")
    n = len(embeddings)
    if n < 2:
        raise ValueError(f"t-SNE needs at least 2 points, got {n}")
    perplexity = _usable_perplexity(perplexity, n)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    unit = embeddings / np.where(norms > 0, norms, 1.0)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                **{_TSNE_ITER_ARG: max_iter})
    with stage(f"t-SNE of {n:,} points"):
        return tsne.fit_transform(unit)


def scatter_by_label(coords: np.ndarray, labels: Sequence[str], path: str | os.PathLike, *,
                     title: str = "", max_categories: int = len(_COLOURS)) -> list[str]:
    """Writes a PNG scatter plot of 2-D ``coords``, one colour per label.

    The ``max_categories`` most frequent labels get their own colour (legend ordered by
    frequency, with counts); the rest are drawn in grey as ``OTHER``, as is ``NO_GENRE``.
    The file is written atomically.

    Returns:
      The legend's labels in order, without their counts.
    """
    coords = np.asarray(coords)
    labels = np.asarray(labels, dtype=object)
    if coords.shape != (len(labels), 2):
        raise ValueError(f"coords must have shape ({len(labels)}, 2), got {coords.shape}")
    if not 1 <= max_categories <= len(_COLOURS):
        raise ValueError(f"max_categories must be in [1, {len(_COLOURS)}], got {max_categories}")
    counts = collections.Counter(label for label in labels if label != NO_GENRE)
    coloured = [label for label, _ in counts.most_common(max_categories)]
    labels = np.where(np.isin(labels, coloured) | (labels == NO_GENRE), labels, OTHER)

    fig = Figure(figsize=(9, 6.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    groups = [(label, colour) for label, colour in zip(coloured, _COLOURS)]
    groups += [(label, _GREY) for label in (OTHER, NO_GENRE)]
    legend = []
    for label, colour in groups:
        selected = labels == label
        if selected.any():
            legend.append(label)
            ax.scatter(coords[selected, 0], coords[selected, 1], s=9, alpha=0.8,
                       color=colour, linewidths=0, label=f"{label} ({int(selected.sum())})")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, markerscale=1.5,
              frameon=False)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return legend


def plot_item_tsne(item_embeddings: np.ndarray, items: pd.DataFrame,
                   path: str | os.PathLike, *,
                   counts: np.ndarray | None = None,
                   min_count: int = 0,
                   mask: np.ndarray | None = None,
                   rule: str = "rarest",
                   perplexity: float = 30.0,
                   seed: int = 0,
                   max_iter: int = 1000,
                   title: str | None = None) -> pd.DataFrame:
    """t-SNE of item embeddings coloured by primary genre, written to ``path`` as a PNG.

    Rarely rated items barely move from their initialisation, so their embeddings are noise;
    ``counts`` with ``min_count`` (or any boolean ``mask``) restricts the map to items whose
    embeddings were trained.

    Args:
      item_embeddings: ``(num_items, dim)``, row ``r`` is (encoded) item id ``r``.
      items: the items table (``item_id``, ``genres``) encoded with the same id mapping; rows
        it does not list are plotted as ``NO_GENRE``.
      path: the PNG to write.
      counts: optional ``(num_items,)`` training ratings per item.
      min_count: with ``counts``, plot only items with at least this many ratings.
      mask: optional boolean ``(num_items,)``; plot only items where it is true.
      rule: primary-genre rule (see ``primary_genres``), applied over the whole catalogue.
      perplexity, seed, max_iter: t-SNE settings (see ``tsne_2d``).
      title: plot title; a default names the number of items and the perplexity.

    Returns:
      The plotted points: ``item_id``, ``x``, ``y``, ``primary_genre``.
    """
    embeddings = np.asarray(item_embeddings)
    if embeddings.ndim != 2:
        raise ValueError(f"item_embeddings must be 2-D, got shape {embeddings.shape}")
    num_items = len(embeddings)
    keep = np.ones(num_items, dtype=bool)
    if counts is not None:
        keep &= _per_item(counts, num_items, "counts") >= min_count
    elif min_count > 0:
        raise ValueError("min_count needs counts")
    if mask is not None:
        keep &= _per_item(mask, num_items, "mask").astype(bool)
    item_ids = np.flatnonzero(keep)
    if len(item_ids) < 2:
        raise ValueError(f"only {len(item_ids)} item(s) pass the count/mask filter; "
                         "t-SNE needs at least 2")

    primary = np.asarray(primary_genres(genres_by_row(items, num_items), rule), dtype=object)
    perplexity = _usable_perplexity(perplexity, len(item_ids))
    coords = tsne_2d(embeddings[item_ids], perplexity=perplexity, seed=seed, max_iter=max_iter)
    if title is None:
        title = (f"t-SNE of {len(item_ids)} item embeddings (perplexity {perplexity:.3g}), "
                 f"coloured by {rule} genre")
    scatter_by_label(coords, primary[item_ids], path, title=title)
    return pd.DataFrame({"item_id": item_ids, "x": coords[:, 0], "y": coords[:, 1],
                         "primary_genre": primary[item_ids]})


def _per_item(values: np.ndarray, num_items: int, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.shape != (num_items,):
        raise ValueError(f"{name} has shape {values.shape}, expected ({num_items},)")
    return values


def _usable_perplexity(perplexity: float, num_points: int) -> float:
    """``perplexity``, lowered to ``max_perplexity`` (with a warning) when too large."""
    if perplexity <= 0:
        raise ValueError(f"perplexity must be positive, got {perplexity}")
    if perplexity <= max_perplexity(num_points):
        return perplexity
    warnings.warn(f"perplexity {perplexity} is too large for {num_points} points; using "
                  f"{max_perplexity(num_points):.3g} = (n - 1) / 3 instead", stacklevel=3)
    return max_perplexity(num_points)
