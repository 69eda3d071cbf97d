r"""Downloads (if needed) a MovieLens data set, prints its statistics and split leakage reports.

Usage:
  python experiments/prepare_data.py --dataset=ml-100k --split=all
  python experiments/prepare_data.py --dataset=ml-1m --split=user_temporal --holdout_k=5 \
      --output_dir=/tmp/ml1m_prepared
  python experiments/prepare_data.py --dataset=ml-100k --split=leave_one_out \
      --export_split=/tmp/ml100k_export --export_format=csv

With --output_dir, the id mapping (JSON) and each split (train/val/test) are saved there so
later runs can reuse exactly the same split. With --export_split, each split is also written as
plain files for other tools (Split.export): DIR/<protocol>/interactions.<format> with encoded
and raw ids, and DIR/<protocol>/split.json with the protocol, params and fingerprint.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from absl import app, flags, logging

from recsys_jax.console import quiet_startup
from recsys_jax.data import ids, movielens, splits, stats
from recsys_jax.fileio import atomic_write_json

_DATASET = flags.DEFINE_enum("dataset", "ml-100k", list(movielens.MOVIELENS_NAMES),
                             "MovieLens data set to prepare.")
_DATA_DIR = flags.DEFINE_string("data_dir", None,
                                "Directory that already holds the extracted data set files.")
_CACHE_DIR = flags.DEFINE_string("cache_dir", None,
                                 "Cache directory (default $RECSYS_JAX_DATA or ~/.cache/recsys_jax).")  # noqa: E501
_SPLIT = flags.DEFINE_enum("split", "all", ["none", "all", *splits.PROTOCOLS],
                           "Split protocol whose leakage report to print ('all' for every one).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random split and of the random tie order.")
_TIE_ORDER = flags.DEFINE_enum("tie_order", "random", list(splits.TIE_ORDERS),
                               "user_temporal/leave_one_out: order of a user's events with equal "
                               "timestamps ('random' from --seed, or 'item_id').")
_MIN_USER = flags.DEFINE_integer("min_user_interactions", 0,
                                 "k-core: keep users with at least this many events (0/1 = off).")
_MIN_ITEM = flags.DEFINE_integer("min_item_interactions", 0,
                                 "k-core: keep items with at least this many events (0/1 = off).")
_VAL_FRACTION = flags.DEFINE_float("val_fraction", 0.1, "Validation share.")
_TEST_FRACTION = flags.DEFINE_float("test_fraction", 0.1, "Test share.")
_HOLDOUT_K = flags.DEFINE_integer("holdout_k", None,
                                  "user_temporal only: hold out each user's last k events instead "
                                  "of a fraction.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where to save id mapping and splits.")
_EXPORT_SPLIT = flags.DEFINE_string("export_split", None,
                                    "Also export each split as plain files under "
                                    "DIR/<protocol>/ (interactions.<format> + split.json).")
_EXPORT_FORMAT = flags.DEFINE_enum("export_format", "csv", list(splits.EXPORT_FORMATS),
                                   "Format of --export_split (parquet needs pyarrow).")


def main(argv: list[str]) -> None:
    quiet_startup()
    del argv
    if (_EXPORT_SPLIT.value and _EXPORT_FORMAT.value == "parquet"
            and importlib.util.find_spec("pyarrow") is None):
        raise app.UsageError("--export_format=parquet needs pyarrow, which is not installed: "
                             "`pip install pyarrow`, or use --export_format=csv")
    dataset = movielens.load_movielens(_DATASET.value, data_dir=_DATA_DIR.value,
                                       cache_dir=_CACHE_DIR.value)
    print(stats.format_stats(stats.describe_dataset(dataset)))
    print(f"Source: {dataset.source}")

    encoded, mapping = ids.encode_dataset(dataset)
    output_dir = Path(_OUTPUT_DIR.value) if _OUTPUT_DIR.value else None
    if output_dir is not None:
        mapping.save(output_dir / "ids")

    protocols = {"none": (), "all": splits.PROTOCOLS}.get(_SPLIT.value, (_SPLIT.value,))
    reports = {}
    for protocol in protocols:
        split = splits.make_split(
            encoded.interactions, protocol, seed=_SEED.value,
            val_fraction=_VAL_FRACTION.value, test_fraction=_TEST_FRACTION.value,
            holdout_k=_HOLDOUT_K.value if protocol == "user_temporal" else None,
            tie_order=_TIE_ORDER.value, min_user_interactions=_MIN_USER.value,
            min_item_interactions=_MIN_ITEM.value)
        print()
        print(split.report.format())
        if not split.report.ok:
            logging.error("Split %s failed its leakage checks.", protocol)
        reports[protocol] = split.report.to_dict()
        if output_dir is not None:
            split.save(output_dir / "splits" / protocol)
        if _EXPORT_SPLIT.value:
            path = split.export(Path(_EXPORT_SPLIT.value) / protocol,
                                format=_EXPORT_FORMAT.value, mapping=mapping)
            print(f"Exported the {protocol} split to {path}")
    if output_dir is not None:
        atomic_write_json(output_dir / "leakage_reports.json", reports)
        print(f"\nSaved id mapping, splits and reports under {output_dir}")
    if any(not r.get("ok", True) for r in reports.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    app.run(main)
