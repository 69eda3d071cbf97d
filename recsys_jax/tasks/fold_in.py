"""Fold-in: test users scored from their train + validation events, the item side frozen.

Training and model selection are unchanged: validation always scores user vectors fitted on
the training part. Before the test, each user with validation events has the *user side* of
the model (``contract.FoldIn.user_side_rows``: embeddings and user biases, for NeuMF the user
tables of both towers) refitted on their train + val rows, with the task's own loss, the
configured optimizer (fresh state; row-sparse tables too when ``optimizer.tables`` says so) and
batch size, for ``evaluation.fold_in_epochs`` epochs, starting from the trained values. Every
other parameter and every other row (items, μ, output and hidden layers, users without
validation events) is kept bit-identical: the optimizer's updates are zeroed outside the
user-side rows after every other transformation (weight decay included), so ``θ + 0`` leaves
them as they were (``optimizers.make_model_optimizer``'s ``only``).

A model fitted without gradients (``contract.UserRefit``: EASE, ItemKNN, iALS) sets those
users' user side from the same train + val events itself, in closed form (its stored event
rows, or one iALS user step), items frozen; ``fold_in_epochs`` does not apply to it. The
implicit task hands it the events with their timestamps (recency-weighted rows).

Config (``evaluation`` block): ``test_user_inputs`` (``"train+val"``, the default, or
``"train"``: no fold-in, the numbers of before), ``fold_in_epochs`` (default
``DEFAULT_FOLD_IN_EPOCHS``). The run records ``seen_parts`` and the summary
``test_user_inputs``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from recsys_jax.models.contract import FoldIn, UserRefit
from recsys_jax.training import steps as steps_lib
from recsys_jax.training.loop import DivergenceError, nonfinite_arrays
from recsys_jax.training.losses import LossFn
from recsys_jax.training.optimizers import make_model_optimizer

TEST_USER_INPUTS = ("train", "train+val")
DEFAULT_TEST_USER_INPUTS = "train+val"
# One pass over train + val: every event is seen once, and one epoch is the granularity at which
# early stopping judged the model, so the user side moves about as far as one more training
# epoch would. Not tuned: validation events are the fold-in data, and tuning on test would leak.
DEFAULT_FOLD_IN_EPOCHS = 1


def test_user_inputs(config: ml_collections.ConfigDict) -> str:
    """``evaluation.test_user_inputs`` (``"train+val"`` when absent).

    Raises:
      ValueError: for another value.
    """
    value = config.get("evaluation", {}).get("test_user_inputs", DEFAULT_TEST_USER_INPUTS)
    if value not in TEST_USER_INPUTS:
        raise ValueError(f"evaluation.test_user_inputs must be one of {TEST_USER_INPUTS}, got "
                         f"{value!r}")
    return value


def fold_in_epochs(config: ml_collections.ConfigDict) -> int:
    """``evaluation.fold_in_epochs`` (``DEFAULT_FOLD_IN_EPOCHS`` when absent)."""
    return int(config.get("evaluation", {}).get("fold_in_epochs", DEFAULT_FOLD_IN_EPOCHS))


def seen_parts(inputs: str) -> tuple[str, ...]:
    """The run's ``seen_parts`` for a ``test_user_inputs`` value (``"train+val"`` →
    ``("train", "val")``); also the retrieval task's ``features.test_user_events``."""
    return tuple(inputs.split("+"))


def fold_in_rows(train: Mapping[str, np.ndarray], val: Mapping[str, np.ndarray]
                 ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``(columns, users)``: the train + val rows of the users with validation events, and
    those users (sorted). Only these users gain information, so only they are refitted."""
    users = np.unique(np.asarray(val["user"]))
    keep = np.isin(np.asarray(train["user"]), users)
    columns = {name: np.concatenate([np.asarray(train[name])[keep], np.asarray(val[name])])
               for name in val}
    return columns, users


def _state_path(path: tuple) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/").removesuffix("/value")


def update_mask(model: nnx.Module, rows: Mapping[str, np.ndarray]) -> Any:
    """A boolean pytree shaped like ``nnx.as_pure(nnx.state(model, nnx.Param))`` (each leaf
    broadcastable to its parameter): True on the ``rows`` of the named parameters, False on
    everything else.

    Raises:
      ValueError: when ``rows`` names a parameter the model lacks or a mask of the wrong
        length.
    """
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    found = set()

    def leaf_mask(path, value):
        name = _state_path(path)
        if name not in rows:
            return jnp.zeros((), jnp.bool_)
        found.add(name)
        mask = np.asarray(rows[name], np.bool_)
        if mask.shape != value.shape[:1]:
            raise ValueError(f"{type(model).__name__}.user_side_rows gave a mask of shape "
                             f"{mask.shape} for {name!r} of shape {value.shape}")
        return jnp.asarray(mask.reshape(mask.shape + (1,) * (value.ndim - 1)))

    tree = jax.tree_util.tree_map_with_path(leaf_mask, params)
    missing = sorted(set(rows) - found)
    if missing:
        known = sorted(_state_path(p) for p, _ in jax.tree_util.tree_leaves_with_path(params))
        raise ValueError(f"{type(model).__name__}.user_side_rows names {missing}, which are not "
                         f"parameters of the model (they are: {known})")
    return tree


def fold_in(model: FoldIn, loss_fn: LossFn, columns: Mapping[str, np.ndarray],
            users: np.ndarray, *, optimizer: Mapping[str, Any], batch_size: int, epochs: int,
            seed: int) -> dict[str, Any]:
    """Refits the user side of ``users`` in place on ``columns`` (their train + val rows).

    Args:
      model: a trained ``contract.FoldIn`` model (its item side stays bit-identical).
      loss_fn: the task's loss on batches of ``columns``.
      columns: the rows to fit (``fold_in_rows``).
      users: the users whose user-side rows may change.
      optimizer: the config's optimizer block (a fresh optimizer state is used).
      batch_size, epochs, seed: as in training (``epochs`` ≥ 0; 0 changes nothing).

    Returns:
      JSON-able facts: users refitted, rows, epochs, seconds.

    Raises:
      DivergenceError: when the refit leaves NaN/inf in the model.
    """
    t0 = time.perf_counter()
    facts = {"users": int(len(users)), "rows": int(len(columns["user"])), "epochs": epochs}
    if epochs <= 0 or len(users) == 0:
        return {**facts, "time_s": 0.0}
    model.begin_fold_in(users)
    opt, _ = make_model_optimizer(
        model, optimizer, steps_per_epoch=steps_lib.steps_per_epoch(facts["rows"], batch_size),
        num_epochs=epochs, only=update_mask(model, model.user_side_rows(users)))
    graphdef, state = nnx.split((model, opt))
    run_epoch = steps_lib.make_train_epoch(graphdef, loss_fn, batch_size)
    data, key = jax.device_put(dict(columns)), jax.random.key(seed)
    for epoch in range(1, epochs + 1):
        state, _ = run_epoch(state, data, key, epoch)
    nnx.update((model, opt), state)
    bad = nonfinite_arrays(nnx.state(model))
    if bad:
        raise DivergenceError(f"fold-in left NaN/inf in {', '.join(bad[:6])}; lower "
                              "optimizer.lr or set evaluation.fold_in_epochs=0")
    facts["time_s"] = time.perf_counter() - t0
    logging.info("fold-in: refitted %d users on %d train+val rows in %.2fs", facts["users"],
                 facts["rows"], facts["time_s"])
    return facts


def fold_in_for_test(config: ml_collections.ConfigDict, model: Any, train: Mapping[str,
                     np.ndarray], val: Mapping[str, np.ndarray], loss_for: Any, *,
                     events: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]
                     | None = None) -> dict[str, Any]:
    """Applies the configured test-time inputs to ``model`` in place; returns the summary
    facts ``test_user_inputs`` (what the test users were scored from) and ``fold_in``.

    ``loss_for(columns)`` builds the task's loss for the fold-in rows. A ``contract.UserRefit``
    model refits itself from ``events`` (train and val columns with any extra columns it may
    read, e.g. ``timestamp``; ``(train, val)`` when not given). A model without
    ``contract.FoldIn`` or ``UserRefit`` keeps its train-only user side, and the facts say so.
    """
    inputs = test_user_inputs(config)
    if inputs == "train":
        return {"test_user_inputs": "train", "fold_in": None}
    if isinstance(model, UserRefit):
        columns, users = fold_in_rows(*(events or (train, val)))
        t0 = time.perf_counter()
        facts = dict(model.refit_users(columns, users))
        facts.update(users=int(len(users)), rows=int(len(columns["user"])), epochs=0,
                     time_s=time.perf_counter() - t0, closed_form=True)
        bad = nonfinite_arrays(nnx.state(model))
        if bad:
            raise DivergenceError(f"refitting the test users left NaN/inf in "
                                  f"{', '.join(bad[:6])}")
        return {"test_user_inputs": inputs, "fold_in": facts}
    if not isinstance(model, FoldIn):
        logging.warning("%s cannot fold in validation events (no contract.FoldIn): its test "
                        "users are scored from train only", type(model).__name__)
        return {"test_user_inputs": "train",
                "fold_in": f"not supported by {type(model).__name__}"}
    columns, users = fold_in_rows(train, val)
    t = config.training
    facts = fold_in(model, loss_for(columns), columns, users, optimizer=config.optimizer,
                    batch_size=t.batch_size, epochs=fold_in_epochs(config), seed=t.seed)
    return {"test_user_inputs": inputs, "fold_in": facts}


def describe(summary: Mapping[str, Any]) -> str:
    """One Markdown line for ``report.md``: what the test users were scored from."""
    facts = summary.get("fold_in")
    if isinstance(facts, dict) and facts.get("closed_form"):
        return (f"- test users scored from train + val: user side of {facts['users']:,} users "
                f"set from {facts['rows']:,} train + val rows without gradients, items frozen")
    if isinstance(facts, dict):
        return (f"- test users scored from train + val: user side of {facts['users']:,} users "
                f"refitted on {facts['rows']:,} train + val rows for {facts['epochs']} epoch(s), "
                "items frozen (fold-in)")
    why = f" ({facts})" if facts else ""
    return f"- test users scored from train only{why}"
