"""A trained two-tower model over a large synthetic catalogue, for serving benchmarks.

MiniLM over a million titles would take hours on a CPU, and the generator's titles
("Synthetic Item 17 (1998)") carry no content anyway. So the item tower's content input is the
generator's *true item factors* (standing in for the title embedding: a dense vector per item
that carries its taste profile), plus the genre one-hot and release year; the user tower sees the
usual history statistics. The model is trained with the shared loop (in-batch softmax with logQ)
for a few epochs on the synthetic events, so the item embeddings have the shape of trained ones,
not of a random initialisation. The epoch kept is the best by recall@100 on the held-out last
event of a sample of users (full ranking over the whole catalogue).
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections
import numpy as np
import scipy.sparse as sp
from flax import nnx

from recsys_jax.data import ids, splits, synthetic
from recsys_jax.data.features import TwoTowerFeatures, build_two_tower_features
from recsys_jax.evaluation.evaluate import target_from_arrays
from recsys_jax.evaluation.interactions import interaction_matrix
from recsys_jax.evaluation.validators import RankingValidator
from recsys_jax.models.two_tower import TwoTower
from recsys_jax.tasks.retrieval_losses import make_retrieval_loss, sampling_log_q
from recsys_jax.training.loop import FitConfig, fit
from recsys_jax.training.optimizers import make_model_optimizer
from recsys_jax.training.steps import steps_per_epoch


@dataclasses.dataclass
class SyntheticCatalogue:
    """The trained model, its item embeddings and what serving needs."""

    model: TwoTower
    item_vectors: np.ndarray
    features: TwoTowerFeatures
    seen: sp.csr_array
    num_events: int
    val_recall: float | None


def train_synthetic_catalogue(*, num_users: int, num_items: int, num_interactions: int,
                              workdir: str | os.PathLike, epochs: int = 2,
                              hidden_dim: int = 256, dim: int = 128, batch_size: int = 2048,
                              lr: float = 1e-3, eval_users: int = 300,
                              seed: int = 0) -> SyntheticCatalogue:
    """Generates the data, builds features, trains the towers and exports the item vectors."""
    dataset, truth = synthetic.generate_synthetic_with_truth(num_users, num_items,
                                                             num_interactions, seed=seed)
    encoded, mapping = ids.encode_dataset(dataset)
    split = splits.make_split(encoded.interactions, "leave_one_out", seed=seed)
    train = split.train
    # Item ids are encoded in sorted order of the generator's ids (0..N-1): rows line up.
    features = build_two_tower_features(
        train, users=encoded.users, items=encoded.items, genre_names=encoded.genre_names,
        num_users=mapping.num_users, title_embeddings=truth.item_factors)
    model = TwoTower(features.user, features.item, rngs=nnx.Rngs(seed), hidden_dim=hidden_dim,
                     dim=dim)
    positives = {"user": train["user_id"].to_numpy(np.int32),
                 "item": train["item_id"].to_numpy(np.int32)}
    optimizer, schedule = make_model_optimizer(
        model, ml_collections.ConfigDict({"name": "adamw", "lr": lr, "weight_decay": 1e-4}),
        steps_per_epoch=steps_per_epoch(len(positives["user"]), batch_size), num_epochs=epochs)
    loss_fn = make_retrieval_loss(num_items=mapping.num_items,
                                  item_log_q=sampling_log_q(positives["item"],
                                                            mapping.num_items))
    # Validate on a sample of users only: full ranking of every user over 1M items is too slow.
    val = split.val
    sample = np.random.default_rng(seed).choice(val["user_id"].unique(),
                                                min(eval_users, val["user_id"].nunique()),
                                                replace=False)
    val = val[val["user_id"].isin(sample)]
    cols = lambda f: (f["user_id"].to_numpy(), f["item_id"].to_numpy())  # noqa: E731
    target = target_from_arrays(cols(train), cols(val), cols(split.test.iloc[:0]),
                                mapping.num_users, mapping.num_items, "val")
    validator = RankingValidator(target, ks=(100,), metrics=("hr", "recall", "ndcg"))
    result = fit(model, optimizer, loss_fn, positives, validator,
                 FitConfig(batch_size=batch_size, num_epochs=epochs, seed=seed,
                           monitor="val_recall@100", mode="max"),
                 workdir=workdir, schedule=schedule)
    seen = interaction_matrix(*cols(train), mapping.num_users, mapping.num_items)
    return SyntheticCatalogue(model=model, item_vectors=model.export_arrays()["item_embeddings"],
                              features=features, seen=seen, num_events=len(train),
                              val_recall=result.best_value)
