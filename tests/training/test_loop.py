import json

import jax
import numpy as np
import pytest
from flax import nnx

from recsys_jax.evaluation.validators import RatingEvaluator
from recsys_jax.tasks.rating import make_rating_loss
from recsys_jax.training.checkpoints import CheckpointStore, abstract_state
from recsys_jax.training.loop import (
    CHECKPOINT_DIR,
    DivergenceError,
    EarlyStopping,
    FitConfig,
    fit,
    nonfinite_arrays,
    read_metrics,
)
from recsys_jax.training.steps import steps_per_epoch
from tests.tasks.planted import make_model_and_optimizer
from tests.training.poison import poisoned_in_steps

CONFIG = FitConfig(batch_size=64, num_epochs=4, patience=0, seed=5)


def _fit(workdir, train, evaluate, config=CONFIG):
    model, optimizer = make_model_and_optimizer(train)
    result = fit(model, optimizer, make_rating_loss("mse"), train, evaluate, config,
                 workdir=workdir)
    return model, optimizer, result


def _leaves(*trees):
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(trees))]


def test_fit_learns_and_writes_metrics(tmp_path, train_columns, val_columns):
    evaluate = RatingEvaluator(val_columns, (1, 5))
    model, _, result = _fit(tmp_path, train_columns, evaluate)
    history = read_metrics(tmp_path)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4] == [r["epoch"] for r in result.history]
    assert history[-1]["val_rmse"] < history[0]["val_rmse"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert {"epoch_time_s", "eval_time_s", "rows_per_s", "val_mae", "improved"} <= set(history[0])
    # The model is left at the best epoch.
    assert evaluate(model)["val_rmse"] == pytest.approx(result.best_value)
    assert result.best_value == min(r["val_rmse"] for r in history)
    assert result.data_on_device and result.compile_time_s > 0


def test_resume_continues_exactly_where_it_stopped(tmp_path, train_columns, val_columns):
    evaluate = RatingEvaluator(val_columns, (1, 5))
    straight = _fit(tmp_path / "straight", train_columns, evaluate)

    interrupted = tmp_path / "interrupted"
    _fit(interrupted, train_columns, evaluate, FitConfig(**{**CONFIG.__dict__,
                                                            "num_epochs": 2}))
    # An epoch logged after the last checkpoint (the process died before saving) is redone.
    with open(interrupted / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 3, "train_loss": 99.0}) + "\n")
    resumed = _fit(interrupted, train_columns, evaluate)

    assert resumed[2].resumed_from == 2 and resumed[2].epochs_run == 2
    history = read_metrics(interrupted)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    np.testing.assert_allclose([r["val_rmse"] for r in history],
                               [r["val_rmse"] for r in straight[2].history], rtol=1e-5)
    for a, b in zip(_leaves(*straight[:2]), _leaves(*resumed[:2]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)

    # A finished run is not trained again, only restored.
    again = _fit(interrupted, train_columns, evaluate)
    assert again[2].epochs_run == 0 and again[2].best_epoch == resumed[2].best_epoch
    for a, b in zip(_leaves(again[0]), _leaves(resumed[0]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_early_stopping_restores_the_best_epoch(tmp_path, train_columns):
    scripted = iter([1.0, 0.8, 0.85, 0.9, 0.7, 0.6])
    snapshots = []

    def evaluate(model):
        snapshots.append(np.asarray(model.user_embedding[...]).copy())
        return {"val_rmse": next(scripted)}

    config = FitConfig(batch_size=64, num_epochs=6, patience=2)
    model, _, result = _fit(tmp_path, train_columns, evaluate, config)
    assert result.stopped_early and result.last_epoch == 4 and result.best_epoch == 2
    assert len(snapshots) == 4
    np.testing.assert_array_equal(model.user_embedding[...], snapshots[1])


def test_host_streaming_gives_the_same_run(tmp_path, train_columns, val_columns):
    evaluate = RatingEvaluator(val_columns, (1, 5))
    config = FitConfig(batch_size=64, num_epochs=2, seed=5)
    device = _fit(tmp_path / "device", train_columns, evaluate, config)
    host = _fit(tmp_path / "host", train_columns, evaluate,
                FitConfig(**{**config.__dict__, "data_on_device": "never", "chunk_steps": 2}))
    assert not host[2].data_on_device
    np.testing.assert_allclose([r["val_rmse"] for r in host[2].history],
                               [r["val_rmse"] for r in device[2].history], rtol=1e-5)


def test_tables_reach_the_loss_whole_on_device_and_streamed(train_columns, val_columns):
    """Rows that point into a table (here: each row's rating, moved into a table the loss
    reads) train exactly as the plain columns, with the data on the device and streamed."""
    evaluate = RatingEvaluator(val_columns, (1, 5))
    config = FitConfig(batch_size=64, num_epochs=2, seed=5)
    plain_model, _, plain = _fit(None, train_columns, evaluate, config)
    rating_loss = make_rating_loss("mse")

    def loss(model, batch, rng):
        return rating_loss(model, {**batch, "rating": batch["ratings"][batch["row"]]}, rng)

    pointers = {"user": train_columns["user"], "item": train_columns["item"],
                "row": np.arange(len(train_columns["user"]), dtype=np.int32)}
    tables = {"ratings": train_columns["rating"]}
    for mode in ("always", "never"):
        model, optimizer = make_model_and_optimizer(train_columns)
        result = fit(model, optimizer, loss, pointers, evaluate,
                     FitConfig(**{**config.__dict__, "data_on_device": mode, "chunk_steps": 3}),
                     workdir=None, tables=tables)
        assert result.data_on_device == (mode == "always")
        np.testing.assert_allclose([r["val_rmse"] for r in result.history],
                                   [r["val_rmse"] for r in plain.history], rtol=1e-5)
        for got, want in zip(_leaves(model), _leaves(plain_model), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="also column names"):
        fit(model, optimizer, loss, pointers, evaluate, config, workdir=None,
            tables={"row": tables["ratings"]})


def test_missing_monitor_is_an_error(tmp_path, train_columns):
    with pytest.raises(KeyError, match="val_rmse"):
        _fit(tmp_path, train_columns, lambda model: {"rmse": 1.0},
             FitConfig(batch_size=64, num_epochs=1))


def test_early_stopping_rules():
    early = EarlyStopping(patience=2, mode="max", min_delta=0.1)
    assert early.update(1.0, 1)
    assert not early.update(1.05, 2)   # Within min_delta: not an improvement.
    assert not early.should_stop
    assert not early.update(0.5, 3)
    assert early.should_stop and early.best_epoch == 1
    assert not EarlyStopping(patience=0).should_stop


def _diverging_fit(workdir, train, evaluate, diverge_in_epoch=2, config=CONFIG):
    """A fit whose loss (and so its parameters) turns NaN in epoch ``diverge_in_epoch``."""
    per_epoch = steps_per_epoch(len(train["user"]), config.batch_size)
    first = (diverge_in_epoch - 1) * per_epoch
    loss = poisoned_in_steps(make_rating_loss("mse"), config.seed, range(first,
                                                                         first + per_epoch))
    model, optimizer = make_model_and_optimizer(train)
    return fit(model, optimizer, loss, train, evaluate, config, workdir=workdir)


def test_divergence_stops_in_its_epoch_and_saves_nothing_of_it(tmp_path, train_columns,
                                                               val_columns):
    evaluate = RatingEvaluator(val_columns, (1, 5))
    with pytest.raises(DivergenceError, match=r"diverged in epoch 2: the training loss is nan"
                       r".*model/embedding.*end at epoch 1.*optimizer\.lr"):
        _diverging_fit(tmp_path, train_columns, evaluate)
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1]
    with CheckpointStore(tmp_path / CHECKPOINT_DIR, monitor="val_rmse") as store:
        assert store.latest_epoch() == 1 and store.best_epoch() == 1
        model, optimizer = make_model_and_optimizer(train_columns)
        best = store.restore_best(abstract_state(nnx.state((model, optimizer))))
    assert nonfinite_arrays(best) == []
    # The rerun resumes from the last finite epoch; it diverges again, in the same epoch,
    # instead of restoring anything.
    with pytest.raises(DivergenceError, match="epoch 2"):
        _diverging_fit(tmp_path, train_columns, evaluate)
    # Once the cause is gone, the run resumes after epoch 1 and finishes.
    _, _, result = _fit(tmp_path, train_columns, evaluate)
    assert result.resumed_from == 1 and result.last_epoch == CONFIG.num_epochs


def test_divergence_in_the_first_epoch_without_a_workdir(train_columns, val_columns):
    with pytest.raises(DivergenceError, match="diverged in epoch 1") as raised:
        _diverging_fit(None, train_columns, RatingEvaluator(val_columns, (1, 5)),
                       diverge_in_epoch=1)
    assert "checkpoints" not in str(raised.value)


def test_a_nan_monitor_is_never_marked_best(tmp_path, train_columns):
    with pytest.raises(DivergenceError, match="val_rmse is nan after epoch 1.*validation"):
        _fit(tmp_path, train_columns, lambda model: {"val_rmse": float("nan")},
             FitConfig(batch_size=64, num_epochs=2))
    assert read_metrics(tmp_path) == []
    with CheckpointStore(tmp_path / CHECKPOINT_DIR, monitor="val_rmse") as store:
        assert store.best_epoch() is None and store.latest_epoch() is None


def test_a_nonfinite_checkpoint_is_not_resumed(tmp_path, train_columns, val_columns):
    model, optimizer = make_model_and_optimizer(train_columns)
    model.embedding[...] = model.embedding[...].at[0, 0].set(np.inf)
    with CheckpointStore(tmp_path / CHECKPOINT_DIR, monitor="val_rmse") as store:
        store.save_latest(1, nnx.state((model, optimizer)),
                          {"epoch": 1, "early_stopping": {"patience": 0}, "key_data": [0, 5],
                           "stopped_early": False})
    with pytest.raises(DivergenceError, match="latest holds NaN/inf in model/embedding"):
        _fit(tmp_path, train_columns, RatingEvaluator(val_columns, (1, 5)))


def test_nonfinite_arrays_names_the_leaves():
    tree = {"a": np.ones(3, np.float32), "b": np.array([1.0, np.nan]),
            "c": np.arange(3), "d": {"e": np.array(-np.inf)}}
    assert nonfinite_arrays(tree) == ["b", "d/e"]
