"""The JAX side of the two-tower benchmark: recsys_jax's training path for fixed epochs.

Uses the library's own pieces unchanged — ``build_model`` over the saved
``TwoTowerFeatures``, ``make_optimizer``, ``make_retrieval_loss`` / ``sampling_log_q`` exactly
as ``retrieval_experiment.train_two_tower`` calls them, the scanned on-device epoch
``steps.make_train_epoch`` (what ``loop.fit`` runs when the data fits on the device), and
``retrieval_experiment.use_test_inputs`` before exporting. Left out, as on the PyTorch side:
per-epoch validation, early stopping, checkpoints and ``metrics.jsonl``, so the comparison
measures the frameworks on the same fixed number of epochs. With ``epoch_embeddings`` every
epoch's embeddings (training-time user inputs, as ``RankingEvaluator`` would score them) are
exported between epochs, off the clock, for the benchmark to score on validation afterwards.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Mapping

import jax
import numpy as np
from flax import nnx

from recsys_jax.data.features import TwoTowerFeatures
from recsys_jax.models.registry import build_model
from recsys_jax.training import steps as steps_lib
from recsys_jax.training.optimizers import make_optimizer
from recsys_jax.training.retrieval_experiment import use_test_inputs
from recsys_jax.training.retrieval_losses import make_retrieval_loss, sampling_log_q
from recsys_torch_baseline.two_tower_training import EpochExports, TwoTowerFitRecord


def build_jax_two_tower(config: Any, features: TwoTowerFeatures, seed: int) -> nnx.Module:
    """The registry's two-tower over ``features``, initialised from ``seed`` (as
    ``train_two_tower`` does with ``training.seed``)."""
    return build_model(config.model, num_users=features.user.shape[0],
                       num_items=features.item.shape[0], train={},
                       rngs=nnx.Rngs(params=seed), features=features)


def initial_params(config: Any, features: TwoTowerFeatures, seed: int) -> dict[str, np.ndarray]:
    """The freshly initialised parameters, flat (``"user_tower/hidden/kernel"`` → array), for
    ``TorchTwoTower.load_jax_params``: the PyTorch runs start where the JAX run starts."""
    model = build_jax_two_tower(config, features, seed)
    return {"/".join(map(str, path)): np.asarray(value)
            for path, value in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def export_training_view(graphdef: nnx.GraphDef, state: nnx.State) -> dict[str, np.ndarray]:
    """``export_arrays()`` of the model in a split ``(model, optimizer)`` state, with the user
    inputs it holds (training-time until ``use_test_inputs``).

    The merged view only reads ``state`` (nothing is donated) and the result is NumPy copied
    off the device, so it stays valid after the next epoch donates ``state``.
    """
    model, _ = nnx.merge(graphdef, state)
    return {name: np.array(value, np.float32, copy=True)
            for name, value in model.export_arrays().items()}


def fit_jax_two_tower(config: Any, features: TwoTowerFeatures,
                      test_features: TwoTowerFeatures, positives: Mapping[str, np.ndarray], *,
                      seed: int, epochs: int, start: float | None = None,
                      epoch_embeddings: bool = False) -> TwoTowerFitRecord:
    """Trains recsys_jax's two-tower for ``epochs`` epochs and exports its embeddings.

    Args:
      config: the two-tower experiment config (``model``, ``loss``, ``optimizer``,
        ``training`` blocks).
      features: training-time inputs; test_features: the test users' inputs.
      positives: ``user``, ``item`` int32 columns of the training positives, with each
        pair's causal user inputs when the config trains on them (``prepare_retrieval_data``).
      seed: initialisation and shuffling seed (replaces ``training.seed``).
      epochs: epochs to train (replaces ``training.epochs``; no early stopping).
      start: ``time.perf_counter()`` the set-up time is measured from (default: now).
      epoch_embeddings: also export the embeddings after every epoch, with the training-time
        user inputs, outside the timed epochs (``TwoTowerFitRecord.epoch_user_embeddings``).
    """
    start = time.perf_counter() if start is None else start
    t, l = config.training, config.loss
    num_items = features.item.shape[0]
    train = {k: np.asarray(v) for k, v in positives.items()}
    model = build_jax_two_tower(config, features, seed)
    tx, _ = make_optimizer(config.optimizer, steps_per_epoch=steps_lib.steps_per_epoch(
        len(train["user"]), t.batch_size), num_epochs=epochs)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    loss_fn = make_retrieval_loss(
        num_items=num_items,
        item_log_q=sampling_log_q(train["item"], num_items) if l.logq else None,
        remove_accidental_hits=l.remove_accidental_hits,
        num_random_negatives=l.num_random_negatives)
    graphdef, state = nnx.split((model, optimizer))
    device_data = jax.device_put(train)
    key = jax.random.key(seed)
    jax.block_until_ready((state, device_data))
    setup_s = time.perf_counter() - start

    t0 = time.perf_counter()
    run_epoch = steps_lib.make_train_epoch(graphdef, loss_fn, t.batch_size).compile(
        state, device_data, key)
    compile_s = time.perf_counter() - t0

    history, exports = [], EpochExports(epochs)
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        state, metrics = run_epoch(state, device_data, key, np.int32(epoch))
        jax.block_until_ready(state)
        epoch_s = time.perf_counter() - t0
        loss = steps_lib.summarize_steps([jax.device_get(metrics)])["loss"]
        history.append({"epoch": epoch, "train_loss": loss, "epoch_time_s": epoch_s})
        if epoch_embeddings:
            exports.add(epoch, functools.partial(export_training_view, graphdef, state))
    # Set-up, compile and the epochs: the per-epoch exports are not training time.
    total_s = time.perf_counter() - start - exports.seconds
    t0 = time.perf_counter()
    model, _ = nnx.merge(graphdef, state)
    use_test_inputs(model, test_features)
    arrays = model.export_arrays()
    return TwoTowerFitRecord(
        variant="jax", setup_s=setup_s, compile_s=compile_s, history=history, total_s=total_s,
        export_s=time.perf_counter() - t0, temperature=float(model.temperature), **arrays,
        **exports.record_fields())
