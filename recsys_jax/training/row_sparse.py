"""Row-sparse optimizers for ``Table`` parameters: lazy Adam and row-wise Adagrad.

A ``RowSparseOptimizer`` is an ``nnx.Optimizer`` in two parts. Its optax transform (the
configured dense optimizer) updates every parameter that is not a table
(``tables.DENSE_PARAMS``: towers, the global mean). Its ``TableRule`` updates, in each table, only
the rows the step read (``tables.value_and_row_grads``): it gathers those rows and their
optimizer state, computes their new values and scatters them back, the padding ids dropped.
Rows the step did not read, and their optimizer state, stay exactly as they were, and nothing
the step computes for a table is table-sized apart from the in-place update itself.

The rules (``optimizer.tables``, ``TABLE_OPTIMIZERS``; lr is the optimizer's schedule at the
global step, wd its ``weight_decay``):

* ``lazy_adam``: Adam whose moments and decay touch only the rows read (TensorFlow Addons'
  ``LazyAdam``, PyTorch's ``SparseAdam``); like both, the bias correction uses the global step
  count t, not a per-row count:

      g ← g + wd·θ;  m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²
      θ ← θ − lr · (m / (1−β₁ᵗ)) / (√v / √(1−β₂ᵗ) + ε)

  This is the arithmetic of the dense ``optimizers.scale_by_adam`` in the same order, so when a
  step reads every row, lazy Adam is the dense ``adam`` (L2 in the gradient). With
  ``optimizer.name = "adamw"`` the decay is decoupled instead, as the dense ``adamw`` does it,
  on the rows read: g is not decayed and θ ← θ − lr · (m̂ / (√v̂ + ε) + wd·θ) (lazy AdamW: when
  a step reads every row, the dense ``adamw``). Against
  ``SparseAdam`` (tested step for step) two differences remain, both far below a step: ε is added
  to √v̂ as in PyTorch's dense ``Adam`` (``SparseAdam`` and ``LazyAdam`` add it to √v), and the
  bias corrections are computed in float32 as optax does (``SparseAdam``: float64).
* ``rowwise_adagrad``: one accumulator per row, growing by the mean over the row of g²
  (TorchRec's / FBGEMM's ``EXACT_ROWWISE_ADAGRAD``, the usual choice for large tables):

      g ← g + wd·θ;  a ← a + mean(g²);  θ ← θ − lr · g / (√a + ε)

  with a starting at 0 as in FBGEMM (on ML-100K a start of 0.1, the dense ``adagrad``'s, lost
  on validation in every setting tried: it damps the first steps of every row). One float per
  row instead of Adam's two per coordinate.

Weight decay is L2 added to the gradient of each distinct row a step reads, once per step
however many times the batch reads the row. Rows a step does not read are not decayed: unlike the
dense optimizers, which decay every row on every step, the pull towards zero of a rarely read row
is weaker (lazy decay).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from flax.nnx.training.optimizer import OptVariable

from recsys_jax.training.tables import (
    DENSE_PARAMS,
    Table,
    TablePath,
    TableReads,
    has_tables,
    row_sharding,
    sum_per_row,
)

TABLE_OPTIMIZERS = ("dense", "lazy_adam", "rowwise_adagrad")

# Adam's constants (optimizers.scale_by_adam's defaults, PyTorch's) and FBGEMM's row-wise ε.
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8
ROWWISE_ADAGRAD_EPS = 1e-8

RowState = dict[str, jax.Array]


class TableRule(NamedTuple):
    """How a row-sparse optimizer updates the rows of a table a step read.

    Attributes:
      init: ``table -> {name: array}``, the optimizer state of a table, each array with one
        entry (or row) per table row.
      update: ``(rows, grads, state_rows, step) -> (new_rows, new_state_rows)`` on the gathered
        rows (``(reads,) + row shape``), their summed gradients and state; ``step`` is the
        global step count before this step (0 on the first).
    """

    init: Callable[[jax.Array], RowState]
    update: Callable[[jax.Array, jax.Array, RowState, jax.Array],
                     tuple[jax.Array, RowState]]


def _l2(grads: jax.Array, rows: jax.Array, weight_decay: float) -> jax.Array:
    # optax.add_decayed_weights' order (g + wd·θ), skipped at 0 as it skips it.
    return grads if weight_decay == 0 else grads + weight_decay * rows


def _apply(rows: jax.Array, direction: jax.Array, learning_rate: optax.Schedule,
           step: jax.Array) -> jax.Array:
    # optax.scale_by_learning_rate then optax.apply_updates, in their order.
    step_size = jnp.array(-1 * learning_rate(step), dtype=direction.dtype)
    return optax.apply_updates(rows, step_size * direction)


def lazy_adam(learning_rate: optax.Schedule, weight_decay: float = 0.0, b1: float = ADAM_B1,
              b2: float = ADAM_B2, eps: float = ADAM_EPS, decoupled: bool = False) -> TableRule:
    """Lazy Adam with L2 weight decay, or with ``decoupled`` AdamW's decay (see the module
    docstring)."""
    def init(table: jax.Array) -> RowState:
        # Both moments of a row side by side in one flat row, (rows, 2 × row size): the step
        # gathers and scatters them as one row. On XLA's CPU gather a flat (rows, 128) layout
        # was 2-2.5× faster than (rows, 2, 64), and one gather faster than two.
        return {"moments": jnp.zeros((table.shape[0], 2 * _row_size(table)), table.dtype)}

    def update(rows, grads, state, step):
        if not decoupled:
            grads = _l2(grads, rows, weight_decay)
        moments = jnp.reshape(state["moments"], (-1, 2) + grads.shape[1:])
        mu = optax.tree.update_moment(grads, moments[:, 0], b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(grads, moments[:, 1], b2, 2)
        t = optax.safe_increment(step.astype(jnp.int32)).astype(jnp.float32)
        mu_scale = (1.0 / (1.0 - b1 ** t)).astype(mu.dtype)
        nu_scale = (1.0 / jnp.sqrt(1.0 - b2 ** t)).astype(nu.dtype)
        direction = (mu * mu_scale) / (jnp.sqrt(nu) * nu_scale + eps)
        if decoupled and weight_decay:
            # optax.add_decayed_weights after the Adam direction, as the dense adamw chains it.
            direction = direction + weight_decay * rows
        moments = jnp.stack([mu, nu], axis=1)
        return (_apply(rows, direction, learning_rate, step),
                {"moments": jnp.reshape(moments, (moments.shape[0], -1))})

    return TableRule(init, update)


def _row_size(table: jax.Array) -> int:
    return int(np.prod(table.shape[1:], dtype=np.int64))


def rowwise_adagrad(learning_rate: optax.Schedule, weight_decay: float = 0.0,
                    initial_accumulator: float = 0.0, eps: float = ROWWISE_ADAGRAD_EPS
                    ) -> TableRule:
    """Row-wise Adagrad with L2 weight decay (see the module docstring)."""
    def init(table: jax.Array) -> RowState:
        return {"accumulator": jnp.full(table.shape[:1], initial_accumulator, table.dtype)}

    def update(rows, grads, state, step):
        grads = _l2(grads, rows, weight_decay)
        row_axes = tuple(range(1, grads.ndim))
        accumulator = state["accumulator"] + jnp.mean(jnp.square(grads), axis=row_axes)
        scale = 1.0 / (jnp.sqrt(accumulator) + eps)
        direction = grads * jnp.reshape(scale, scale.shape + (1,) * len(row_axes))
        return _apply(rows, direction, learning_rate, step), {"accumulator": accumulator}

    return TableRule(init, update)


def make_table_rule(config: Mapping[str, Any], schedule: optax.Schedule) -> TableRule:
    """The rule named by ``config["tables"]`` (``lazy_adam`` or ``rowwise_adagrad``) with the
    block's ``weight_decay`` (decoupled for ``lazy_adam`` when ``config["name"]`` is
    ``"adamw"``, else L2 in the gradient) and the other constants at their defaults (Adam's β₁,
    β₂, ε; row-wise Adagrad's accumulators from 0)."""
    name = config.get("tables", "dense")
    weight_decay = float(config.get("weight_decay", 0.0))
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if name == "lazy_adam":
        return lazy_adam(schedule, weight_decay, decoupled=config.get("name") == "adamw")
    if name == "rowwise_adagrad":
        return rowwise_adagrad(schedule, weight_decay)
    raise ValueError(f"no row-sparse rule {name!r}; known: {TABLE_OPTIMIZERS[1:]}")


class RowSparseOptimizer(nnx.Optimizer):
    """An ``nnx.Optimizer`` that updates tables row-sparsely and the rest with optax.

    The train step (``steps``) recognises it and passes the tables' ``TableReads`` to
    ``update``.
    Its state (checkpointed with the model): ``step``, ``opt_state`` (the dense transform's),
    ``table_state`` (``{name: State of per-row arrays by table path}``, e.g. ``moments``).

    Attributes:
      rule: the tables' ``TableRule``.
      table_state: the rule's state of every table.
      trainable_rows: ``None``, or per table path a boolean mask over its rows (or a scalar for
        the whole table) outside which rows never change.
      row_slots: per table, ``(rows,)`` int32 scratch of ``tables.sum_per_row`` (no meaning
        between steps; 4 bytes per row).
    """

    def __init__(self, model: nnx.Module, tx: optax.GradientTransformation, rule: TableRule, *,
                 trainable_rows: Mapping[TablePath, jax.Array] | None = None):
        """Creates the state of both parts.

        Args:
          model: a model with ``Table`` parameters.
          tx: the optax transform of every other parameter (``tables.DENSE_PARAMS``).
          rule: how table rows are updated (``lazy_adam``, ``rowwise_adagrad``).
          trainable_rows: rows that may change, per table path (fold-in refits only some users'
            rows): a boolean ``(rows,)`` mask or a boolean scalar; tables absent are frozen.
            ``None``: every row of every table.

        Raises:
          ValueError: when the model has no ``Table``.
        """
        if not has_tables(model):
            raise ValueError(f"{type(model).__name__} declares no Table parameters, so a "
                             "row-sparse optimizer has nothing to update sparsely")
        super().__init__(model, tx, wrt=DENSE_PARAMS)
        self.rule = rule
        per_table = {path: rule.init(variable.get_value())
                     for path, variable in nnx.to_flat_state(nnx.state(model, Table))}
        names = next(iter(per_table.values())).keys()
        self.table_state = nnx.data({
            name: nnx.from_flat_state([(path, _per_row(state[name]))
                                       for path, state in per_table.items()])
            for name in names})
        self.row_slots = nnx.data(nnx.from_flat_state([
            (path, _per_row(jnp.zeros(variable.shape[:1], jnp.int32)))
            for path, variable in nnx.to_flat_state(nnx.state(model, Table))]))
        self.trainable_rows = None if trainable_rows is None else nnx.data(
            nnx.from_flat_state([
                (path, _per_row(jnp.asarray(trainable_rows.get(path, False), jnp.bool_)))
                for path in per_table]))

    def update(self, model: nnx.Module, grads: Any, /, *,
               reads: Mapping[TablePath, TableReads] | None = None, **kwargs: Any) -> Any:
        """Updates the rows read (``reads``, from ``tables.value_and_row_grads``; each row once,
        with its gradients summed) with the rule and the dense parameters with ``grads`` (over
        ``DENSE_PARAMS``); one step.

        Returns:
          The dense transform's updates.

        Raises:
          ValueError: when ``reads`` is not given: ``grads`` hold no table gradients, so the
            tables would silently not train (the engine's train step always passes ``reads``).
        """
        if reads is None:
            raise ValueError("RowSparseOptimizer.update needs the tables' reads (reads=, from "
                             "tables.value_and_row_grads); the dense grads do not update "
                             "tables")
        step = self.step[...]
        tables = dict(nnx.to_flat_state(nnx.state(model, Table)))
        states = {name: dict(nnx.to_flat_state(tree))
                  for name, tree in self.table_state.items()}
        masks = None if self.trainable_rows is None else dict(
            nnx.to_flat_state(self.trainable_rows))
        slots = dict(nnx.to_flat_state(self.row_slots))
        for path, table_reads in reads.items():
            read, new_slots = sum_per_row(table_reads, slots[path].get_value())
            slots[path].set_value(new_slots)
            table = tables[path]
            value = table.get_value()
            # The rows as the loss read them (at the padding positions, some other read's row:
            # its update is computed and dropped by the scatter).
            old = table_reads.values
            new, new_state = self.rule.update(
                old, read.grads, {name: _gather(s[path].get_value(), read.rows)
                                  for name, s in states.items()}, step)
            if masks is not None:
                keep = masks[path].get_value()
                if keep.ndim:
                    keep = keep.at[read.rows].get(mode="fill", fill_value=False)
                new = jnp.where(jnp.reshape(keep, keep.shape + (1,) * (new.ndim - keep.ndim)),
                                new, old)
            table.set_value(_scatter(value, read.rows, new))
            for name, s in states.items():
                s[path].set_value(_scatter(s[path].get_value(), read.rows, new_state[name]))
        return super().update(model, grads, **kwargs)


def _per_row(array: jax.Array) -> OptVariable:
    # Optimizer state with one entry (or row) per table row: laid out like the table's rows on
    # a mesh (training.sharding); a scalar (a whole-table mask) is replicated.
    return OptVariable(array, out_sharding=row_sharding(array.ndim) if array.ndim else None,
                       eager_sharding=False)


def _gather(array: jax.Array, rows: jax.Array) -> jax.Array:
    # The padding id (out of range) reads row 0 (its update is dropped by the scatter). Indices
    # made valid first and promised in bounds: XLA's CPU gather then skips a per-element bounds
    # select (about 20% faster than mode="fill").
    safe = jnp.where(rows < array.shape[0], rows, 0)
    return array.at[safe].get(mode="promise_in_bounds")


def _scatter(array: jax.Array, rows: jax.Array, values: jax.Array) -> jax.Array:
    # The padding id (out of range) is dropped.
    return array.at[rows].set(values.astype(array.dtype), mode="drop")
