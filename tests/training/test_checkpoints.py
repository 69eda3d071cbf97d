import jax
import numpy as np
import pytest
from flax import nnx

from recsys_jax.training.checkpoints import CheckpointStore, abstract_state
from tests.tasks.planted import make_model_and_optimizer


def _state(train, seed):
    model, optimizer = make_model_and_optimizer(train, seed=seed)
    model.mark_seen(train["user"][:5], train["item"][:5])
    return nnx.split((model, optimizer))


def _assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_save_restore_round_trip(tmp_path, train_columns):
    graphdef, state = _state(train_columns, seed=0)
    _, other = _state(train_columns, seed=1)
    loop_state = {"epoch": 3, "key_data": [0, 7], "early_stopping": {"bad_epochs": 1}}
    with CheckpointStore(tmp_path, monitor="val_rmse") as store:
        assert store.latest_epoch() is None and store.best_epoch() is None
        store.save_latest(3, state, loop_state)
        restored, restored_loop = store.restore_latest(abstract_state(other))
    _assert_same(restored, state)
    assert restored_loop == loop_state
    # The restored state has the template's structure: merge gives a working model.
    model, optimizer = nnx.merge(graphdef, restored)
    np.testing.assert_array_equal(model.seen[...], np.asarray(state[0]["seen"][...]))
    assert int(optimizer.step[...]) == 0


def test_best_checkpoint_follows_the_metric(tmp_path, train_columns):
    _, first = _state(train_columns, seed=0)
    _, second = _state(train_columns, seed=1)
    store = CheckpointStore(tmp_path, monitor="val_rmse", mode="min")
    store.save_best(1, first, {"val_rmse": 1.0})
    store.save_best(2, second, {"val_rmse": 0.9})
    store.save_latest(2, second, {"epoch": 2})
    store.wait()
    assert store.best_epoch() == 2 and store.latest_epoch() == 2
    _assert_same(store.restore_best(abstract_state(first)), second)
    store.close()
    # A new store on the same directory (a restarted process) sees the same checkpoints.
    reopened = CheckpointStore(tmp_path, monitor="val_rmse")
    assert reopened.best_epoch() == 2 and reopened.latest_epoch() == 2
    reopened.close()


def test_missing_checkpoints_raise(tmp_path, train_columns):
    _, state = _state(train_columns, seed=0)
    with CheckpointStore(tmp_path, monitor="val_rmse") as store:
        with pytest.raises(FileNotFoundError):
            store.restore_latest(state)
        with pytest.raises(FileNotFoundError):
            store.restore_best(state)
    with pytest.raises(ValueError):
        CheckpointStore(tmp_path, monitor="val_rmse", mode="lowest")


def test_a_redone_epoch_replaces_its_checkpoint(tmp_path, train_columns):
    _, first = _state(train_columns, seed=0)
    _, second = _state(train_columns, seed=1)
    with CheckpointStore(tmp_path, monitor="val_rmse") as store:
        store.save_best(3, first, {"val_rmse": 1.0})
        store.save_best(3, second, {"val_rmse": 1.0})
        _assert_same(store.restore_best(abstract_state(first)), second)
        store.save_best(4, first, {"val_rmse": 0.5})
        store.discard_best_after(3)
        assert store.best_epoch() is None  # max_to_keep=1 had already dropped epoch 3.


def test_restoring_into_another_model_names_the_problem(tmp_path, train_columns):
    _, state = _state(train_columns, seed=0)
    other_model, other_optimizer = make_model_and_optimizer(train_columns, dim=6)
    with CheckpointStore(tmp_path, monitor="val_rmse") as store:
        store.save_latest(1, state, {"epoch": 1})
        with pytest.raises(ValueError, match="does not fit this model"):
            store.restore_latest(abstract_state(nnx.state((other_model, other_optimizer))))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), None])
def test_a_best_checkpoint_needs_a_finite_metric(tmp_path, train_columns, value):
    _, state = _state(train_columns, seed=0)
    metrics = {} if value is None else {"val_rmse": value}
    with CheckpointStore(tmp_path, monitor="val_rmse") as store:
        with pytest.raises(ValueError, match="refusing to save a best checkpoint.*val_rmse"):
            store.save_best(1, state, metrics)
        assert store.best_epoch() is None
