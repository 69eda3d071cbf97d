"""A Keras-RS two-tower (ids only, JAX backend): the peer of this project's two-tower.

Runs in its own environment (keras, keras-rs, jax; never this project's dependencies), made by
``benchmarks/kerasrs_env.sh``; it reads the split that ``benchmarks/kerasrs_peer.py export``
wrote and writes the test users' and the items' vectors, which ``kerasrs_peer.py import``
turns into a run for ``experiments/compare.py``. NumPy is the only other import, and Keras is
imported inside ``main`` so that this module's NumPy parts can be tested without it.

Model: a user-id embedding and an item-id embedding table (``dim`` each), score = dot
product, trained with the in-batch softmax of Keras-RS's retrieval examples over each batch's
(user, item) pairs: ``keras_rs.layers.RemoveAccidentalHits`` (a batch item equal to the row's
positive is not a negative) and ``keras_rs.layers.SamplingProbabilityCorrection`` (logQ, q_i =
item i's share of the training pairs), Adam.

Protocol (the project's, docs/evaluation.md):

1. Tuning on validation: each grid point (``--dims`` × ``--lrs``) trains on the training pairs
   for up to ``--epochs`` epochs; after every epoch the validation users (their training
   events) are ranked over every item but their training items, here in NumPy
   (``ranking_metrics``), and the best epoch's validation NDCG@10 is the point's value
   (early stopping after ``--patience`` epochs without improvement).
2. Final fit, timed: the chosen point from a fresh start for its best number of epochs.
3. Test users from train + val, items fixed (the project's fold-in): the item table is frozen
   and the user table trained ``--fold_in_epochs`` more epochs on the train + val pairs.
   The fit time counts steps 2 and 3 (Keras's compilation included), not the tuning.

  /work/venv-kerasrs/bin/python benchmarks/kerasrs_two_tower.py --data=D/data.npz --out=D
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np


def ranking_metrics(user_vectors: np.ndarray, item_vectors: np.ndarray,
                    exclude_users: np.ndarray, exclude_items: np.ndarray,
                    target_users: np.ndarray, target_items: np.ndarray, k: int = 10
                    ) -> dict[str, float]:
    """HR@k and NDCG@k of one held-out item per user, full ranking, NumPy only.

    Each target user's items are scored by dot product; the (user, item) pairs of
    ``exclude_*`` are removed from the ranking; the target's rank is the number of remaining
    items scoring strictly higher (a tie counts in the target's favour: for choosing among
    trials only, the reported figures come from this project's evaluator).
    """
    scores = user_vectors[target_users] @ item_vectors.T
    row = np.full(len(user_vectors), -1)
    row[target_users] = np.arange(len(target_users))
    keep = row[exclude_users] >= 0
    scores[row[exclude_users[keep]], exclude_items[keep]] = -np.inf
    target = scores[np.arange(len(target_users)), target_items]
    rank = (scores > target[:, None]).sum(axis=1)
    hit = rank < k
    return {f"hr@{k}": float(hit.mean()),
            f"ndcg@{k}": float(np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0).mean())}


def item_probabilities(items: np.ndarray, num_items: int) -> np.ndarray:
    """Each item's share of the training pairs (the logQ correction's q), float32."""
    counts = np.bincount(items, minlength=num_items).astype(np.float64)
    return (counts / counts.sum()).astype(np.float32)


def _build(keras, keras_rs, num_users: int, num_items: int, dim: int, q: np.ndarray, seed: int):
    ops = keras.ops

    class TwoTower(keras.Model):
        """User-id and item-id towers, in-batch softmax with logQ and accidental hits."""

        def __init__(self):
            super().__init__()
            self.user_tower = keras.layers.Embedding(num_users, dim, embeddings_initializer=
                                                     keras.initializers.RandomNormal(
                                                         stddev=0.05, seed=seed))
            self.item_tower = keras.layers.Embedding(num_items, dim, embeddings_initializer=
                                                     keras.initializers.RandomNormal(
                                                         stddev=0.05, seed=seed + 1))
            self.remove_hits = keras_rs.layers.RemoveAccidentalHits()
            self.logq = keras_rs.layers.SamplingProbabilityCorrection()
            self.q = ops.convert_to_tensor(q)

        def call(self, inputs):
            return self.user_tower(inputs["user"]), self.item_tower(inputs["item"])

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                         training=True):
            users, items = y_pred
            logits = ops.matmul(users, ops.transpose(items))
            labels = ops.eye(ops.shape(logits)[0], dtype=logits.dtype)
            logits = self.remove_hits(logits, labels, x["item"])
            logits = self.logq(logits, ops.broadcast_to(ops.take(self.q, x["item"])[None, :],
                                                        ops.shape(logits)))
            return ops.mean(keras.losses.categorical_crossentropy(labels, logits,
                                                                  from_logits=True))

    model = TwoTower()
    model({"user": np.zeros(1, np.int32), "item": np.zeros(1, np.int32)})
    return model


def _vectors(model) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray(model.user_tower.embeddings, np.float32),
            np.asarray(model.item_tower.embeddings, np.float32))


def _fit_epochs(model, users, items, batch_size: int, epochs: int) -> None:
    # Keras shuffles with its global seed (set by the callers); fit per epoch to validate.
    model.fit({"user": users, "item": items}, batch_size=batch_size, epochs=epochs,
              shuffle=True, verbose=0)


def train_point(keras, keras_rs, data: dict[str, np.ndarray], *, dim: int, lr: float,
                batch_size: int, epochs: int, patience: int, seed: int
                ) -> dict[str, Any]:
    """Trains one grid point on train, validation after every epoch: its best epoch."""
    keras.utils.set_random_seed(seed)
    n_u, n_i = int(data["num_users"]), int(data["num_items"])
    model = _build(keras, keras_rs, n_u, n_i, dim, item_probabilities(data["train_item"], n_i),
                   seed)
    model.compile(optimizer=keras.optimizers.Adam(lr))
    best, best_epoch, history = -1.0, 0, []
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        _fit_epochs(model, data["train_user"], data["train_item"], batch_size, 1)
        m = ranking_metrics(*_vectors(model), data["train_user"], data["train_item"],
                            data["val_user"], data["val_item"])
        history.append(m)
        if m["ndcg@10"] > best:
            best, best_epoch = m["ndcg@10"], epoch
        elif epoch - best_epoch >= patience:
            break
    return {"dim": dim, "lr": lr, "val_ndcg@10": best, "best_epoch": best_epoch,
            "epochs_trained": len(history), "seconds": time.perf_counter() - t0,
            "history": history}


def final_fit(keras, keras_rs, data: dict[str, np.ndarray], *, dim: int, lr: float,
              batch_size: int, epochs: int, fold_in_epochs: int, seed: int
              ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """The chosen point refitted on train, then its users on train + val (items frozen)."""
    keras.utils.set_random_seed(seed)
    n_u, n_i = int(data["num_users"]), int(data["num_items"])
    t0 = time.perf_counter()
    model = _build(keras, keras_rs, n_u, n_i, dim, item_probabilities(data["train_item"], n_i),
                   seed)
    model.compile(optimizer=keras.optimizers.Adam(lr))
    _fit_epochs(model, data["train_user"], data["train_item"], batch_size, epochs)
    t1 = time.perf_counter()
    val_check = ranking_metrics(*_vectors(model), data["train_user"], data["train_item"],
                                data["val_user"], data["val_item"])
    t2 = time.perf_counter()
    model.item_tower.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(lr))
    _fit_epochs(model, np.r_[data["train_user"], data["val_user"]],
                np.r_[data["train_item"], data["val_item"]], batch_size, fold_in_epochs)
    t3 = time.perf_counter()
    users, items = _vectors(model)
    return users, items, {"train_s": t1 - t0, "fold_in_s": t3 - t2,
                          "fit_time_s": (t1 - t0) + (t3 - t2),
                          "val_ndcg@10_refit": val_check["ndcg@10"]}


def _atomic(path: str, write) -> None:
    """``write(file)`` into a temporary file beside ``path``, then renamed over it (this
    environment does not have recsys_jax.fileio)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="data.npz from kerasrs_peer.py export")
    parser.add_argument("--out", required=True, help="directory for vectors.npz, result.json")
    parser.add_argument("--dims", default="32,64,128")
    parser.add_argument("--lrs", default="0.001,0.003")
    parser.add_argument("--batch_size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--fold_in_epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras
    import keras_rs
    if keras.backend.backend() != "jax":
        raise SystemExit(f"KERAS_BACKEND is {keras.backend.backend()!r}; this peer runs on jax")

    with np.load(args.data, allow_pickle=False) as f:
        data = {k: f[k] for k in f.files}
    trials = []
    for dim in (int(d) for d in args.dims.split(",")):
        for lr in (float(x) for x in args.lrs.split(",")):
            trials.append(train_point(keras, keras_rs, data, dim=dim, lr=lr,
                                      batch_size=args.batch_size, epochs=args.epochs,
                                      patience=args.patience, seed=args.seed))
            print(f"dim {dim} lr {lr:g}: val NDCG@10 {trials[-1]['val_ndcg@10']:.4f} at epoch "
                  f"{trials[-1]['best_epoch']} ({trials[-1]['seconds']:.1f}s)", flush=True)
    chosen = max(trials, key=lambda t: t["val_ndcg@10"])  # ties: the earlier point
    users, items, timings = final_fit(
        keras, keras_rs, data, dim=chosen["dim"], lr=chosen["lr"], batch_size=args.batch_size,
        epochs=chosen["best_epoch"], fold_in_epochs=args.fold_in_epochs, seed=args.seed)
    os.makedirs(args.out, exist_ok=True)
    _atomic(os.path.join(args.out, "vectors.npz"), lambda f: np.savez(
        f, user_embeddings=users, item_embeddings=items))
    result = {"chosen": {k: chosen[k] for k in ("dim", "lr", "val_ndcg@10", "best_epoch")},
              "trials": [{k: v for k, v in t.items() if k != "history"} for t in trials],
              "tuning_s": sum(t["seconds"] for t in trials), **timings,
              "settings": {k: v for k, v in vars(args).items() if k not in ("data", "out")},
              "versions": {"keras": keras.__version__, "keras_rs": keras_rs.__version__,
                           "jax": __import__("jax").__version__},
              "split_fingerprint": str(data["split_fingerprint"])}
    _atomic(os.path.join(args.out, "result.json"),
            lambda f: f.write(json.dumps(result, indent=1).encode()))
    print(json.dumps({k: v for k, v in result.items() if k != "trials"}, indent=1))


if __name__ == "__main__":
    main()
