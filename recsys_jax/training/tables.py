"""Embedding tables read by id: the model-side declaration and the row gradients of a step.

A model declares each embedding table (a parameter whose rows are read by id) as a ``Table``, an
``nnx.Param`` subclass, and reads it with ``table.lookup(ids)``:

    self.item_embedding = Table(init(key, (num_items, dim)))
    ...
    q = self.item_embedding.lookup(items)          # == self.item_embedding[...][items]

Outside the row-sparse train step a ``Table`` is an ordinary parameter and ``lookup`` is exactly
``table[...][ids]``, so the dense optimizers (``optimizer.tables="dense"``, the default) train it
as before, bit for bit. Under a row-sparse optimizer (``row_sparse.RowSparseOptimizer``) the
train step calls ``value_and_row_grads`` instead of ``nnx.value_and_grad``:

1. the loss is traced once abstractly (``jax.eval_shape``: nothing runs) to learn the shape of
   every lookup;
2. the loss runs with every lookup returning ``table[ids] + δ``, δ a zero offset of the lookup's
   shape and a differentiated input, and handing out the ids it read; the gradient w.r.t. δ is
   the gradient of each row read;
3. per table, the ids and gradients of all its lookups are handed to the optimizer
   (``TableReads``), which sums the gradients of each distinct row (``sum_per_row``) before it
   updates it. Deduplication uses a scratch array of one int32 per table row that the optimizer
   keeps between steps (``row_slots``): each read writes its position into its row's slot and
   reads back the position that won, so all reads of a row agree on one representative. That is
   O(reads) with no sort (``jnp.unique``'s sort cost about 0.2 ms per table per step on a
   2-core CPU, most of a step at 1M rows), and the slots need no reset: a step reads back only
   the slots it wrote. A row whose summed gradient is exactly zero counts as not read: in
   practice it was read only by the weight-0 examples that pad an epoch's last batch, and must
   not be decayed or moved by them.

So the step never builds a table-sized gradient or temporary: everything it computes for a table
is O(rows read). Every other parameter (an ``nnx.Param`` that is not a ``Table``: towers, the
global mean) gets its ordinary gradient.

What a loss must do, checked where possible: read a table only through ``lookup``, or through
``all_rows`` for a read-out that is never differentiated (MF's mean-user fallback). Inside the
row-sparse step a table variable holds a guard instead of its array, so any other read
(``table[...]``, ``table.get_value()`` arithmetic) raises a ``TypeError`` naming the table
instead of silently training nothing. And it must make the same lookups (number and shapes) each
time it is traced for a given batch, which any function of ``(model, batch, rng)`` does, and make
them outside any ``jax.vmap`` / ``lax.scan`` of its own (JAX would then raise an escaped-tracer
error).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

# A table's path in the model's state, e.g. ("tower", "user_embedding").
TablePath = tuple[Any, ...]

# The mesh axis a table's rows are split over (``training.sharding``'s model axis).
ROW_AXIS = "model"


def row_sharding(ndim: int) -> tuple[str | None, ...]:
    """The partitioning of an array with one entry (or row) per table row: rows split over
    ``ROW_AXIS``, the rest of each row kept together."""
    return (ROW_AXIS,) + (None,) * (ndim - 1)


class Table(nnx.Param):
    """A parameter whose rows are read by id (an embedding table, a bias vector per id).

    Row-sparse optimizers update only the rows a step reads through ``lookup``; dense optimizers
    treat it as any ``nnx.Param``. The leading axis indexes rows; a row may be a vector (an
    embedding) or a scalar (a bias).

    The layout on a device mesh is declared here, once for every model: a table carries the
    Flax partitioning metadata ``out_sharding=("model", None, ...)`` (rows split over the mesh's
    model axis; ``training.sharding`` applies it, and ``nnx.Optimizer`` copies it to the
    table's optimizer moments), and ``num_rows``, its real row count (on a mesh whose model axis
    does not divide it the rows are padded; ``all_rows`` never shows the padding). The metadata
    is only a declaration (``eager_sharding=False``): a table is created where its value is, as
    any parameter, and without a mesh nothing changes.
    """

    def __init__(self, value: Any, **metadata: Any):
        """Args: the initial rows, and any ``nnx.Variable`` metadata (the defaults above can be
        overridden, e.g. ``out_sharding=None`` to replicate the table)."""
        shape = tuple(getattr(value, "shape", jnp.shape(value)))
        metadata.setdefault("out_sharding", row_sharding(len(shape)) if shape else None)
        metadata.setdefault("eager_sharding", False)
        metadata.setdefault("num_rows", shape[0] if shape else None)
        super().__init__(value, **metadata)

    def lookup(self, ids: jax.Array) -> jax.Array:
        """Rows ``ids`` of the table, shape ``ids.shape + row shape``: ``table[...][ids]``.

        Ids must be valid rows (as for any JAX gather, out-of-range ids are clamped silently).
        In the row-sparse step this is the read the step differentiates.
        """
        value = self.get_value()
        active = _ACTIVE_PASS.get()
        if isinstance(value, _Guard) and active is not None:
            return active.lookup(value, ids)
        return self[...][ids]

    def all_rows(self) -> jax.Array:
        """Every row, as a read-out no gradient flows through (``stop_gradient``), in every
        optimizer mode. For statistics over the table (the mean row); in the row-sparse step it
        costs a pass over the whole table on every step."""
        value = self.get_value()
        active = _ACTIVE_PASS.get()
        rows = active.tables[value.path] if isinstance(value, _Guard) and active is not None \
            else self[...]
        # A table padded for a mesh (training.sharding) has zero rows after its real ones.
        return jax.lax.stop_gradient(rows[:self.get_metadata("num_rows", rows.shape[0])])


# Every parameter that is not a table: what the dense optax transform of a row-sparse optimizer
# updates.
DENSE_PARAMS = nnx.All(nnx.Param, nnx.Not(Table))


def has_tables(model: nnx.Module) -> bool:
    """Whether ``model`` declares any ``Table`` parameter."""
    return bool(jax.tree.leaves(nnx.state(model, Table)))


def table_paths(model: nnx.Module) -> list[TablePath]:
    """The state paths of ``model``'s tables, in state order."""
    return [path for path, _ in nnx.to_flat_state(nnx.state(model, Table))]


class _Guard:
    """Stands in for a table's array inside the row-sparse step: any read other than ``lookup``
    or ``all_rows`` raises, so a model that indexes the table directly fails loudly."""

    def __init__(self, path: TablePath, shape: tuple[int, ...], dtype: Any):
        self.path, self.shape, self.dtype, self.ndim = path, shape, dtype, len(shape)

    def _refuse(self, *args: Any, **kwargs: Any):
        name = "/".join(str(p) for p in self.path)
        raise TypeError(
            f"the table {name!r} was read directly inside the row-sparse train step; a Table "
            "is read with table.lookup(ids) (rows the step differentiates) or table.all_rows() "
            "(a read-out without gradient). Read it that way in the model, or train with "
            "optimizer.tables='dense'.")

    __getitem__ = __array__ = __jax_array__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _refuse
    __matmul__ = __rmatmul__ = __truediv__ = __neg__ = _refuse


class _Pass:
    """The lookups of one trace of the loss inside the row-sparse step.

    ``offsets`` is ``None`` in the abstract pass that learns the lookups' shapes; otherwise it
    holds, per table, one zero offset per lookup, in lookup order."""

    def __init__(self, tables: Mapping[TablePath, jax.Array],
                 offsets: Mapping[TablePath, list[jax.Array]] | None):
        self.tables = tables
        self.offsets = offsets
        self.reads: dict[TablePath, list[jax.Array]] = {path: [] for path in tables}
        self.values: dict[TablePath, list[jax.Array]] = {path: [] for path in tables}

    def lookup(self, guard: _Guard, ids: jax.Array) -> jax.Array:
        ids = jnp.asarray(ids)
        table = self.tables[guard.path]
        # table[ids] clamps out-of-range ids; clamped explicitly and promised in bounds, XLA's
        # CPU gather skips its per-element bounds handling (the same rows, faster).
        ids = jnp.clip(ids, 0, table.shape[0] - 1)
        rows = table.at[ids].get(mode="promise_in_bounds")
        reads = self.reads[guard.path]
        if self.offsets is not None:
            offsets = self.offsets[guard.path]
            if len(reads) >= len(offsets) or offsets[len(reads)].shape != rows.shape:
                raise RuntimeError(
                    f"the loss read table {guard.path} differently in two traces of one step "
                    f"(lookup {len(reads)} of shape {rows.shape}); its lookups must depend on "
                    "the batch and rng only")
            self.values[guard.path].append(rows)
            rows = rows + offsets[len(reads)]
        reads.append(ids)
        return rows


_ACTIVE_PASS: contextvars.ContextVar[_Pass | None] = contextvars.ContextVar(
    "recsys_jax_table_pass", default=None)


class TableReads(NamedTuple):
    """Every read of one table in one step, not deduplicated.

    Attributes:
      ids: ``(reads,)`` int32, the row read by each lookup element, in lookup order.
      values: ``(reads,) + row shape``, the row each read returned (``table[ids]``), so the
        optimizer need not gather the rows again (on a CPU a gather of random rows costs about
        as much as the rest of an MF step's arithmetic).
      grads: ``(reads,) + row shape``, the loss's gradient with respect to each read.
    """

    ids: jax.Array
    values: jax.Array
    grads: jax.Array


class RowGrads(NamedTuple):
    """The gradient of one table in one step, on the distinct rows the step read.

    Attributes:
      rows: ``(reads,)`` int32: at one position per distinct row read (its representative), the
        row id; everywhere else the out-of-range id ``num_rows``, also in place of rows whose
        summed gradient is exactly zero (read only by weight-0 padding examples). Gathers from
        it must fill, scatters to it drop. Not sorted.
      grads: ``(reads,) + row shape``, each row's gradient summed over all its reads at its
        representative position; zero where ``rows`` is ``num_rows``.
    """

    rows: jax.Array
    grads: jax.Array


LossFn = Callable[[nnx.Module, Any, jax.Array], tuple[jax.Array, Any]]


def value_and_row_grads(loss_fn: LossFn, model: nnx.Module, batch: Any, rng: jax.Array
                        ) -> tuple[tuple[jax.Array, Any], nnx.State, dict[TablePath, TableReads]]:
    """The loss, the gradient of the dense parameters and the row gradients of the tables.

    Args:
      loss_fn: ``(model, batch, rng) -> (loss, aux)``.
      model: the model (not modified).
      batch, rng: the loss's other arguments.

    Returns:
      ``((loss, aux), dense_grads, reads)``: ``dense_grads`` is a ``State`` over
      ``DENSE_PARAMS`` (as ``nnx.value_and_grad`` would give for them); ``reads`` maps the path
      of each table the loss read to its ``TableReads`` (tables it did not read are absent).
    """
    graphdef, dense, tables, rest = nnx.split(model, DENSE_PARAMS, Table, ...)
    flat = list(nnx.to_flat_state(tables))
    values = {path: variable.get_value() for path, variable in flat}
    guarded = nnx.from_flat_state(
        [(path, variable.replace(_Guard(path, variable.shape, variable.dtype)))
         for path, variable in flat])

    def run(dense_params, offsets):
        active = _Pass(values, offsets)
        token = _ACTIVE_PASS.set(active)
        try:
            loss, aux = loss_fn(nnx.merge(graphdef, dense_params, guarded, rest), batch, rng)
        finally:
            _ACTIVE_PASS.reset(token)
        return loss, (aux, active.reads, active.values)

    read_shapes = jax.eval_shape(run, dense, None)[1][1]
    offsets = {path: [jnp.zeros(ids.shape + values[path].shape[1:], values[path].dtype)
                      for ids in reads] for path, reads in read_shapes.items()}
    (loss, (aux, reads, read_values)), (dense_grads, offset_grads) = jax.value_and_grad(
        run, argnums=(0, 1), has_aux=True)(dense, offsets)
    table_reads = {}
    for path, ids in reads.items():
        if ids:
            row_shape = values[path].shape[1:]

            def flat_rows(arrays, row_shape=row_shape):
                return jnp.concatenate([jnp.reshape(a, (-1,) + row_shape) for a in arrays])
            table_reads[path] = TableReads(
                jnp.concatenate([jnp.ravel(i).astype(jnp.int32) for i in ids]),
                flat_rows(read_values[path]), flat_rows(offset_grads[path]))
    return (loss, aux), dense_grads, table_reads


def sum_per_row(reads: TableReads, slots: jax.Array) -> tuple[RowGrads, jax.Array]:
    """The distinct rows of ``reads`` and each one's summed gradient, without sorting.

    Args:
      reads: one table's reads in a step.
      slots: ``(num_rows,)`` int32 scratch, one slot per table row, of any content (the
        optimizer's ``row_slots``; donated in the train step, so updated in place).

    Returns:
      ``(row_grads, slots)``: the ``RowGrads`` and the scratch to keep for the next step.
    """
    num_rows = slots.shape[0]
    positions = jnp.arange(reads.ids.shape[0], dtype=jnp.int32)
    # Duplicate ids race for their row's slot; whichever position wins, every read of the row
    # then reads back that same winner, its representative.
    slots = slots.at[reads.ids].set(positions, mode="drop")
    representative = slots.at[reads.ids].get(mode="fill", fill_value=0)
    summed = jax.ops.segment_sum(reads.grads, representative,
                                 num_segments=reads.ids.shape[0])
    # A row whose every read has a zero gradient counts as not read: in practice it is read only
    # by the weight-0 padding of an epoch's last batch, which must not decay or move it.
    informative = jnp.any(summed != 0, axis=tuple(range(1, summed.ndim)))
    rows = jnp.where((representative == positions) & informative, reads.ids, num_rows)
    return RowGrads(rows.astype(jnp.int32), summed), slots
