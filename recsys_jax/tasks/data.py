"""From an experiment config's ``data`` and ``split`` blocks to an encoded, split data set.

The one bridge between the data layer (loaders, id encoding, splits) and the tasks, which
otherwise see only NumPy columns.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import ml_collections
import pandas as pd

from recsys_jax.data import ids, movielens, splits, synthetic
from recsys_jax.data.dataset import Dataset
from recsys_jax.progress import stage


def load_dataset(data_config: ml_collections.ConfigDict) -> Dataset:
    """The configured MovieLens data set, or a synthetic one for ``dataset="synthetic"``
    (sized by ``num_users``, ``num_items``, ``num_interactions``, ``seed``)."""
    if data_config.dataset == "synthetic":
        return synthetic.generate_synthetic(
            data_config.num_users, data_config.num_items, data_config.num_interactions,
            seed=data_config.seed)
    return movielens.load_movielens(data_config.dataset, data_dir=data_config.get("data_dir"),
                                    cache_dir=data_config.get("cache_dir"))


def split_from_config(interactions: pd.DataFrame,
                      split_config: ml_collections.ConfigDict) -> splits.Split:
    """The split an experiment config's ``split`` block asks for.

    Keys a config lacks take their defaults: ``tie_order="random"``, no k-core
    (``min_user_interactions``/``min_item_interactions`` 0).

    Raises:
      ValueError: when the split fails its leakage checks.
    """
    s = split_config
    split = splits.make_split(interactions, s.name, seed=s.seed, val_fraction=s.val_fraction,
                              test_fraction=s.test_fraction, holdout_k=s.get("holdout_k"),
                              tie_order=s.get("tie_order", "random"),
                              min_user_interactions=s.get("min_user_interactions", 0),
                              min_item_interactions=s.get("min_item_interactions", 0))
    if not split.report.ok:
        raise ValueError(f"split {s.name!r} failed its leakage checks:\n{split.report.format()}")
    return split


@dataclasses.dataclass(frozen=True)
class SplitData:
    """An encoded data set, its id mapping and its split.

    Attributes:
      dataset: the data set as loaded (raw ids).
      encoded: the data set with encoded ids (``user_id``/``item_id`` = table rows).
      mapping: the id mapping.
      split: the split of the (possibly filtered) encoded interactions.
    """

    dataset: Dataset
    encoded: Dataset
    mapping: ids.IdMapping
    split: splits.Split

    def section(self, extra: str = "") -> str:
        """Markdown on the data set and the split, with the leakage report and what the loader
        noted about this copy (missing optional files, a subset of a known data set)."""
        notes = "".join(f"- **data note:** {note}\n" for note in self.dataset.notes)
        return ("## Data and split\n\n"
                f"- data set: {self.dataset!r}\n" + notes + extra +
                f"- split: `{self.split.protocol}` {self.split.params}, fingerprint "
                f"`{self.split.fingerprint()[:16]}`\n\n"
                "```\n" + self.split.report.format().rstrip() + "\n```")


def load_split(config: ml_collections.ConfigDict, save_dir: str | os.PathLike | None = None,
               *, keep=None) -> SplitData:
    """Loads, encodes and splits the data of ``config``.

    Args:
      config: an experiment config with ``data`` and ``split`` blocks.
      save_dir: when given, the id mapping goes to ``save_dir/ids`` and the split (with its
        leakage report) to ``save_dir/split`` (``experiments/compare.py --split_dir``).
      keep: optional ``interactions -> interactions`` filter applied before splitting (the
        implicit task's rating threshold).

    Raises:
      ValueError: when the split fails its leakage checks.
    """
    with stage(f"loading {config.data.dataset}"):
        dataset = load_dataset(config.data)
    with stage(f"encoding ids and splitting ({config.split.name})"):
        encoded, mapping = ids.encode_dataset(dataset)
        interactions = encoded.interactions if keep is None else keep(encoded.interactions)
        split = split_from_config(interactions, config.split)
    if save_dir is not None:
        mapping.save(Path(save_dir) / "ids")
        split.save(Path(save_dir) / "split")
    return SplitData(dataset=dataset, encoded=encoded, mapping=mapping, split=split)
