"""Optimizers and learning-rate schedules by config name.

Weight decay comes in two flavours, and they are not the same thing under Adam:

* ``adam`` (the seed's recipe, PyTorch ``Adam(weight_decay=wd)``): ``wd·θ`` is *added to the
  gradient* before Adam's moment estimates, i.e. L2 regularisation. The decay term is then
  rescaled per coordinate by Adam, so rarely-updated rows are decayed very differently from
  frequent ones. Built as ``chain(add_decayed_weights(wd), scale_by_adam, -lr)``.
* ``adamw`` (Loshchilov & Hutter): ``lr·wd·θ`` is subtracted from the parameters *after*
  Adam's update (decoupled decay), as ``optax.adamw``. The same ``wd`` number therefore means a
  much weaker pull than in ``adam``; the two are not interchangeable.

Both use ``scale_by_adam`` below: optax's Adam direction with one division per coordinate
instead of three (the order of Kingma & Ba's §2 remark and of PyTorch's ``Adam``). Its state is
optax's ``ScaleByAdamState``, so optimizer checkpoints keep their structure.

``adagrad`` and ``sgd`` take the gradient-L2 form like ``adam``. In every case the decay is
applied to the whole tables each step (also to rows absent from the batch), as PyTorch does with
dense gradients. Scalar parameters (the global mean, a temperature) are never decayed: shrinking
a location parameter towards 0 is not regularisation. For the classic-SVD penalty on only the
rows a rating uses, see ``training.l2_reg`` in ``losses.make_rating_loss``.

``optimizer.tables`` (``TABLE_OPTIMIZERS``) chooses how the model's embedding tables
(``tables.Table`` parameters) are updated: ``"dense"`` (the default) by the transform above like
every other parameter, or ``"lazy_adam"`` / ``"rowwise_adagrad"`` row-sparsely, only on the rows
each step reads, while the other parameters keep the transform above (``row_sparse``).
``make_model_optimizer`` builds the ``nnx.Optimizer`` for either.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from recsys_jax.training import sharding
from recsys_jax.training.row_sparse import TABLE_OPTIMIZERS, RowSparseOptimizer, make_table_rule
from recsys_jax.training.tables import table_paths

__all__ = ["OPTIMIZERS", "SCHEDULES", "TABLE_OPTIMIZERS", "make_model_optimizer",
           "make_optimizer", "make_schedule", "only_where", "scale_by_adam"]

SCHEDULES = ("constant", "cosine", "warmup_cosine", "step")
OPTIMIZERS = ("adam", "adamw", "adagrad", "sgd")


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
                  ) -> optax.GradientTransformation:
    """Adam's direction m̂ / (√v̂ + ε), the same as ``optax.scale_by_adam`` up to rounding.

    optax computes m̂ = m / (1 − β₁ᵗ) and v̂ = v / (1 − β₂ᵗ) as two full-size divisions and then
    divides again; here the two bias corrections are scalars folded into one division per
    coordinate: (m · (1 − β₁ᵗ)⁻¹) / (√v · (1 − β₂ᵗ)^−½ + ε), which is how PyTorch's ``Adam``
    orders it. Embedding tables updated densely every step make those divisions a large part of
    the update: on ML-100K MF this order took the CPU epoch from 27 to 24 ms
    (``python -m benchmarks.mf_epoch``; README, "PyTorch baseline").
    """
    def init_fn(params):
        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32),
                                      mu=optax.tree.zeros_like(params),
                                      nu=optax.tree.zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count = optax.safe_increment(state.count)
        t = count.astype(jnp.float32)
        mu_scale = 1.0 / (1.0 - b1 ** t)
        nu_scale = 1.0 / jnp.sqrt(1.0 - b2 ** t)
        updates = jax.tree.map(
            lambda m, v: (m * mu_scale.astype(m.dtype))
            / (jnp.sqrt(v) * nu_scale.astype(v.dtype) + eps), mu, nu)
        return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def _decay_mask(params: Any) -> Any:
    # Decay tables and vectors, not scalars.
    return jax.tree.map(lambda x: jnp.ndim(x) > 0, params)


def make_schedule(config: Mapping[str, Any], *, steps_per_epoch: int,
                  num_epochs: int) -> optax.Schedule:
    """The learning rate as a function of the optimizer step.

    Config fields: ``lr``; ``schedule`` (one of ``SCHEDULES``); for ``cosine`` and
    ``warmup_cosine`` the final rate is ``lr * min_lr_ratio`` after ``num_epochs`` epochs, and
    ``warmup_cosine`` rises linearly from 0 over ``warmup_epochs``; ``step`` multiplies the rate
    by ``decay_rate`` every ``decay_epochs`` epochs (PyTorch ``StepLR``).
    """
    lr = float(config["lr"])
    name = config.get("schedule", "constant")
    total_steps = max(1, steps_per_epoch * num_epochs)
    min_ratio = float(config.get("min_lr_ratio", 0.0))
    if name == "constant":
        return optax.constant_schedule(lr)
    if name == "cosine":
        return optax.cosine_decay_schedule(lr, decay_steps=total_steps, alpha=min_ratio)
    if name == "warmup_cosine":
        warmup = int(round(float(config.get("warmup_epochs", 1)) * steps_per_epoch))
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=lr, warmup_steps=min(warmup, total_steps - 1),
            decay_steps=total_steps, end_value=lr * min_ratio)
    if name == "step":
        return optax.exponential_decay(
            lr, transition_steps=max(1, int(config.get("decay_epochs", 1)) * steps_per_epoch),
            decay_rate=float(config.get("decay_rate", 0.5)), staircase=True)
    raise ValueError(f"unknown learning-rate schedule {name!r}; known: {SCHEDULES}")


def make_optimizer(config: Mapping[str, Any], *, steps_per_epoch: int, num_epochs: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Builds the optax transformation named by ``config["name"]`` and its schedule.

    Config fields: ``name`` (one of ``OPTIMIZERS``), ``lr``, ``weight_decay``, the schedule
    fields of ``make_schedule``, ``momentum`` for ``sgd`` and ``initial_accumulator`` for
    ``adagrad`` (default 0.1 as in optax and TensorFlow; PyTorch starts from 0).

    Returns:
      ``(tx, schedule)``; the schedule is returned so the loop can log the rate per epoch.
    """
    name = config["name"]
    schedule = make_schedule(config, steps_per_epoch=steps_per_epoch, num_epochs=num_epochs)
    wd = float(config.get("weight_decay", 0.0))
    if wd < 0:
        raise ValueError(f"weight_decay must be >= 0, got {wd}")
    if name == "adamw":
        return optax.chain(scale_by_adam(), optax.add_decayed_weights(wd, mask=_decay_mask),
                           optax.scale_by_learning_rate(schedule)), schedule
    if name == "adam":
        base = optax.chain(scale_by_adam(), optax.scale_by_learning_rate(schedule))
    elif name == "adagrad":
        base = optax.adagrad(schedule, initial_accumulator_value=float(
            config.get("initial_accumulator", 0.1)))
    elif name == "sgd":
        base = optax.sgd(schedule, momentum=float(config.get("momentum", 0.0)) or None)
    else:
        raise ValueError(f"unknown optimizer {name!r}; known: {OPTIMIZERS}")
    if wd == 0:
        return base, schedule
    return optax.chain(optax.add_decayed_weights(wd, mask=_decay_mask), base), schedule


def only_where(mask: Any) -> optax.GradientTransformation:
    """Zeroes the updates outside ``mask`` (a boolean tree shaped like the parameters, each leaf
    broadcastable to its parameter): those entries stay exact, ``θ + 0``."""
    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, m: jnp.where(m, u, jnp.zeros_like(u)), updates,
                            mask), state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def make_model_optimizer(model: nnx.Module, config: Mapping[str, Any], *, steps_per_epoch: int,
                         num_epochs: int, only: Any = None
                         ) -> tuple[nnx.Optimizer, optax.Schedule]:
    """The ``nnx.Optimizer`` of ``model`` for the optimizer block ``config``, and its schedule.

    ``config["tables"]`` (default ``"dense"``) chooses the kind: ``"dense"`` gives
    ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` with ``tx`` from ``make_optimizer`` (every
    parameter, tables included); ``"lazy_adam"`` and ``"rowwise_adagrad"`` give a
    ``row_sparse.RowSparseOptimizer``: that rule on the model's ``Table`` rows each step reads
    and ``tx`` on every other parameter.

    Args:
      model: the model to optimise.
      config: the optimizer block (``make_optimizer``'s fields and ``tables``).
      steps_per_epoch, num_epochs: for the schedule.
      only: optional boolean tree shaped like ``nnx.as_pure(nnx.state(model, nnx.Param))``,
        each leaf broadcastable to its parameter (for a table: ``(rows, 1, ...)`` or a scalar):
        entries outside it are never changed (fold-in).

    Raises:
      ValueError: for unknown names, or a row-sparse kind on a model without tables.
    """
    tx, schedule = make_optimizer(config, steps_per_epoch=steps_per_epoch,
                                  num_epochs=num_epochs)
    kind = config.get("tables", "dense")
    if kind not in TABLE_OPTIMIZERS:
        raise ValueError(f"unknown optimizer.tables {kind!r}; known: {TABLE_OPTIMIZERS}")

    def create(model: nnx.Module) -> nnx.Optimizer:
        if kind == "dense":
            dense_tx = tx if only is None else optax.chain(tx, only_where(only))
            return nnx.Optimizer(model, dense_tx, wrt=nnx.Param)
        rule = make_table_rule(config, schedule)
        if only is None:
            return RowSparseOptimizer(model, tx, rule)
        tables = set(table_paths(model))
        masks = dict(nnx.to_flat_state(only))
        dense_only = nnx.from_flat_state([(p, m) for p, m in masks.items() if p not in tables])
        rows_only = {p: jnp.reshape(m, m.shape[:1]) if jnp.ndim(m) else m
                     for p, m in masks.items() if p in tables}
        return RowSparseOptimizer(model, optax.chain(tx, only_where(dense_only)), rule,
                                  trainable_rows=rows_only)

    # On a mesh the state is created where it lives (a table's moments split as the table),
    # not whole on one device first.
    mesh = sharding.current_mesh()
    return (create(model) if mesh is None else sharding.create_on_mesh(create, mesh, model),
            schedule)
