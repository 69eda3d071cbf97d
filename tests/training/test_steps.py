import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recsys_jax.tasks.rating import make_rating_loss
from recsys_jax.training import steps
from tests.tasks.planted import make_model_and_optimizer

BATCH = 64


def _copy(state):
    return jax.tree.map(jnp.copy, state)


def _params(state):
    return jax.tree.leaves(state)


def test_train_steps_reduce_the_loss(train_columns):
    model, optimizer = make_model_and_optimizer(train_columns)
    loss_fn = make_rating_loss("mse")
    graphdef, state = nnx.split((model, optimizer))
    step = steps.make_train_step(graphdef, loss_fn)
    batch = {k: jnp.asarray(v[:BATCH]) for k, v in train_columns.items()}
    key = jax.random.key(0)
    losses = []
    for _ in range(20):
        state, metrics = step(state, batch, key)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.5 * losses[0]
    assert float(metrics["weight"]) == BATCH


def test_scanned_epoch_equals_steps_run_one_by_one(train_columns):
    model, optimizer = make_model_and_optimizer(train_columns)
    loss_fn = make_rating_loss("mse", l2_reg=0.01)
    graphdef, state = nnx.split((model, optimizer))
    key = jax.random.key(3)
    data = jax.device_put(train_columns)
    epoch = 2

    epoch_fn = steps.make_train_epoch(graphdef, loss_fn, BATCH)
    scanned, scanned_metrics = epoch_fn(_copy(state), data, key, np.int32(epoch))

    step_fn = steps.make_train_step(graphdef, loss_fn)
    batches = steps.epoch_batches(data, key, epoch, BATCH)
    one_by_one = _copy(state)
    losses = []
    for s in range(batches["user"].shape[0]):
        one_by_one, m = step_fn(one_by_one, {k: v[s] for k, v in batches.items()}, key)
        losses.append(float(m["loss"]))

    np.testing.assert_allclose(scanned_metrics["loss"], losses, rtol=1e-5)
    for a, b in zip(_params(scanned), _params(one_by_one)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # The optimizer took one step per batch: ceil(1000 / 64) = 16.
    assert int(nnx.merge(graphdef, scanned)[1].step[...]) == 16 == len(losses)


def test_epoch_batches_cover_every_row_once_and_pad_with_zero_weight(train_columns):
    n = len(train_columns["user"])
    data = {"row": jnp.arange(n), "weight": jnp.full((n,), 2.0)}
    batches = steps.epoch_batches(data, jax.random.key(0), 1, BATCH)
    assert batches["row"].shape == (steps.steps_per_epoch(n, BATCH), BATCH)
    weight = np.asarray(batches["weight"]).reshape(-1)
    rows = np.asarray(batches["row"]).reshape(-1)
    real = rows[weight > 0]
    np.testing.assert_array_equal(np.sort(real), np.arange(n))
    assert (weight[weight > 0] == 2.0).all()  # An existing weight column is kept.
    assert (weight == 0).sum() == 16 * BATCH - n
    # Different epochs shuffle differently; the same epoch reproduces.
    again = steps.epoch_batches(data, jax.random.key(0), 1, BATCH)
    other = steps.epoch_batches(data, jax.random.key(0), 2, BATCH)
    np.testing.assert_array_equal(again["row"], batches["row"])
    assert not np.array_equal(other["row"], batches["row"])


def test_host_streamed_epoch_matches_device_epoch(train_columns):
    model, optimizer = make_model_and_optimizer(train_columns)
    loss_fn = make_rating_loss("mse")
    graphdef, state = nnx.split((model, optimizer))
    key = jax.random.key(1)
    device, _ = steps.make_train_epoch(graphdef, loss_fn, BATCH)(
        _copy(state), jax.device_put(train_columns), key, np.int32(1))
    run_chunk = steps.make_train_steps(graphdef, loss_fn)
    streamed = _copy(state)
    chunks = list(steps.host_epoch_chunks(train_columns, key, 1, BATCH, chunk_steps=6))
    assert [c["user"].shape[0] for c in chunks] == [6, 6, 4]
    for chunk in chunks:
        streamed, _ = run_chunk(streamed, chunk, key)
    for a, b in zip(_params(device), _params(streamed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_summarize_steps_weights_by_real_rows():
    metrics = [{"loss": np.array([1.0, 4.0]), "weight": np.array([3.0, 1.0])},
               {"loss": np.array([2.0]), "weight": np.array([0.0])}]
    assert steps.summarize_steps(metrics) == {"loss": pytest.approx(7.0 / 4.0)}


def test_step_and_shuffle_keys_differ_by_position():
    key = jax.random.key(0)
    assert not np.array_equal(jax.random.key_data(steps.step_key(key, 1)),
                              jax.random.key_data(steps.step_key(key, 2)))
    assert not np.array_equal(jax.random.key_data(steps.step_key(key, 1)),
                              jax.random.key_data(steps.shuffle_key(key, 1)))


# 1625 / 1626 straddle the size where jax.random.permutation goes from one sort round to two
# ((2³²-1)^(1/3) ≈ 1625.5); 80 000 is an ML-100K training split.
@pytest.mark.parametrize("num_rows", [0, 1, 2, 1625, 1626, 80_000])
def test_host_epoch_order_is_jax_permutation(num_rows):
    for seed, epoch in [(0, 1), (7, 3)]:
        key = jax.random.key(seed)
        expected = np.asarray(jax.random.permutation(steps.shuffle_key(key, epoch), num_rows))
        host = steps._host_permutation(key, epoch, num_rows)
        assert host.dtype == np.int32
        np.testing.assert_array_equal(host, expected)
        np.testing.assert_array_equal(np.asarray(steps._device_permutation(key, epoch, num_rows)),
                                      expected)
        np.testing.assert_array_equal(np.asarray(steps.epoch_order(key, epoch, num_rows)),
                                      expected)


def test_host_epoch_order_keeps_tied_sort_keys_in_place(monkeypatch):
    # Equal keys must keep their current order, as lax.sort_key_val's stable sort does.
    keys = np.array([[5, 1, 5, 1, 0], [2, 2, 2, 2, 2]], np.uint32)
    monkeypatch.setattr(steps, "_permutation_sort_keys", lambda key, epoch, num_rows: keys)
    order = steps._host_permutation(jax.random.key(0), 1, 5)
    np.testing.assert_array_equal(order, [4, 1, 3, 0, 2])


def test_compiled_train_epoch_matches_the_jitted_one(train_columns):
    model, optimizer = make_model_and_optimizer(train_columns)
    loss_fn = make_rating_loss("mse")
    graphdef, state = nnx.split((model, optimizer))
    key = jax.random.key(4)
    data = jax.device_put(train_columns)
    epoch_fn = steps.make_train_epoch(graphdef, loss_fn, BATCH)
    compiled = epoch_fn.compile(state, data, key)
    jitted_state, jitted_metrics = epoch_fn(_copy(state), data, key, 2)
    compiled_state, compiled_metrics = compiled(_copy(state), data, key, 2)
    np.testing.assert_array_equal(jitted_metrics["loss"], compiled_metrics["loss"])
    for a, b in zip(_params(jitted_state), _params(compiled_state)):
        np.testing.assert_array_equal(a, b)


def test_a_process_builds_only_its_rows_of_every_batch():
    """``rows`` (a process's part of each global batch) gives exactly those positions of the
    full batches, padding and weights included."""
    data = {"x": np.arange(10, dtype=np.int32) * 10,
            "weight": np.linspace(0.5, 1.0, 10).astype(np.float32)}
    order = np.random.default_rng(0).permutation(10).astype(np.int32)
    full = steps.gather_batches(data, order, 4)
    for rows in (slice(0, 2), slice(2, 4), slice(1, 3)):
        part = steps.gather_batches(data, order, 4, rows)
        assert part.keys() == full.keys()
        for name in full:
            np.testing.assert_array_equal(part[name], full[name][:, rows])
    assert steps.gather_batches(data, order, 4, slice(0, 4)).keys() == full.keys()
