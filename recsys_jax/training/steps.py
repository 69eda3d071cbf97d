"""Compiled train steps: one step, a scan over stacked batches, and a whole on-device epoch.

The model and its ``nnx.Optimizer`` are split once (``nnx.split((model, optimizer))``) into a
static ``GraphDef`` and a ``State`` pytree; the functions here are pure ``jax.jit`` functions of
that state, which they donate (the caller must use the returned state, never the old one).

Randomness is a function of position, not of call order: the epoch's shuffle uses
``fold_in(fold_in(key, 0), epoch)`` and a step's rng ``fold_in(fold_in(key, 1), step)`` with
``step`` the optimizer's own step counter. A scanned epoch therefore performs exactly the updates
of the same steps run one by one, and a resumed run continues the sequence it was interrupted in.

Batching: an epoch is a permutation of all rows cut into ``ceil(n / batch_size)`` batches. The
last batch is padded up to ``batch_size`` with rows of weight 0 (the ``weight`` column every loss
averages with), so no rating is dropped and shapes stay static; like PyTorch's
``drop_last=False``, the short last batch is averaged over its real rows only.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from recsys_jax.training.losses import LossFn, batch_weight

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]
StepFn = Callable[[nnx.State, Batch, jax.Array], tuple[nnx.State, Metrics]]
EpochFn = Callable[[nnx.State, Batch, jax.Array, jax.Array], tuple[nnx.State, Metrics]]

_SHUFFLE_STREAM = 0
_STEP_STREAM = 1


def shuffle_key(key: jax.Array, epoch: int | jax.Array) -> jax.Array:
    """The key that orders epoch ``epoch``."""
    return jax.random.fold_in(jax.random.fold_in(key, _SHUFFLE_STREAM), epoch)


def step_key(key: jax.Array, step: int | jax.Array) -> jax.Array:
    """The rng handed to the loss at optimizer step ``step``."""
    return jax.random.fold_in(jax.random.fold_in(key, _STEP_STREAM), step)


def steps_per_epoch(num_rows: int, batch_size: int) -> int:
    """Batches per epoch when no row is dropped."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return max(1, math.ceil(num_rows / batch_size))


def epoch_order(key: jax.Array, epoch: int | jax.Array, num_rows: int) -> jax.Array:
    """The row permutation of epoch ``epoch``."""
    return jax.random.permutation(shuffle_key(key, epoch), num_rows)


def gather_batches(data: Batch, order: jax.Array, batch_size: int) -> dict[str, jax.Array]:
    """Rows ``order`` of every column, padded and reshaped to ``(steps, batch_size, ...)``.

    Works on JAX arrays (inside ``jit``) and on NumPy arrays (host-side streaming); adds the
    ``weight`` column (times any existing one) that zeroes the padding.
    """
    xp = jnp if isinstance(order, jax.Array) else np
    n = order.shape[0]
    steps = steps_per_epoch(n, batch_size)
    pad = steps * batch_size - n
    index = xp.concatenate([order, xp.zeros((pad,), order.dtype)])
    valid = xp.concatenate([xp.ones((n,), xp.float32), xp.zeros((pad,), xp.float32)])
    out = {name: xp.take(col, index, axis=0).reshape((steps, batch_size) + col.shape[1:])
           for name, col in data.items()}
    valid = valid.reshape(steps, batch_size)
    out["weight"] = out["weight"] * valid if "weight" in out else valid
    return out


def epoch_batches(data: Batch, key: jax.Array, epoch: int | jax.Array,
                  batch_size: int) -> dict[str, jax.Array]:
    """Epoch ``epoch``'s shuffled, padded batches ``(steps, batch_size, ...)``."""
    n = next(iter(data.values())).shape[0]
    return gather_batches(data, epoch_order(key, epoch, n), batch_size)


def _train_step(graphdef: nnx.GraphDef, loss_fn: LossFn, state: nnx.State, batch: Batch,
                key: jax.Array) -> tuple[nnx.State, Metrics]:
    model, optimizer = nnx.merge(graphdef, state)
    rng = step_key(key, optimizer.step[...])
    (loss, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, batch, rng)
    optimizer.update(model, grads)
    metrics = {"loss": loss, **aux, "weight": jnp.sum(batch_weight(batch))}
    return nnx.state((model, optimizer)), metrics


def _scan_steps(graphdef: nnx.GraphDef, loss_fn: LossFn, state: nnx.State, batches: Batch,
                key: jax.Array) -> tuple[nnx.State, Metrics]:
    def body(state, batch):
        return _train_step(graphdef, loss_fn, state, batch, key)
    return jax.lax.scan(body, state, batches)


def make_train_step(graphdef: nnx.GraphDef, loss_fn: LossFn) -> StepFn:
    """``step(state, batch, key) -> (state, metrics)``: one update, jitted, state donated."""
    return jax.jit(lambda state, batch, key: _train_step(graphdef, loss_fn, state, batch, key),
                   donate_argnums=0)


def make_train_steps(graphdef: nnx.GraphDef, loss_fn: LossFn) -> StepFn:
    """``steps(state, batches, key) -> (state, metrics)``: a ``lax.scan`` over the leading axis
    of stacked batches (for data streamed from the host in chunks); metrics are per step."""
    return jax.jit(lambda state, batches, key: _scan_steps(graphdef, loss_fn, state, batches,
                                                           key),
                   donate_argnums=0)


def make_train_epoch(graphdef: nnx.GraphDef, loss_fn: LossFn, batch_size: int) -> EpochFn:
    """``epoch_fn(state, data, key, epoch) -> (state, metrics)``: one compiled call per epoch.

    ``data`` holds all training columns on the device; the function shuffles them with the
    epoch's key, pads and reshapes them into batches and scans the train step over them.
    ``epoch`` is traced, so every epoch reuses one compilation. Metrics are per step.
    """
    def epoch_fn(state, data, key, epoch):
        return _scan_steps(graphdef, loss_fn, state, epoch_batches(data, key, epoch, batch_size),
                           key)
    return jax.jit(epoch_fn, donate_argnums=0)


def host_epoch_chunks(data: Mapping[str, np.ndarray], key: jax.Array, epoch: int,
                      batch_size: int, chunk_steps: int) -> Iterator[dict[str, np.ndarray]]:
    """The batches of ``epoch_batches``, built on the host and yielded ``chunk_steps`` at a time.

    For training data too large for the device: the same permutation (computed by JAX), so a
    streamed epoch performs the same updates as an on-device one.
    """
    n = len(next(iter(data.values())))
    order = np.asarray(epoch_order(key, epoch, n))
    rows_per_chunk = chunk_steps * batch_size
    for start in range(0, n, rows_per_chunk):
        yield gather_batches(data, order[start:start + rows_per_chunk], batch_size)


def summarize_steps(step_metrics: list[Mapping[str, np.ndarray]]) -> dict[str, float]:
    """Weighted (by real rows) means over all steps of one epoch's per-step metrics."""
    stacked = {name: np.concatenate([np.asarray(m[name], np.float64).reshape(-1)
                                     for m in step_metrics])
               for name in step_metrics[0]}
    weight = stacked.pop("weight")
    total = max(float(weight.sum()), 1e-12)
    return {name: float((values * weight).sum() / total) for name, values in stacked.items()}
