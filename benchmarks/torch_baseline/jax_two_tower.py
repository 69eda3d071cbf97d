"""The JAX side of the two-tower benchmark: what a user runs, ``train_two_tower`` → ``loop.fit``.

``fit_jax_two_tower`` calls the library's own retrieval task, ``train_two_tower(config, data,
workdir=None)``: the registry's two-tower over the saved ``TwoTowerFeatures``, the configured
optimizer, the in-batch softmax (``make_retrieval_loss``, ``sampling_log_q``) and the shared
``loop.fit`` (scanned on-device epochs; validation recall@K by the evaluation suite inside its
epoch loop; the best validation epoch's state restored). For equal work across frameworks the
benchmark trains a fixed number of epochs: ``training.epochs`` is replaced and
``training.patience`` set to 0 (no early stopping). ``workdir=None``: no files are written.
Timings come from the ``FitResult`` plus the wall time around the call
(``harness.fit_timings``): time to the best validation epoch includes the in-loop validation.
The test export then switches to the test users' inputs (``set_user_inputs``), as
``run_two_tower_experiment`` does.

The retrieval task is imported here and nowhere else in ``benchmarks/`` (it moves to
``recsys_jax.tasks`` with the tasks refactor; re-point this one import).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from flax import nnx

from benchmarks import harness
from benchmarks.torch_baseline.two_tower_training import TwoTowerFitRecord
from recsys_jax.data.causal_events import CausalEventTables
from recsys_jax.data.features import TwoTowerFeatures
from recsys_jax.data.splits import Split
from recsys_jax.models.registry import build_model
from recsys_jax.tasks.pair_inputs import materialise_pair_inputs
from recsys_jax.tasks.retrieval import (
    RetrievalData,
    RetrievalTask,
    prepare_retrieval_data,
    train_two_tower,
)

__all__ = ["RetrievalData", "build_jax_two_tower", "fit_jax_two_tower", "initial_params",
           "load_retrieval_data", "monitor_name", "prepare_retrieval_data",
           "save_retrieval_data", "torch_positives"]

# The pair columns the JAX side trains on (``RetrievalData.train``).
JAX_PAIR_COLUMNS = ("user", "item", "event")


def monitor_name(config) -> str:
    """The validation metric the two-tower run early-stops on (``training.monitor``)."""
    return RetrievalTask().monitor(config)


def build_jax_two_tower(config: Any, features: TwoTowerFeatures, seed: int) -> nnx.Module:
    """The registry's two-tower over ``features``, initialised from ``seed`` (as
    ``train_two_tower`` does with ``training.seed``; the builder ignores the training
    columns)."""
    return build_model(config.model, num_users=features.user.shape[0],
                       num_items=features.item.shape[0], train={},
                       rngs=nnx.Rngs(params=seed), features=features)


def initial_params(config: Any, features: TwoTowerFeatures, seed: int) -> dict[str, np.ndarray]:
    """The freshly initialised parameters, flat (``"user_tower/hidden/kernel"`` → array), for
    ``TorchTwoTower.load_jax_params``: the PyTorch runs start where the JAX run starts."""
    model = build_jax_two_tower(config, features, seed)
    return {"/".join(map(str, path)): np.asarray(value)
            for path, value in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def torch_positives(data: RetrievalData) -> dict[str, np.ndarray]:
    """The training pairs as the PyTorch baseline takes them: ``data.train`` plus, with causal
    inputs, each pair's materialised ``user_features`` / ``history_ids`` / ``history_mask``
    (``CAUSAL_COLUMNS``), computed by the library's own step code from ``data.causal_events``
    (the baseline keeps its materialised per-pair rows)."""
    if data.causal_events is None:
        return dict(data.train)
    rows = materialise_pair_inputs(data.train["user"], data.train["event"], data.causal_events)
    return {**data.train, **rows}


def save_retrieval_data(data: RetrievalData, directory: Path) -> None:
    """What a JAX worker needs to rebuild ``data``: ``features.npz``, ``test_features.npz``,
    ``split/``, ``causal_events.npz`` (with causal inputs) and the positives
    (``positives.npz`` is written by the caller, with log q)."""
    data.features.save(directory / "features.npz")
    data.test_features.save(directory / "test_features.npz")
    data.split.save(directory / "split")
    if data.causal_events is not None:
        data.causal_events.save(directory / "causal_events.npz")


def load_retrieval_data(task: dict[str, Any]) -> RetrievalData:
    """The ``RetrievalData`` of a worker task (paths from ``save_retrieval_data``; the causal
    tables from ``causal_events.npz`` beside ``features.npz`` when present). The encoded data
    set itself is not reloaded (``encoded`` stays None): training and validation need only the
    split, the positives, the features and the causal tables."""
    with np.load(task["positives"]) as z:
        positives = {name: z[name] for name in z.files if name in JAX_PAIR_COLUMNS}
    split = Split.load(task["split"])
    features = TwoTowerFeatures.load(task["features"])
    tables_path = Path(task["features"]).parent / "causal_events.npz"
    causal = CausalEventTables.load(tables_path) if tables_path.exists() else None
    return RetrievalData(train=positives, num_users=features.user.shape[0],
                         num_items=features.item.shape[0], dataset="", split=split,
                         split_protocol=split.protocol, split_fingerprint=split.fingerprint(),
                         report_section="", features=features,
                         test_features=TwoTowerFeatures.load(task["test_features"]),
                         causal_events=causal,
                         train_tables=causal.arrays() if causal is not None else {})


def benchmark_config(config: Any, *, seed: int, epochs: int) -> ml_collections.ConfigDict:
    """A copy of ``config`` that trains exactly ``epochs`` epochs from ``seed``."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.training.seed = int(seed)
    config.training.epochs = int(epochs)
    config.training.patience = 0
    return config


def fit_jax_two_tower(config: Any, data: RetrievalData, *, seed: int,
                      epochs: int) -> TwoTowerFitRecord:
    """Trains recsys_jax's two-tower as ``train_two_tower`` does, for exactly ``epochs``
    epochs, and exports the embeddings of its best validation epoch with the test users'
    inputs.

    Args:
      config: the two-tower experiment config.
      data: the prepared data (``prepare_retrieval_data`` or ``load_retrieval_data``).
      seed: initialisation and shuffling seed (replaces ``training.seed``).
      epochs: epochs to train (replaces ``training.epochs``; no early stopping).
    """
    config = benchmark_config(config, seed=seed, epochs=epochs)
    t0 = time.perf_counter()
    model, result = train_two_tower(config, data, workdir=None)
    timings = harness.fit_timings(result, time.perf_counter() - t0)
    t0 = time.perf_counter()
    model.set_user_inputs(data.test_features)
    arrays = model.export_arrays()
    return TwoTowerFitRecord(
        variant="jax", **timings, best_val=result.best_value,
        export_s=time.perf_counter() - t0, temperature=float(model.temperature), **arrays)
