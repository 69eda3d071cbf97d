"""From an experiment config's ``data`` and ``split`` blocks to ``RatingData``.

The one bridge between the data layer (loaders, id encoding, splits) and the training code,
which otherwise sees only NumPy columns. Used by ``experiments/train_mf.py`` and
``experiments/benchmark_mf.py``.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections
import pandas as pd

from recsys_jax.data import ids, movielens, splits, synthetic
from recsys_jax.data.dataset import Dataset
from recsys_jax.training.rating_experiment import RatingData


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

    Raises:
      ValueError: when the split fails its leakage checks.
    """
    s = split_config
    split = splits.make_split(interactions, s.name, seed=s.seed, val_fraction=s.val_fraction,
                              test_fraction=s.test_fraction, holdout_k=s.get("holdout_k"))
    if not split.report.ok:
        raise ValueError(f"split {s.name!r} failed its leakage checks:\n{split.report.format()}")
    return split


@dataclasses.dataclass(frozen=True)
class PreparedRatings:
    """Encoded, split ratings plus what later stages need to label their outputs.

    Attributes:
      data: the rating columns.
      dataset: the data set's name.
      split_protocol: the split protocol.
      split_fingerprint: ``Split.fingerprint()``; runs are only compared on equal ones.
      report_section: Markdown describing data set and split (with the leakage report).
      split_report: the split's leakage report (cold-start shares of val and test).
      items: the encoded items table (``item_id`` = row), for analysis of item embeddings.
    """

    data: RatingData
    dataset: str
    split_protocol: str
    split_fingerprint: str
    report_section: str
    split_report: splits.LeakageReport | None = None
    items: pd.DataFrame | None = None


def load_rating_data(config: ml_collections.ConfigDict,
                     save_dir: str | os.PathLike | None = None) -> PreparedRatings:
    """Loads, encodes and splits the data of ``config``.

    Args:
      config: an experiment config with ``data`` and ``split`` blocks.
      save_dir: when given, the id mapping goes to ``save_dir/ids`` and the split (with its
        leakage report) to ``save_dir/split``.

    Raises:
      ValueError: when the split fails its leakage checks.
    """
    dataset = load_dataset(config.data)
    encoded, mapping = ids.encode_dataset(dataset)
    split = split_from_config(encoded.interactions, config.split)
    if save_dir is not None:
        mapping.save(os.path.join(save_dir, "ids"))
        split.save(os.path.join(save_dir, "split"))
    data = RatingData.from_arrays(
        {name: (part["user_id"].to_numpy(), part["item_id"].to_numpy(),
                part["rating"].to_numpy())
         for name, part in split.parts().items()},
        num_users=mapping.num_users, num_items=mapping.num_items,
        rating_scale=dataset.rating_scale)
    fingerprint = split.fingerprint()
    section = (
        "## Data and split\n\n"
        f"- data set: {dataset!r}\n"
        f"- split: `{split.protocol}` {split.params}, fingerprint `{fingerprint[:16]}`\n\n"
        "```\n" + split.report.format().rstrip() + "\n```")
    return PreparedRatings(data=data, dataset=dataset.name, split_protocol=split.protocol,
                           split_fingerprint=fingerprint, report_section=section,
                           split_report=split.report, items=encoded.items)
