"""The sequential task: inputs never read a test event; end to end, a planted order is learnt."""

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flax import nnx

from recsys_jax.data import splits
from recsys_jax.data.synthetic import generate_synthetic
from recsys_jax.evaluation.runs import load_run
from recsys_jax.models.registry import load_model
from recsys_jax.models.sasrec import SASRec
from recsys_jax.tasks.config_checks import ConfigError
from recsys_jax.tasks.runner import train_and_evaluate
from recsys_jax.tasks.sequential import SequenceRanker, sequential_data_from_split

REPO = Path(__file__).resolve().parents[2]
MAX_LEN = 8


def tiny_config():
    spec = importlib.util.spec_from_file_location("sasrec_tiny",
                                                  REPO / "configs" / "sasrec_tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _split():
    data = generate_synthetic(40, 50, 900, seed=1).interactions
    return splits.make_split(data, "leave_one_out", seed=0)


def _data(split, **kwargs):
    return sequential_data_from_split(split, num_users=40, num_items=50, max_len=MAX_LEN,
                                      windows="all", **kwargs)


def test_validation_users_see_train_and_test_users_train_plus_val():
    split = _split()
    data = _data(split)
    val_last = split.val.set_index("user_id")["item_id"]
    for user in range(40):
        train = set(split.train.loc[split.train["user_id"] == user, "item_id"])
        assert set(data.val_inputs[user][data.val_inputs[user] != 50]) <= train
        assert data.test_inputs[user, -1] == val_last[user]  # the most recent event
        np.testing.assert_array_equal(data.test_inputs[user, :-1], data.val_inputs[user, 1:])
    assert set(np.unique(data.train["sequence"])) - {50} <= set(split.train["item_id"])
    train_only = _data(split, test_inputs="train")
    np.testing.assert_array_equal(train_only.test_inputs, data.val_inputs)


def test_test_events_move_no_input_and_no_score():
    split = _split()
    rng = np.random.default_rng(0)
    # Other items, at other times: whatever the test part holds, nothing the model reads moves.
    unused = {u: sorted(set(range(50)) - set(split.train.loc[split.train["user_id"] == u,
                                                             "item_id"])
                        - set(split.val.loc[split.val["user_id"] == u, "item_id"]))
              for u in range(40)}
    test = split.test.copy()
    test["item_id"] = [rng.choice(unused[u]) for u in test["user_id"]]
    test["timestamp"] = test["timestamp"] + 1000
    base, moved = _data(split), _data(dataclasses.replace(split, test=test))
    for name in ("user", "sequence"):
        np.testing.assert_array_equal(base.train[name], moved.train[name])
    np.testing.assert_array_equal(base.val_inputs, moved.val_inputs)
    np.testing.assert_array_equal(base.test_inputs, moved.test_inputs)
    model = SASRec(50, max_len=MAX_LEN, dim=8, num_blocks=1, rngs=nnx.Rngs(0))
    scores = [SequenceRanker(model, d.test_inputs).ranking_embeddings() for d in (base, moved)]
    for a, b in zip(*scores, strict=True):
        np.testing.assert_array_equal(a, b)
    # The perturbation is visible to an encoder that (wrongly) read the test part.
    leaky = _data(dataclasses.replace(split, val=pd.concat([split.val, split.test])))
    leaky_moved = _data(dataclasses.replace(split, val=pd.concat([split.val, test])))
    assert not np.array_equal(leaky.test_inputs, leaky_moved.test_inputs)


def test_a_random_split_is_refused():
    split = splits.make_split(generate_synthetic(20, 30, 300, seed=0).interactions, "random")
    with pytest.raises(ValueError, match="follow the training events"):
        sequential_data_from_split(split, num_users=20, num_items=30, max_len=4)
    config = tiny_config()
    config.split.name = "random"
    config.model.num_heads = 3
    with pytest.raises(ConfigError) as error:
        train_and_evaluate(config, None)
    assert "split.name = 'random'" in str(error.value)
    assert "multiple of model.num_heads = 3" in str(error.value)


def planted_walks(num_users: int = 48, num_items: int = 20, length: int = 12) -> pd.DataFrame:
    """Each user walks the catalogue i → i + 1 (mod ``num_items``) from a random start: the next
    item is a function of the last one, which popularity cannot know and SASRec must learn."""
    rng = np.random.default_rng(0)
    walks = (rng.integers(0, num_items, num_users)[:, None] + np.arange(length)) % num_items
    return pd.DataFrame({"user_id": np.repeat(np.arange(num_users), length),
                         "item_id": walks.ravel(), "rating": 4.0,
                         "timestamp": np.tile(np.arange(length), num_users)})


@pytest.mark.slow
def test_train_sasrec_end_to_end_learns_a_planted_next_item_rule(tmp_path):
    split = splits.make_split(planted_walks(), "leave_one_out", seed=0)
    data = sequential_data_from_split(split, num_users=48, num_items=20, max_len=MAX_LEN,
                                      windows="all", dataset="planted walks")
    config = tiny_config()  # the softmax loss
    config.model.update(max_len=MAX_LEN, dim=16, num_blocks=1, dropout=0.0)
    config.optimizer.lr = 0.05
    config.training.epochs = 12
    result = train_and_evaluate(config, tmp_path, data=data)
    history = result.fit.history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert result.fit.best_value >= 0.9  # val NDCG@10: the next item ranks first
    summary = json.loads((tmp_path / "test_metrics.json").read_text())
    assert summary["task"] == "sequential" and summary["test_user_inputs"] == "train+val"
    # Test users are encoded from train + val: the validation item is their last input, and
    # the test item follows it.
    assert summary["test"]["full"]["hr@10"] >= 0.9
    assert {"ndcg@10", "hr@100"} <= set(summary["test"]["full"])
    assert summary["test"]["sampled-20"]["num_users"] == 48
    run = load_run(tmp_path / "run")
    assert run.seen_parts == ("train", "val")
    # The saved model and the test inputs give back the run's embeddings.
    again = SequenceRanker(load_model(tmp_path / "model"), data.test_inputs).ranking_embeddings()
    np.testing.assert_allclose(again[0], run.source.users, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again[1], run.source.items, rtol=1e-6)
