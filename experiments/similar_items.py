r"""Prints the items most similar to a query item under a trained model's item embeddings.

Usage:
  python experiments/similar_items.py --workdir=/tmp/mf_ml100k --title="Star Wars (1977)" --k=10
  python experiments/similar_items.py --workdir=/tmp/mf_ml100k --item_id=49

The workdir is a training run's output: ``item_embeddings.npy`` (row = encoded item id) and,
when present, ``config.json`` (which data set was trained on) and ``ids/`` (the id mapping,
checked against the one rebuilt here).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from absl import app, flags

from recsys_jax.analysis import similar
from recsys_jax.console import quiet_startup
from recsys_jax.data import ids, movielens
from recsys_jax.fileio import load_npy

_WORKDIR = flags.DEFINE_string("workdir", None, "Training run directory.", required=True)
_TITLE = flags.DEFINE_string("title", None, "Query item title, e.g. 'Star Wars (1977)'.")
_ITEM_ID = flags.DEFINE_integer("item_id", None, "Query item by encoded id instead of title.")
_K = flags.DEFINE_integer("k", 10, "How many similar items to print.", lower_bound=1)
_DATASET = flags.DEFINE_string(
    "dataset", None, "MovieLens data set (default: the workdir's config.json, else ml-100k).")
_DATA_DIR = flags.DEFINE_string("data_dir", None,
                                "Directory that already holds the extracted data set files.")
_CACHE_DIR = flags.DEFINE_string(
    "cache_dir", None, "Cache directory (default $RECSYS_JAX_DATA or ~/.cache/recsys_jax).")
_DOWNLOAD = flags.DEFINE_bool("download", True,
                              "Download the data set when neither --data_dir nor the cache has it.")
flags.mark_flags_as_mutual_exclusive(["title", "item_id"], required=True)

DEFAULT_DATASET = "ml-100k"


def main(argv: list[str]) -> None:
    quiet_startup()
    del argv
    workdir = Path(_WORKDIR.value)
    embeddings_path = workdir / "item_embeddings.npy"
    if not embeddings_path.is_file():
        raise SystemExit(f"error: {embeddings_path} does not exist; is {workdir} a training run?")
    embeddings = load_npy(embeddings_path)
    items = load_items(workdir, _DATASET.value, _DATA_DIR.value, _CACHE_DIR.value,
                       _DOWNLOAD.value)
    query = _TITLE.value if _TITLE.value is not None else _ITEM_ID.value
    try:
        query_id = similar.find_item(items, query)
        result = similar.similar_items(embeddings, items, query_id, k=_K.value)
    except similar.AmbiguousTitleError as e:
        raise SystemExit(f"error: {e} with --item_id") from e
    except (similar.ItemNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from e
    query_row = items[items["item_id"] == query_id].iloc[0]
    print(f"Most similar to {query_row['title']} (item {query_id}, "
          f"{'|'.join(query_row['genres']) or 'no genre'}) by cosine similarity:")
    print(similar.format_similar(result))


# --- Loading: the only part that knows the workdir layout and the data layer. ---

def load_items(workdir: Path, dataset: str | None, data_dir: str | None,
               cache_dir: str | None, download: bool = True) -> pd.DataFrame:
    """The encoded items table of the data set the workdir's model was trained on."""
    name = dataset or dataset_from_config(workdir) or DEFAULT_DATASET
    if name not in movielens.MOVIELENS_NAMES:
        raise SystemExit(f"error: {name!r} is not a MovieLens data set, and this script reads "
                         f"MovieLens item tables (--dataset: "
                         f"{', '.join(movielens.MOVIELENS_NAMES)})")
    raw = movielens.load_movielens(name, data_dir=data_dir, cache_dir=cache_dir,
                                   download=download)
    encoded, mapping = ids.encode_dataset(raw)
    saved_ids = workdir / "ids"
    if saved_ids.is_dir() and ids.IdMapping.load(saved_ids).items != mapping.items:
        raise SystemExit(f"error: the item ids saved in {saved_ids} differ from those of "
                         f"{name!r}; pass the --dataset the model was trained on")
    return encoded.items


def dataset_from_config(workdir: Path) -> str | None:
    """The data set name in ``<workdir>/config.json`` (top level or under ``data``), if any."""
    path = workdir / "config.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    data = config.get("data")
    candidates = [config.get("dataset")]
    if isinstance(data, dict):
        candidates += [data.get("dataset"), data.get("name")]
    return next((c for c in candidates if isinstance(c, str)), None)


if __name__ == "__main__":
    app.run(main)
