"""From an experiment config's ``data``, ``implicit`` and ``split`` blocks to implicit data.

Ratings become implicit interactions: every rating is a positive by default (the NCF paper's
reading of MovieLens), or only ratings ≥ ``implicit.min_rating`` when that is set. The
threshold is applied *before* splitting, so held-out items are positives too. The split is
then made by the data layer (``leave_one_out`` for the NCF protocol, or any other) and the
leakage report must pass.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections
import numpy as np
import pandas as pd

from recsys_jax.data import ids, splits
from recsys_jax.evaluation.evaluate import EvaluationTarget, target_from_split
from recsys_jax.training.columns import Columns, check_id_range, num_rows
from recsys_jax.training.rating_data import load_dataset, split_from_config


def implicit_interactions(interactions: pd.DataFrame,
                          min_rating: float | None = None) -> pd.DataFrame:
    """The interactions kept as positives: all, or those rated at least ``min_rating``."""
    if min_rating is None:
        return interactions
    return interactions[interactions["rating"] >= min_rating].reset_index(drop=True)


def interaction_columns(users: np.ndarray, items: np.ndarray, *, num_users: int,
                        num_items: int) -> Columns:
    """Validated ``{"user": int32, "item": int32}`` positive columns."""
    check_id_range(np.asarray(users), num_users, "user")
    check_id_range(np.asarray(items), num_items, "item")
    columns = {"user": np.asarray(users, np.int32), "item": np.asarray(items, np.int32)}
    num_rows(columns)
    return columns


@dataclasses.dataclass(frozen=True)
class ImplicitData:
    """Encoded, split positive interactions and what evaluation and outputs need.

    Attributes:
      train, val, test: columns ``user``, ``item`` (int32).
      num_users, num_items: sizes of the id spaces.
      split: the data layer's ``Split`` (evaluation targets are built from it).
      dataset: the data set's name.
      split_fingerprint: ``split.fingerprint()``; runs are compared only on equal ones.
      report_section: Markdown describing data set, positives and split (leakage report).
    """

    train: Columns
    val: Columns
    test: Columns
    num_users: int
    num_items: int
    split: splits.Split
    dataset: str
    split_fingerprint: str
    report_section: str = ""

    @property
    def split_protocol(self) -> str:
        return self.split.protocol

    def target(self, part: str) -> EvaluationTarget:
        """The evaluation target of ``part`` (``"val"`` excludes train items from ranking,
        ``"test"`` train and val items)."""
        return target_from_split(self.split, self.num_users, self.num_items, part)

    @classmethod
    def from_split(cls, split: splits.Split, *, num_users: int, num_items: int,
                   dataset: str = "", report_section: str = "") -> "ImplicitData":
        """Columns of every part of ``split`` (frames with ``user_id`` / ``item_id``)."""
        cols = {name: interaction_columns(part["user_id"].to_numpy(),
                                          part["item_id"].to_numpy(), num_users=num_users,
                                          num_items=num_items)
                for name, part in split.parts().items()}
        return cls(**cols, num_users=num_users, num_items=num_items, split=split,
                   dataset=dataset, split_fingerprint=split.fingerprint(),
                   report_section=report_section)


def load_implicit_data(config: ml_collections.ConfigDict,
                       save_dir: str | os.PathLike | None = None) -> ImplicitData:
    """Loads, encodes, thresholds and splits the data of ``config``.

    Args:
      config: experiment config with ``data``, ``split`` and (optional) ``implicit`` blocks.
      save_dir: when given, the id mapping goes to ``save_dir/ids`` and the split to
        ``save_dir/split`` (``experiments/compare.py --split_dir`` reloads it).

    Raises:
      ValueError: when the split fails its leakage checks.
    """
    dataset = load_dataset(config.data)
    encoded, mapping = ids.encode_dataset(dataset)
    min_rating = config.get("implicit", {}).get("min_rating")
    positives = implicit_interactions(encoded.interactions, min_rating)
    split = split_from_config(positives, config.split)
    if save_dir is not None:
        mapping.save(os.path.join(save_dir, "ids"))
        split.save(os.path.join(save_dir, "split"))
    kept = ("all ratings" if min_rating is None else f"ratings ≥ {min_rating:g}")
    section = (
        "## Data and split\n\n"
        f"- data set: {dataset!r}\n"
        f"- positives: {kept} ({len(positives):,} of {len(encoded.interactions):,})\n"
        f"- split: `{split.protocol}` {split.params}, fingerprint "
        f"`{split.fingerprint()[:16]}`\n\n"
        "```\n" + split.report.format().rstrip() + "\n```")
    return ImplicitData.from_split(split, num_users=mapping.num_users,
                                   num_items=mapping.num_items, dataset=dataset.name,
                                   report_section=section)
