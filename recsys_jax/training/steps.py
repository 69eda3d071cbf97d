"""Compiled train steps: one step, a scan over stacked batches, and a whole on-device epoch.

The model and its ``nnx.Optimizer`` are split once (``nnx.split((model, optimizer))``) into a
static ``GraphDef`` and a ``State`` pytree; the functions here are pure ``jax.jit`` functions of
that state, which they donate (the caller must use the returned state, never the old one).
With a ``row_sparse.RowSparseOptimizer`` a step differentiates the rows of the model's tables
that it reads instead of whole tables (``tables.value_and_row_grads``) and updates only those.

Randomness is a function of position, not of call order: the epoch's shuffle uses
``fold_in(fold_in(key, 0), epoch)`` and a step's rng ``fold_in(fold_in(key, 1), step)`` with
``step`` the optimizer's own step counter. A scanned epoch therefore performs exactly the updates
of the same steps run one by one, and a resumed run continues the sequence it was interrupted in.

The epoch's row order is ``jax.random.permutation(shuffle_key(key, epoch), n)``. On the CPU
backend ``epoch_order`` computes that same permutation with NumPy's sort instead of XLA's: for
80 000 rows XLA:CPU's sort took 29 ms of a 55 ms ML-100K MF epoch, NumPy's about 1.6 ms (see
``python -m benchmarks.epoch_order_cost``). That is why the scanned epoch takes the order as an
input rather than drawing it inside ``jit``.

Batching: an epoch is a permutation of all rows cut into ``ceil(n / batch_size)`` batches. The
last batch is padded up to ``batch_size`` with rows of weight 0 (the ``weight`` column every loss
averages with), so no rating is dropped and shapes stay static; like PyTorch's
``drop_last=False``, the short last batch is averaged over its real rows only.

Tables: arrays that every step reads whole rather than row by row (e.g. the per-event tables a
training pair's columns point into, ``data.causal_events``) are passed to the compiled calls as
arguments, never gathered into batches, and the loss sees them in its batch next to the rows'
columns, by name.

On a device mesh (``layout``, a ``sharding.Layout`` of the state) the functions are the same
programs with the state pinned to its layout (tables' rows split over the model axis, the rest
replicated) and every batch split over the data axis (``with_sharding_constraint``); XLA's SPMD
partitioner turns the one global program into per-device programs. Losses see the global batch,
so a loss that mixes examples (the in-batch softmax) is computed over all of it, as on one
device. Without a layout nothing is constrained: the one-device programs are unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from recsys_jax.data.columns import num_rows
from recsys_jax.training.losses import LossFn, batch_weight
from recsys_jax.training.row_sparse import RowSparseOptimizer
from recsys_jax.training.sharding import Layout
from recsys_jax.training.tables import value_and_row_grads

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]
StepFn = Callable[[nnx.State, Batch, jax.Array], tuple[nnx.State, Metrics]]

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


# jax.random.permutation sorts by fresh 32-bit random keys ceil(3·ln n / ln(2³²-1)) times
# (jax/_src/random/core.py, ``_shuffle``); the host path below repeats exactly those rounds.
_PERMUTATION_ROUND_EXPONENT = 3


def _permutation_rounds(num_rows: int) -> int:
    uint32_max = float(np.iinfo(np.uint32).max)
    return int(np.ceil(_PERMUTATION_ROUND_EXPONENT * np.log(max(1, num_rows))
                       / np.log(uint32_max)))


@functools.partial(jax.jit, static_argnames="num_rows")
def _permutation_sort_keys(key: jax.Array, epoch: int | jax.Array, num_rows: int) -> jax.Array:
    """The random sort keys of each round of ``jax.random.permutation``, ``(rounds, num_rows)``."""
    key = shuffle_key(key, epoch)
    rounds = []
    for _ in range(_permutation_rounds(num_rows)):
        key, subkey = jax.random.split(key)
        rounds.append(jax.random.bits(subkey, (num_rows,), jnp.uint32))
    return jnp.stack(rounds) if rounds else jnp.zeros((0, num_rows), jnp.uint32)


@functools.partial(jax.jit, static_argnames="num_rows")
def _device_permutation(key: jax.Array, epoch: int | jax.Array, num_rows: int) -> jax.Array:
    return jax.random.permutation(shuffle_key(key, epoch), num_rows)


def _host_permutation(key: jax.Array, epoch: int | jax.Array, num_rows: int) -> np.ndarray:
    order = np.arange(num_rows, dtype=np.int32)
    position = np.arange(num_rows, dtype=np.uint64)
    for sort_keys in np.asarray(_permutation_sort_keys(key, epoch, num_rows)):
        # Sorting (key << 32 | position) is lax.sort_key_val's stable sort by key; NumPy sorts
        # 64-bit integers with SIMD, far faster than a stable argsort of the 32-bit keys.
        packed = np.sort((sort_keys.astype(np.uint64) << np.uint64(32)) | position)
        order = order[(packed & np.uint64(0xFFFFFFFF)).astype(np.intp)]
    return order


def epoch_order(key: jax.Array, epoch: int | jax.Array, num_rows: int) -> jax.Array | np.ndarray:
    """The row permutation of epoch ``epoch``, int32: ``jax.random.permutation(shuffle_key(key,
    epoch), num_rows)``, computed on the host with NumPy when JAX runs on the CPU (same result,
    an order of magnitude faster there) or in several processes (each computes the same order
    on its host, where it builds its part of every batch), as a device array otherwise."""
    if jax.default_backend() == "cpu" or jax.process_count() > 1:
        return _host_permutation(key, epoch, num_rows)
    return _device_permutation(key, epoch, num_rows)


def gather_batches(data: Batch, order: jax.Array | np.ndarray, batch_size: int,
                   rows: slice | None = None) -> dict[str, jax.Array]:
    """Rows ``order`` of every column, padded and reshaped to ``(steps, batch_size, ...)``.

    Works on JAX arrays (inside ``jit``; also when only some inputs are) and on NumPy arrays
    (host-side streaming); adds the ``weight`` column (times any existing one) that zeroes the
    padding. ``rows`` keeps only those positions of every batch, ``(steps, rows, ...)`` (a
    process's part of each global batch, ``sharding.process_batch_rows``).
    """
    on_device = isinstance(order, jax.Array) or any(isinstance(c, jax.Array)
                                                    for c in data.values())
    xp = jnp if on_device else np
    n = order.shape[0]
    steps = steps_per_epoch(n, batch_size)
    pad = steps * batch_size - n
    index = xp.concatenate([order, xp.zeros((pad,), order.dtype)]).reshape(steps, batch_size)
    valid = xp.concatenate([xp.ones((n,), xp.float32), xp.zeros((pad,), xp.float32)]
                           ).reshape(steps, batch_size)
    if rows is not None:  # Cut to those positions first, so only their rows are gathered.
        index, valid = index[:, rows], valid[:, rows]
    out = {name: xp.take(col, index.reshape(-1), axis=0).reshape(index.shape + col.shape[1:])
           for name, col in data.items()}
    out["weight"] = out["weight"] * valid if "weight" in out else valid
    return out


def epoch_batches(data: Batch, key: jax.Array, epoch: int | jax.Array,
                  batch_size: int) -> dict[str, jax.Array]:
    """Epoch ``epoch``'s shuffled, padded batches ``(steps, batch_size, ...)``."""
    n = next(iter(data.values())).shape[0]
    return gather_batches(data, epoch_order(key, epoch, n), batch_size)


def _train_step(graphdef: nnx.GraphDef, loss_fn: LossFn, state: nnx.State, batch: Batch,
                key: jax.Array, layout: Layout | None = None) -> tuple[nnx.State, Metrics]:
    model, optimizer = nnx.merge(graphdef, state)
    rng = step_key(key, optimizer.step[...])
    if isinstance(optimizer, RowSparseOptimizer):
        # Tables: gradients of the rows read only (tables.py); the rest as below.
        (loss, aux), grads, reads = value_and_row_grads(loss_fn, model, batch, rng)
        optimizer.update(model, grads, reads=reads)
    else:
        (loss, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, batch, rng)
        optimizer.update(model, grads)
    metrics = {"loss": loss, **aux, "weight": jnp.sum(batch_weight(batch))}
    state = nnx.state((model, optimizer))
    return (state if layout is None else layout.constrain(state)), metrics


def with_tables(batch: Batch, tables: Batch | None) -> Batch:
    """The loss's view of a batch: the rows' columns plus the ``tables`` by name."""
    return {**tables, **batch} if tables else batch


def _split_batch(batch: Batch, layout: Layout | None, batch_axis: int = 0) -> Batch:
    return batch if layout is None else layout.constrain_batch(batch, batch_axis)


def _scan_steps(graphdef: nnx.GraphDef, loss_fn: LossFn, state: nnx.State, batches: Batch,
                key: jax.Array, tables: Batch | None = None,
                layout: Layout | None = None) -> tuple[nnx.State, Metrics]:
    def body(state, batch):
        return _train_step(graphdef, loss_fn, state,
                           with_tables(_split_batch(batch, layout), tables), key, layout)
    return jax.lax.scan(body, state, _split_batch(batches, layout, batch_axis=1))


def make_train_step(graphdef: nnx.GraphDef, loss_fn: LossFn,
                    layout: Layout | None = None) -> StepFn:
    """``step(state, batch, key, tables=None) -> (state, metrics)``: one update, jitted, state
    donated (on ``layout``'s mesh when given: the state padded and placed by
    ``layout.shard``)."""
    return jax.jit(lambda state, batch, key, tables=None: _train_step(
        graphdef, loss_fn, state, with_tables(_split_batch(batch, layout), tables), key,
        layout), donate_argnums=0)


def make_train_steps(graphdef: nnx.GraphDef, loss_fn: LossFn,
                     layout: Layout | None = None) -> StepFn:
    """``steps(state, batches, key, tables=None) -> (state, metrics)``: a ``lax.scan`` over the
    leading axis of stacked batches (for data streamed from the host in chunks); metrics are
    per step."""
    return jax.jit(lambda state, batches, key, tables=None: _scan_steps(
        graphdef, loss_fn, state, batches, key, tables, layout), donate_argnums=0)


@dataclasses.dataclass(frozen=True)
class TrainEpoch:
    """``epoch_fn(state, data, key, epoch, tables=None) -> (state, metrics)``: one compiled call
    per epoch.

    ``data`` holds all training columns on the device (``tables``, if any, too: see the module
    docstring). A call draws the epoch's row order (``epoch_order``) and runs
    ``scan(state, data, order, key, tables)``, which gathers the rows into padded batches and
    scans the train step over them; metrics are per step. The order is an input, so every
    epoch reuses one compilation.

    Attributes:
      scan: the jitted ``(state, data, order, key, tables) -> (state, metrics)``, state
        donated, or its compiled form after ``compile``.
    """

    scan: Callable[..., tuple[nnx.State, Metrics]]

    def __call__(self, state: nnx.State, data: Batch, key: jax.Array,
                 epoch: int | jax.Array, tables: Batch | None = None
                 ) -> tuple[nnx.State, Metrics]:
        order = epoch_order(key, epoch, num_rows(data))
        return self.scan(state, data, order, key, tables)

    def compile(self, state: nnx.State, data: Batch, key: jax.Array,
                tables: Batch | None = None) -> TrainEpoch:
        """The same epoch compiled ahead of time for these shapes (to time compilation apart)."""
        order = jax.ShapeDtypeStruct((num_rows(data),), jnp.int32)
        return TrainEpoch(self.scan.lower(state, data, order, key, tables).compile())


def make_train_epoch(graphdef: nnx.GraphDef, loss_fn: LossFn, batch_size: int,
                     layout: Layout | None = None) -> TrainEpoch:
    """The scanned on-device epoch of ``graphdef``'s model under ``loss_fn``; see ``TrainEpoch``.
    With a ``layout`` the data and tables are replicated on its mesh and each batch is split
    over the data axis."""
    def scan(state, data, order, key, tables=None):
        return _scan_steps(graphdef, loss_fn, state, gather_batches(data, order, batch_size),
                           key, tables, layout)
    return TrainEpoch(jax.jit(scan, donate_argnums=0))


def host_epoch_chunks(data: Mapping[str, np.ndarray], key: jax.Array, epoch: int,
                      batch_size: int, chunk_steps: int, rows: slice | None = None
                      ) -> Iterator[dict[str, np.ndarray]]:
    """The batches of ``epoch_batches``, built on the host and yielded ``chunk_steps`` at a time.

    For training data too large for the device: the same permutation (computed by JAX), so a
    streamed epoch performs the same updates as an on-device one. ``rows``: only those
    positions of every batch (``gather_batches``).
    """
    n = len(next(iter(data.values())))
    order = np.asarray(epoch_order(key, epoch, n))
    rows_per_chunk = chunk_steps * batch_size
    for start in range(0, n, rows_per_chunk):
        yield gather_batches(data, order[start:start + rows_per_chunk], batch_size, rows)


def summarize_steps(step_metrics: list[Mapping[str, np.ndarray]]) -> dict[str, float]:
    """Weighted (by real rows) means over all steps of one epoch's per-step metrics."""
    stacked = {name: np.concatenate([np.asarray(m[name], np.float64).reshape(-1)
                                     for m in step_metrics])
               for name in step_metrics[0]}
    weight = stacked.pop("weight")
    total = max(float(weight.sum()), 1e-12)
    return {name: float((values * weight).sum() / total) for name, values in stacked.items()}
