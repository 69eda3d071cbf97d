"""The NCF experiment: parameters on disk, score sources, both protocols, pretraining."""

import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from recsys_jax.evaluation.runs import load_run
from recsys_jax.evaluation.validators import score_function, score_matrix, score_source
from recsys_jax.models.ncf import GMF, MLP, DotMF, NeuMF
from recsys_jax.models.registry import flat_state, load_flat_state, load_model, save_model
from recsys_jax.tasks.implicit import ImplicitTask, implicit_interactions, load_implicit_data
from recsys_jax.tasks.runner import train_and_evaluate
from tests.tasks.train_script import run_train

REPO = Path(__file__).resolve().parents[2]


def tiny_config(**model) -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location("ncf_tiny", REPO / "configs" / "ncf_tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for key, value in model.items():
        config.model[key] = value
    return config


def test_registry_round_trip_and_refuse_another_architecture(tmp_path):
    config = {"name": "neumf", "dim": 4, "mlp_layers": (8, 4)}
    model = NeuMF(6, 9, 4, (8, 4), rngs=nnx.Rngs(0))
    save_model(model, tmp_path, model_config=config, num_users=6, num_items=9)
    other = load_model(tmp_path)
    for a, b in zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(other)),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="does not fit"):
        load_flat_state(NeuMF(6, 9, 4, (8, 2), rngs=nnx.Rngs(0)),
                        flat_state(model), source="the test")


@pytest.mark.parametrize("model", [GMF(5, 300, 3, rngs=nnx.Rngs(0), init_std=0.3),
                                   MLP(5, 300, (8, 4), rngs=nnx.Rngs(0), init_std=0.3)])
def test_score_function_scores_all_items(model):
    fn = score_function(model)
    users = np.array([4, 0, 2])
    expected = model(jnp.asarray(users)[:, None], jnp.arange(300)[None, :])
    np.testing.assert_allclose(np.asarray(fn(users)), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(score_matrix(model)[users], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        fn(np.array([5]))


def test_dot_mf_is_scored_by_its_embeddings():
    model = DotMF(4, 6, 3, rngs=nnx.Rngs(0), init_std=0.3)
    model.item_bias[...] = jnp.arange(6, dtype=jnp.float32) / 5
    source = score_source(model)
    logits = np.asarray(model(jnp.arange(4)[:, None], jnp.arange(6)[None, :]))
    np.testing.assert_array_equal(np.argsort(-source.users @ source.items.T, axis=1),
                                  np.argsort(-logits, axis=1))


def test_min_rating_keeps_only_high_ratings():
    import pandas as pd
    frame = pd.DataFrame({"user_id": [0, 0, 1], "item_id": [0, 1, 1],
                          "rating": [5.0, 2.0, 4.0], "timestamp": [1, 2, 3]})
    assert len(implicit_interactions(frame)) == 3
    assert implicit_interactions(frame, 4.0)["item_id"].tolist() == [0, 1]


def test_sampled_protocol_is_reproducible(tmp_path):
    config = tiny_config(name="gmf")
    data = load_implicit_data(config)
    model = GMF(data.num_users, data.num_items, 4, rngs=nnx.Rngs(0), init_std=0.3)
    first = ImplicitTask().test_results(config, data, model)
    second = ImplicitTask().test_results(config, data, model)
    assert set(first) == {"full", "sampled-20"}
    for label in first:
        for metric, values in first[label].values.items():
            np.testing.assert_array_equal(values, second[label].values[metric])
    config.evaluation.sample_seed = 1
    other = ImplicitTask().test_results(config, data, model)["sampled-20"]
    assert not np.array_equal(other.values["ndcg@10"], first["sampled-20"].values["ndcg@10"])


@pytest.mark.slow
def test_neumf_starts_from_the_pretrained_runs(tmp_path):
    runs = {}
    for name in ("gmf", "mlp"):
        config = tiny_config(name=name)
        data = load_implicit_data(config)
        summary = train_and_evaluate(config, tmp_path / name).summary
        runs[name] = tmp_path / name
        assert set(summary["test"]) == {"full", "sampled-20"}
        assert (tmp_path / name / "model" / "state.npz").is_file()
        run = load_run(tmp_path / name / "run")
        assert run.kind == "scores" and run.split_fingerprint == data.split_fingerprint

    config = tiny_config(name="neumf")
    config.model.pretrained.gmf_workdir = str(runs["gmf"])
    config.model.pretrained.mlp_workdir = str(runs["mlp"])
    neumf = ImplicitTask().build_model(config, data)
    gmf, mlp = load_model(runs["gmf"] / "model"), load_model(runs["mlp"] / "model")
    np.testing.assert_array_equal(neumf.gmf.item_embedding[...], gmf.tower.item_embedding[...])
    np.testing.assert_array_equal(neumf.mlp.hidden[1].kernel[...],
                                  mlp.tower.hidden[1].kernel[...])
    u, i = jnp.arange(data.num_users)[:, None], jnp.arange(data.num_items)[None, :]
    np.testing.assert_allclose(neumf(u, i), 0.5 * (gmf(u, i) + mlp(u, i)), rtol=1e-5,
                               atol=1e-5)

    # A run made on another split is refused: its weights may have seen our test items.
    other = tiny_config(name="neumf")
    other.split.name = "random"
    other.model.pretrained.gmf_workdir = str(runs["gmf"])
    other.model.pretrained.mlp_workdir = str(runs["mlp"])
    with pytest.raises(ValueError, match="another split"):
        ImplicitTask().build_model(other, load_implicit_data(other))
    # The pretrained workdirs must hold the right models.
    config.model.pretrained.gmf_workdir = str(runs["mlp"])
    with pytest.raises(ValueError, match="not 'gmf'"):
        ImplicitTask().build_model(config, data)


@pytest.mark.slow
def test_train_ncf_end_to_end(tmp_path):
    workdir = tmp_path / "neumf"
    proc = run_train("ncf_tiny", workdir, "--config.model.name=neumf",
                     "--config.split.name=user_temporal")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test (full)" in proc.stdout and "test (sampled-20)" in proc.stdout
    metrics = json.loads((workdir / "test_metrics.json").read_text())
    assert metrics["split_protocol"] == "user_temporal" and metrics["model"] == "neumf"
    full = metrics["test"]["full"]
    assert {"hr@10", "ndcg@10", "recall@10", "hr@100", "ndcg@100", "recall@100"} <= set(full)
    assert metrics["test"]["sampled-20"]["protocol"] == "sampled-20"
    assert [json.loads(line)["epoch"] for line in
            (workdir / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    for name in ("report.md", "learning_curve.png", "model/state.npz", "run/run.json",
                 "split/split.npz", "ids/item_ids.json"):
        assert (workdir / name).is_file(), name
    assert "sampled-20" in (workdir / "report.md").read_text()
