"""The Keras-RS two-tower peer, this project's side: the split out, the vectors back in as a run.

The peer itself (``benchmarks/kerasrs_two_tower.py``) runs in its own environment with keras,
keras-rs and jax (``benchmarks/kerasrs_env.sh`` makes it); this module never imports Keras.

- ``export``: the split of ``--config`` (default: the implicit task's ML-100K leave-one-out,
  configs/ncf_ml100k.py) as ``<dir>/data.npz``: encoded training and validation pairs
  (``train_user``, ``train_item``, ``val_user``, ``val_item``, int32), ``num_users``,
  ``num_items`` and the split's fingerprint. The test part is not written: the peer never
  sees it.
- ``import``: ``<dir>/vectors.npz`` and ``<dir>/result.json`` (the peer's output) as a run
  directory ``<dir>/run`` (embeddings, dot product, ``seen_parts = ["train", "val"]``, the fit
  time and the chosen settings in its metadata), after checking that the peer trained on this
  very split. ``experiments/compare.py --runs`` scores it with this project's evaluator.

  python -m benchmarks.kerasrs_peer export --dir=workdirs/headline/kerasrs
  /work/venv-kerasrs/bin/python benchmarks/kerasrs_two_tower.py \
      --data=workdirs/headline/kerasrs/data.npz --out=workdirs/headline/kerasrs
  python -m benchmarks.kerasrs_peer import --dir=workdirs/headline/kerasrs
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from absl import app, flags

from recsys_jax.config_files import load_config_file
from recsys_jax.console import quiet_startup
from recsys_jax.evaluation.runs import RunError, save_run
from recsys_jax.fileio import atomic_write_bytes
from recsys_jax.tasks.implicit import ImplicitData, load_implicit_data

DATA_FILE, VECTORS_FILE, RESULT_FILE = "data.npz", "vectors.npz", "result.json"
RUN_NAME = "Keras-RS two-tower"


def export_split(data: ImplicitData, directory: str | Path) -> Path:
    """Writes ``data.npz`` (train and validation pairs, sizes, fingerprint); returns its path."""
    buffer = io.BytesIO()
    np.savez(buffer, train_user=data.train["user"].astype(np.int32),
             train_item=data.train["item"].astype(np.int32),
             val_user=data.val["user"].astype(np.int32),
             val_item=data.val["item"].astype(np.int32),
             num_users=np.int64(data.num_users), num_items=np.int64(data.num_items),
             split_fingerprint=np.str_(data.split_fingerprint))
    path = Path(directory) / DATA_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def import_run(data: ImplicitData, directory: str | Path) -> Path:
    """Writes ``<directory>/run`` from the peer's ``vectors.npz`` and ``result.json``.

    Raises:
      RunError: when an output is missing, or was trained on another split, or its shapes do
        not match the data.
    """
    directory = Path(directory)
    try:
        result = json.loads((directory / RESULT_FILE).read_text())
        with np.load(directory / VECTORS_FILE, allow_pickle=False) as f:
            users, items = f["user_embeddings"], f["item_embeddings"]
    except (OSError, KeyError, ValueError) as e:
        raise RunError(f"{directory}: cannot read the peer's output ({e}); run "
                       "benchmarks/kerasrs_two_tower.py first") from None
    if result.get("split_fingerprint") != data.split_fingerprint:
        raise RunError(f"{directory}: the peer trained on split "
                       f"{str(result.get('split_fingerprint'))[:12]}…, not on this config's "
                       f"{data.split_fingerprint[:12]}…; export the split again")
    if users.shape[0] != data.num_users or items.shape[0] != data.num_items:
        raise RunError(f"{directory}: vectors for {users.shape[0]} users × {items.shape[0]} "
                       f"items, the data has {data.num_users} × {data.num_items}")
    metadata = {k: result[k] for k in ("fit_time_s", "train_s", "fold_in_s", "tuning_s",
                                       "chosen", "settings", "versions") if k in result}
    metadata["trials"] = len(result.get("trials", ()))
    return save_run(directory / "run", name=RUN_NAME, model="keras-rs two-tower (ids)",
                    dataset=data.dataset, split_fingerprint=data.split_fingerprint,
                    split_protocol=data.split_protocol, seen_parts=("train", "val"),
                    user_embeddings=users, item_embeddings=items, metadata=metadata)


def main(argv: Sequence[str]) -> None:
    if len(argv) != 2 or argv[1] not in ("export", "import"):
        raise app.UsageError("usage: python -m benchmarks.kerasrs_peer export|import --dir=D")
    quiet_startup()
    data = load_implicit_data(load_config_file(flags.FLAGS.config))
    try:
        path = (export_split if argv[1] == "export" else import_run)(data, flags.FLAGS.dir)
    except RunError as e:
        raise SystemExit(f"error: {e}") from None
    print(path)


if __name__ == "__main__":
    # Defined here, not on import: the tests import this module beside other benchmarks.
    flags.DEFINE_string("config", "configs/ncf_ml100k.py", "Config whose data and split the "
                        "peer trains on.")
    flags.DEFINE_string("dir", "workdirs/headline/kerasrs", "The exchange directory.")
    app.run(main)
