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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

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
