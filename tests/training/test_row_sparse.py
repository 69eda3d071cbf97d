"""Row-sparse optimizers (training.row_sparse, training.tables) against dense Adam, NumPy
computations worked by hand, and the step's own program (no table-sized array)."""

from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from recsys_jax.models.mf import MatrixFactorization
from recsys_jax.tasks.rating import make_rating_loss
from recsys_jax.training import steps
from recsys_jax.training.optimizers import make_model_optimizer
from recsys_jax.training.row_sparse import RowSparseOptimizer
from recsys_jax.training.tables import Table, sum_per_row, value_and_row_grads

LR, WD = 0.1, 0.05


class Toy(nnx.Module):
    """One table and one dense scalar; loss Σ_j ⟨θ_{id_j}, c_j⟩ + ½‖θ_{id_j}‖² + (s − 1)², so a
    row read k times has the gradient Σ c_j + k·θ_r, known by hand."""

    def __init__(self):
        self.table = Table(jnp.asarray(np.random.default_rng(0).normal(size=(6, 3)),
                                       jnp.float32))
        self.scale = nnx.Param(jnp.asarray(0.5, jnp.float32))


def toy_loss(model, batch, rng):
    del rng
    rows = model.table.lookup(batch["ids"])
    return (jnp.sum(rows * batch["c"]) + 0.5 * jnp.sum(rows * rows)
            + jnp.square(model.scale[...] - 1.0)), {}


# Three steps: row 2 read three times, then twice (3) and twice (0); rows 4 never read.
TOY_BATCHES = [[0, 2, 2, 2, 5], [2, 3, 3], [0, 0, 1]]


def _optimizer(model, tables, lr=LR, weight_decay=WD, name="adam"):
    optimizer, _ = make_model_optimizer(
        model, {"name": name, "lr": lr, "weight_decay": weight_decay, "tables": tables},
        steps_per_epoch=1, num_epochs=1)
    return optimizer


def _run_toy(tables, name="adam"):
    """The toy model trained on TOY_BATCHES by the engine's step; the table after each step."""
    model = Toy()
    graphdef, state = nnx.split((model, _optimizer(model, tables, name=name)))
    step = steps.make_train_step(graphdef, toy_loss)
    rng = np.random.default_rng(1)
    batches, tables_after = [], []
    for ids in TOY_BATCHES:
        batch = {"ids": jnp.asarray(ids, jnp.int32),
                 "c": jnp.asarray(rng.normal(size=(len(ids), 3)), jnp.float32)}
        state, _ = step(state, batch, jax.random.key(0))
        batches.append({k: np.asarray(v, np.float64) for k, v in batch.items()})
        tables_after.append(np.asarray(nnx.merge(graphdef, state)[0].table[...]))
    return np.asarray(Toy().table[...], np.float64), batches, tables_after


def _summed_grads(theta, batch):
    """Per distinct row read: Σ c_j + k·θ_r (by hand), and the rows."""
    ids = batch["ids"].astype(int)
    rows = np.unique(ids)
    grads = np.stack([batch["c"][ids == r].sum(0) + (ids == r).sum() * theta[r] for r in rows])
    return rows, grads


def test_lazy_adam_matches_numpy_with_summed_reads_and_one_decay_per_row():
    theta, batches, after = _run_toy("lazy_adam")
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    for t, (batch, got) in enumerate(zip(batches, after), start=1):
        rows, grads = _summed_grads(theta, batch)
        g = grads + WD * theta[rows]  # L2 once per distinct row, however often it is read.
        m[rows] = 0.9 * m[rows] + 0.1 * g
        v[rows] = 0.999 * v[rows] + 0.001 * g * g
        theta = theta.copy()
        theta[rows] -= LR * (m[rows] / (1 - 0.9 ** t)) / (
            np.sqrt(v[rows]) / np.sqrt(1 - 0.999 ** t) + 1e-8)
        np.testing.assert_allclose(got, theta, rtol=1e-5, atol=1e-6, err_msg=f"step {t}")
    np.testing.assert_array_equal(after[-1][4], np.asarray(Toy().table[...])[4])


def test_lazy_adamw_decays_the_rows_read_decoupled():
    theta, batches, after = _run_toy("lazy_adam", name="adamw")
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    for t, (batch, got) in enumerate(zip(batches, after), start=1):
        rows, g = _summed_grads(theta, batch)  # No decay in the gradient.
        m[rows] = 0.9 * m[rows] + 0.1 * g
        v[rows] = 0.999 * v[rows] + 0.001 * g * g
        theta = theta.copy()
        theta[rows] -= LR * ((m[rows] / (1 - 0.9 ** t)) / (
            np.sqrt(v[rows]) / np.sqrt(1 - 0.999 ** t) + 1e-8) + WD * theta[rows])
        np.testing.assert_allclose(got, theta, rtol=1e-5, atol=1e-6, err_msg=f"step {t}")
    np.testing.assert_array_equal(after[-1][4], np.asarray(Toy().table[...])[4])


def test_rowwise_adagrad_matches_numpy_by_hand():
    theta, batches, after = _run_toy("rowwise_adagrad")
    accumulator = np.zeros(len(theta))  # FBGEMM's start.
    for t, (batch, got) in enumerate(zip(batches, after), start=1):
        rows, grads = _summed_grads(theta, batch)
        g = grads + WD * theta[rows]
        accumulator[rows] += np.mean(g * g, axis=1)  # One accumulator per row: mean of g².
        theta = theta.copy()
        theta[rows] -= LR * g / (np.sqrt(accumulator[rows]) + 1e-8)[:, None]
        np.testing.assert_allclose(got, theta, rtol=1e-5, atol=1e-6, err_msg=f"step {t}")


def _mf(num_users=5, num_items=4, **kwargs):
    return MatrixFactorization(num_users, num_items, 3, rngs=nnx.Rngs(0), init_std=0.1,
                               global_mean=3.0, **kwargs)


def _adam_state(optimizer):
    return next(s for s in jax.tree.leaves(
        optimizer.opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
        if isinstance(s, optax.ScaleByAdamState))


@pytest.mark.parametrize("unseen_user,name", [("zero", "adam"), ("mean", "adam"),
                                               ("zero", "adamw")])
def test_lazy_adam_equals_dense_adam_when_every_row_is_read(unseen_user, name):
    # Every user and item in every batch, L2 weight decay in the gradient, the per-row L2 loss
    # (a second lookup of the same rows) and, with "mean", a read-out of the whole table.
    rng = np.random.default_rng(0)
    loss = make_rating_loss("mse", l2_reg=0.01)
    states = {}
    for tables in ("dense", "lazy_adam"):
        model = _mf(unseen_user=unseen_user)
        model.mark_seen(np.arange(4), np.arange(4))  # User 4 unseen: served the mean row.
        graphdef, state = nnx.split((model, _optimizer(model, tables, lr=0.01, weight_decay=0.1,
                                                       name=name)))
        states[tables] = graphdef, state, steps.make_train_step(graphdef, loss)
    for _ in range(6):
        batch = {"user": jnp.asarray(rng.permutation(np.arange(10) % 5), jnp.int32),
                 "item": jnp.asarray(rng.permutation(np.arange(10) % 4), jnp.int32),
                 "rating": jnp.asarray(rng.integers(1, 6, 10), jnp.float32)}
        for tables, (graphdef, state, step) in states.items():
            states[tables] = graphdef, step(state, batch, jax.random.key(0))[0], step
        (dense, dense_opt), (lazy, lazy_opt) = (nnx.merge(*states[t][:2]) for t in states)
        for name in ("embedding", "bias", "global_mean"):
            np.testing.assert_allclose(getattr(lazy, name)[...], getattr(dense, name)[...],
                                       rtol=1e-6, atol=1e-9, err_msg=name)
        adam = _adam_state(dense_opt)
        for index, moment in enumerate(("mu", "nu")):
            for name in ("embedding", "bias"):
                # Gradients summed in another order (per row, not into a dense table): equal up
                # to float32 rounding of the largest term.
                want = np.asarray(getattr(adam, moment)[name][...])
                moments = lazy_opt.table_state["moments"][name][...]
                got = moments.reshape((len(moments), 2) + want.shape[1:])[:, index]
                np.testing.assert_allclose(got, want,
                                           rtol=1e-6, atol=1e-6 * np.abs(want).max())
    assert int(lazy_opt.step[...]) == int(dense_opt.step[...]) == 6


@pytest.mark.parametrize("tables", ["lazy_adam", "rowwise_adagrad"])
def test_rows_not_read_and_their_state_stay_bit_identical(tables):
    model = _mf(num_users=6, num_items=5)
    optimizer = _optimizer(model, tables)
    graphdef, state = nnx.split((model, optimizer))
    before = jax.tree.map(np.array, nnx.to_pure_dict(state))
    step = steps.make_train_step(graphdef, make_rating_loss("mse", l2_reg=0.01))
    # The last example is padding (weight 0, as in an epoch's last batch): user 3 and item 4,
    # read by it alone, count as not read.
    batch = {"user": jnp.asarray([0, 1, 1, 0, 3], jnp.int32),
             "item": jnp.asarray([0, 2, 2, 2, 4], jnp.int32),
             "rating": jnp.asarray([5.0, 1.0, 1.0, 4.0, 3.0]),
             "weight": jnp.asarray([1.0, 1.0, 1.0, 1.0, 0.0])}
    for _ in range(3):
        state, _ = step(state, batch, jax.random.key(0))
    after = jax.tree.map(np.array, nnx.to_pure_dict(state))
    read = np.zeros(11, bool)
    read[[0, 1, 6 + 0, 6 + 2]] = True  # Users 0, 1; items 0, 2 (after the 6 user rows).
    for name in ("embedding", "bias"):
        np.testing.assert_array_equal(after[0][name][~read], before[0][name][~read])
        assert (after[0][name][read] != before[0][name][read]).all()
        for array_name, array in after[1]["table_state"].items():
            np.testing.assert_array_equal(array[name][~read],
                                          before[1]["table_state"][array_name][name][~read])
    assert after[0]["global_mean"] != before[0]["global_mean"]  # The dense part trains.


def test_row_grads_are_the_dense_gradient_on_the_rows_read():
    model = _mf(num_users=6, num_items=5)
    batch = {"user": jnp.asarray([3, 1, 3, 3], jnp.int32),
             "item": jnp.asarray([4, 4, 0, 2], jnp.int32),
             "rating": jnp.asarray([5.0, 1.0, 2.0, 4.0])}
    loss = make_rating_loss("mse", l2_reg=0.1)

    @nnx.jit
    def sparse_and_dense(model, batch, slots):
        (value, aux), dense_grads, reads = value_and_row_grads(loss, model, batch, None)
        rows = {path: sum_per_row(r, slots) for path, r in reads.items()}
        return ((value, aux), dense_grads, reads, rows,
                nnx.value_and_grad(loss, has_aux=True)(model, batch, None))
    # Slots start with arbitrary content: sum_per_row reads back only what it wrote.
    slots = jnp.asarray([7, -3, 2**30, 0, 5, 1, 9, 8, -1, 4, 2], jnp.int32)
    ((value, _), dense_grads, reads, rows, ((expected, _), grads)) = sparse_and_dense(
        model, batch, slots)
    assert float(value) == pytest.approx(float(expected), rel=1e-6)
    np.testing.assert_allclose(dense_grads["global_mean"][...], grads["global_mean"][...],
                               rtol=1e-6)
    read = [1, 3, 6 + 0, 6 + 2, 6 + 4]
    for name in ("embedding", "bias"):
        # 16 reads (users and items, by the prediction and the row L2), in lookup order.
        assert reads[(name,)].ids.shape == (16,)
        got, new_slots = rows[(name,)]
        kept = np.asarray(got.rows) != 11  # 11 = num_rows, the out-of-range padding id
        # Each of the 5 distinct rows once, with the dense gradient of that row; zero elsewhere.
        order = np.argsort(np.asarray(got.rows)[kept])
        np.testing.assert_array_equal(np.asarray(got.rows)[kept][order], read)
        np.testing.assert_allclose(np.asarray(got.grads)[kept][order],
                                   grads[name][...][np.array(read)], rtol=1e-6)
        assert not np.asarray(got.grads)[~kept].any()
        # The representative of each row is one of its reads' positions.
        ids = np.asarray(reads[(name,)].ids)
        np.testing.assert_array_equal(ids[np.asarray(new_slots)[ids]], ids)
    assert set(rows) == {("embedding",), ("bias",)}


class DirectRead(nnx.Module):
    def __init__(self):
        self.table = Table(jnp.ones((4, 2)))


def test_a_table_read_without_lookup_fails_loudly_in_the_sparse_step():
    model = DirectRead()

    def loss(model, batch, rng):
        return jnp.sum(model.table[...][batch["ids"]]), {}
    with pytest.raises(TypeError, match="'table' was read directly.*table.lookup"):
        value_and_row_grads(loss, model, {"ids": jnp.asarray([0, 1])}, None)
    # all_rows: the values, never a gradient, in either mode.
    np.testing.assert_array_equal(model.table.all_rows(), np.ones((4, 2)))
    assert not nnx.grad(lambda m: jnp.sum(m.table.all_rows()))(model)["table"][...].any()


def test_a_row_sparse_optimizer_needs_tables_and_their_row_gradients():
    with pytest.raises(ValueError, match="declares no Table"):
        RowSparseOptimizer(nnx.Linear(2, 1, rngs=nnx.Rngs(0)), optax.adam(0.1), None)
    model = _mf()
    optimizer = _optimizer(model, "lazy_adam")
    grads = nnx.grad(lambda m: jnp.sum(m(jnp.zeros(2, jnp.int32), jnp.ones(2, jnp.int32))))(
        model)
    with pytest.raises(ValueError, match="needs the tables' reads"):
        optimizer.update(model, grads)  # Dense grads alone would leave the tables untrained.


# A table large beside everything a step of 64 ratings computes.
BIG_USERS, BIG_ITEMS, BIG_DIM, BATCH = 20011, 30011, 8, 64


# Primitives that call a nested jaxpr and return its outputs: entered, not counted.
CALLS = {"jit", "pjit", "closed_call", "core_call", "remat", "checkpoint", "custom_jvp_call",
         "custom_vjp_call", "custom_vjp_call_jaxpr"}


def _table_sized(jaxpr, rows: int) -> Counter:
    """Primitives whose output has ``rows`` rows, counted through nested jaxprs."""
    found = Counter()
    for eqn in jaxpr.eqns:
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                if isinstance(sub, (jax.extend.core.Jaxpr, jax.extend.core.ClosedJaxpr)):
                    found += _table_sized(getattr(sub, "jaxpr", sub), rows)
        if eqn.primitive.name not in CALLS:
            found.update(eqn.primitive.name for v in eqn.outvars
                         if getattr(v.aval, "shape", ())[:1] == (rows,))
    return found


@pytest.mark.parametrize("tables", ["lazy_adam", "rowwise_adagrad", "dense"])
def test_the_sparse_step_makes_no_table_sized_array(tables):
    model = _mf(num_users=BIG_USERS, num_items=BIG_ITEMS)
    graphdef, state = nnx.split((model, _optimizer(model, tables)))
    step = steps.make_train_step(graphdef, make_rating_loss("mse", l2_reg=0.01))
    ids = jnp.arange(BATCH, dtype=jnp.int32) * 97
    batch = {"user": ids, "item": ids, "rating": jnp.ones(BATCH), "weight": jnp.ones(BATCH)}
    key = jax.random.key(0)
    rows = BIG_USERS + BIG_ITEMS
    made = _table_sized(jax.make_jaxpr(step)(state, batch, key).jaxpr, rows)
    temp = step.lower(state, batch, key).compile().memory_analysis().temp_size_in_bytes
    table_bytes = rows * BIG_DIM * 4
    if tables == "dense":  # The checks can fail: a dense step builds table-sized gradients.
        assert made["scatter-add"] >= 2 and made["mul"] > 0 and temp >= table_bytes / 10
        return
    # Only the in-place updates of the tables and their optimizer state are table-sized.
    assert set(made) == {"scatter"}, made
    assert temp < table_bytes / 10, (temp, table_bytes)
