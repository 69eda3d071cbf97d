"""Row-sparse tables (optimizer.tables) through the tasks: tiny MF and dot-product MF runs train
and resume exactly (the tables' optimizer state is checkpointed), a whole run with the mean
fallback and fold-in, the config checks and the run identity of runs recorded before the key
existed."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from recsys_jax.fileio import load_npy
from recsys_jax.models.registry import MODELS, load_model
from recsys_jax.retrieval import index as index_lib
from recsys_jax.tasks.config_checks import ConfigError, check_config, config_problems
from recsys_jax.tasks.implicit import ImplicitTask
from recsys_jax.tasks.rating import RatingTask
from recsys_jax.tasks.retrieval import RetrievalTask
from recsys_jax.tasks.run_identity import (
    IDENTITY_FILE,
    WorkdirError,
    check_config_identity,
    identity_config,
)
from recsys_jax.tasks.runner import fit_model, train_and_evaluate
from recsys_jax.training.optimizers import make_model_optimizer
from recsys_jax.training.row_sparse import RowSparseOptimizer
from tests.tasks.test_fold_in import tiny_config

TASKS = {"mf_tiny": RatingTask(), "ncf_tiny": ImplicitTask()}


def _fit(config, data, workdir, epochs):
    config = config.copy_and_resolve_references()
    config.training.epochs = epochs
    task = TASKS["mf_tiny" if config.task == "rating" else "ncf_tiny"]
    model = task.build_model(config, data)
    result = fit_model(task, config, data, model, workdir)
    return result, model


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("config_name, model, tables", [
    ("mf_tiny", "mf", "lazy_adam"), ("mf_tiny", "mf", "rowwise_adagrad"),
    ("ncf_tiny", "dot_mf", "lazy_adam"), ("ncf_tiny", "dot_mf", "rowwise_adagrad")])
def test_tiny_runs_train_and_resume_exactly(tmp_path, config_name, model, tables):
    config = tiny_config(config_name, **{"model.name": model, "optimizer.tables": tables,
                                         "training.patience": 0})
    if tables == "rowwise_adagrad":
        config.optimizer.lr = 0.1  # Adagrad's usual scale; Adam's 1e-2 barely moves it.
    data = TASKS[config_name].prepare(config, None)
    straight, straight_model = _fit(config, data, tmp_path / "straight", epochs=2)
    losses = [r["train_loss"] for r in straight.history]
    assert losses[-1] < losses[0], losses

    _fit(config, data, tmp_path / "interrupted", epochs=1)
    resumed, resumed_model = _fit(config, data, tmp_path / "interrupted", epochs=2)
    assert resumed.resumed_from == 1 and resumed.epochs_run == 1
    monitor = config.training.monitor
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
        assert a[monitor] == pytest.approx(b[monitor], rel=1e-6)
    for a, b in zip(_leaves(nnx.state(straight_model)), _leaves(nnx.state(resumed_model)),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


@pytest.mark.slow
def test_a_whole_run_with_lazy_adam_the_mean_fallback_and_fold_in(tmp_path):
    config = tiny_config("mf_tiny", **{"optimizer.tables": "lazy_adam",
                                       "model.unseen_user": "mean"})
    run = train_and_evaluate(config, tmp_path)
    assert np.isfinite(run.summary["test_rmse"]) and run.summary["fold_in"]["users"] > 0
    assert "tables: lazy_adam" in (tmp_path / "report.md").read_text()
    # The dense recipe on the same split: the two differ (lazy decay), both sensible.
    config.optimizer.tables = "dense"
    dense = train_and_evaluate(config, None)
    assert run.summary["test_rmse"] != dense.summary["test_rmse"]
    assert abs(run.summary["test_rmse"] - dense.summary["test_rmse"]) < 0.2


def test_config_checks_refuse_what_row_sparse_tables_cannot_serve(monkeypatch):
    config = tiny_config("mf_tiny", **{"optimizer.tables": "lazy_adam"})
    assert config_problems(config, "rating") == []
    config.optimizer.tables = "sparse"
    assert config_problems(config, "rating") == [
        "optimizer.tables = 'sparse' must be one of ['dense', 'lazy_adam', 'rowwise_adagrad']"]

    config.optimizer.tables, config.optimizer.name = "rowwise_adagrad", "adamw"
    assert "one weight_decay would mean two things" in " ".join(
        config_problems(config, "rating"))
    config.optimizer.weight_decay = 0.0
    assert config_problems(config, "rating") == []
    # Lazy Adam applies adamw's decay decoupled, as adamw does.
    config.optimizer.tables, config.optimizer.weight_decay = "lazy_adam", 1e-4
    assert config_problems(config, "rating") == []

    monkeypatch.setitem(MODELS, "bias_only", "tests.tasks.examples.bias_only:build")
    config = tiny_config("mf_tiny", **{"optimizer.tables": "rowwise_adagrad"})
    config.model = {"name": "bias_only"}
    with pytest.raises(ConfigError, match="'bias_only' declares none"):
        check_config(config, "rating")

    # The two-tower declares tables only with the id-embedding history or id embeddings.
    config = tiny_config("two_tower_tiny")
    config.optimizer.tables = "lazy_adam"
    assert any("this two-tower declares none" in p
               for p in config_problems(config, "retrieval"))
    config.model.history_source = "id_embedding"
    assert config_problems(config, "retrieval") == []
    config.model.history_source, config.model.item_id_dim = "item_tower", 4
    assert config_problems(config, "retrieval") == []
    config.model.history_source = "item_towers"
    assert any("model.history_source = 'item_towers' must be one of" in p
               for p in config_problems(config, "retrieval"))


def test_fit_model_refuses_a_model_without_tables_given_prepared_data(monkeypatch):
    # With prepared data the config check has no data blocks but still builds the model; the
    # runner asks the real model again before training.
    monkeypatch.setitem(MODELS, "bias_only", "tests.tasks.examples.bias_only:build")
    config = tiny_config("mf_tiny", **{"optimizer.tables": "lazy_adam"})
    config.model = {"name": "bias_only"}
    data = RatingTask().prepare(tiny_config("mf_tiny"), None)
    model = RatingTask().build_model(config, data)
    with pytest.raises(ConfigError, match="declares no tables"):
        fit_model(RatingTask(), config, data, model, None)
    # A model that declares tables gets the row-sparse optimizer.
    config = tiny_config("mf_tiny", **{"optimizer.tables": "lazy_adam"})
    model = RatingTask().build_model(config, data)
    optimizer, _ = make_model_optimizer(model, config.optimizer, steps_per_epoch=1,
                                        num_epochs=1)
    assert isinstance(optimizer, RowSparseOptimizer)


def test_a_run_recorded_before_the_key_existed_resumes_as_dense(tmp_path):
    config = tiny_config("mf_tiny")
    recorded = identity_config(config)
    del recorded["optimizer.tables"]  # As written before optimizer.tables existed.
    (tmp_path / IDENTITY_FILE).write_text(
        json.dumps({"format": 1, "task": "rating", "config": recorded}))
    assert check_config_identity(tmp_path, "rating", config) is not None
    config.optimizer.tables = "lazy_adam"
    with pytest.raises(WorkdirError, match='optimizer.tables: "dense" → "lazy_adam"'):
        check_config_identity(tmp_path, "rating", config)



@pytest.mark.slow  # A whole run with export, index and retrieve timing: ≈ 70 s on 2 busy cores.
def test_two_tower_with_id_history_trains_row_sparsely_and_exports(tmp_path):
    config = tiny_config("two_tower_tiny", **{"optimizer.tables": "lazy_adam",
                                              "model.history_source": "id_embedding"})
    task = RetrievalTask()
    data = task.prepare(config, None)
    initial = np.asarray(task.build_model(config, data).history_item_embedding[...])
    run = train_and_evaluate(config, tmp_path / "tt", data=data)
    assert 0.0 <= run.summary["test_hr@100"] <= 1.0
    workdir = tmp_path / "tt"
    items, users = (load_npy(workdir / f"{side}_embeddings.npy") for side in ("item", "user"))
    assert index_lib.load_index(workdir / "index.faiss", items=items).ntotal == 80
    # The saved model holds the trained history table (rows read moved, row-sparsely) and
    # gives the exported embeddings back.
    loaded = load_model(workdir / "model", features=data.test_features)
    trained = np.asarray(loaded.history_item_embedding[...])
    assert trained.shape == initial.shape == (80, 8) and np.any(trained != initial)
    exported = loaded.export_arrays()
    np.testing.assert_allclose(exported["user_embeddings"], users, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(exported["item_embeddings"], items, rtol=1e-5, atol=1e-6)
