"""The post-training look at item embeddings: t-SNE map, genre-cluster score, similar items.

One call writes the three artefacts into a workdir and returns what to print, so training
scripts end with the same analysis (and the same definitions) every time.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_jax.analysis.embeddings import plot_item_tsne
from recsys_jax.analysis.genre_clusters import GenreClusterScore, genre_cluster_score, genres_by_row
from recsys_jax.analysis.similar import ItemNotFoundError, format_similar, item_rows, similar_items
from recsys_jax.fileio import atomic_write_json, atomic_write_text

TSNE_FILE = "tsne_items.png"
GENRE_CLUSTER_FILE = "genre_cluster.json"
SIMILAR_ITEMS_FILE = "similar_items.md"


@dataclasses.dataclass(frozen=True)
class ItemAnalysis:
    """What ``analyse_item_embeddings`` found.

    Attributes:
      min_count: items with fewer training ratings were left out (their embeddings barely
        moved from the random initialisation, so they would only add noise).
      num_items: items that took part.
      genre_cluster: the genre-cluster score over those items.
      similar: title → the most similar items (titles absent from the catalogue are skipped).
    """

    min_count: int
    num_items: int
    genre_cluster: GenreClusterScore
    similar: dict[str, pd.DataFrame]

    def format(self) -> str:
        """Plain text for the console and the report."""
        lines = [f"Item embeddings of the {self.num_items} items with >= {self.min_count} "
                 "training ratings:", self.genre_cluster.format()]
        for title, table in self.similar.items():
            lines += ["", f"Most similar to {title}:", format_similar(table)]
        return "\n".join(lines)


def analyse_item_embeddings(item_embeddings: np.ndarray, items: pd.DataFrame,
                            train_item_counts: np.ndarray, workdir: str | os.PathLike, *,
                            titles: Sequence[str] = (), min_count: int = 20, k: int = 10,
                            n_permutations: int = 1000, seed: int = 0) -> ItemAnalysis:
    """Writes ``tsne_items.png``, ``genre_cluster.json`` and ``similar_items.md`` to ``workdir``.

    Args:
      item_embeddings: ``(num_items, dim)``, row = encoded item id.
      items: the encoded items table (``item_id`` = row, ``title``, ``genres``).
      train_item_counts: ``(num_items,)`` training ratings per item.
      workdir: output directory.
      titles: items whose nearest neighbours to list; unknown titles are skipped with a note.
      min_count: only items with at least this many training ratings are mapped, scored and
        offered as neighbours.
      k: neighbours per item (cluster score and similar-item lists).
      n_permutations: genre shuffles in the cluster score's null distribution.
      seed: seed of t-SNE and of the shuffles.
    """
    workdir = Path(workdir)
    counts = np.asarray(train_item_counts)
    trained = counts >= min_count
    plot_item_tsne(item_embeddings, items, workdir / TSNE_FILE, counts=counts,
                   min_count=min_count, seed=seed)
    score = genre_cluster_score(item_embeddings, genres_by_row(items, len(item_embeddings)),
                                k=k, n_permutations=n_permutations, seed=seed, mask=trained)
    atomic_write_json(workdir / GENRE_CLUSTER_FILE,
                      {**dataclasses.asdict(score), "min_count": min_count})

    rows = item_rows(items, len(item_embeddings))
    candidates = items[trained[rows]]
    similar, notes = {}, []
    for title in titles:
        try:
            similar[title] = similar_items(item_embeddings, candidates, title, k=k)
        except ItemNotFoundError as error:
            notes.append(f"- skipped {title!r}: {error}")
    analysis = ItemAnalysis(min_count=min_count, num_items=int(trained.sum()),
                            genre_cluster=score, similar=similar)
    markdown = "\n".join(["# Similar items (cosine)", "", *notes] + [
        f"## {title}\n\n```\n{format_similar(table)}\n```\n" for title, table in similar.items()])
    atomic_write_text(workdir / SIMILAR_ITEMS_FILE, markdown)
    return analysis
