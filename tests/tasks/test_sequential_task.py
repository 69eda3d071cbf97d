"""The sequential task: inputs never read a test event, a planted order is learnt, end to end."""

import dataclasses
import importlib.util
import json
from pathlib import Path

import jax
import numpy as np
import optax
import pandas as pd
import pytest
from flax import nnx

from recsys_jax.data import splits
from recsys_jax.data.synthetic import generate_synthetic
from recsys_jax.evaluation.runs import load_run
from recsys_jax.evaluation.validators import RankingValidator
from recsys_jax.models.registry import load_model
from recsys_jax.models.sasrec import SASRec
from recsys_jax.tasks.config_checks import ConfigError
from recsys_jax.tasks.runner import train_and_evaluate
from recsys_jax.tasks.sequential import SequenceRanker, sequential_data_from_split
from recsys_jax.tasks.sequential_losses import make_sequence_softmax_loss
from recsys_jax.training.loop import FitConfig, fit

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


def test_sasrec_learns_a_planted_next_item_rule():
    """Each user walks the catalogue i → i + 1 (mod 20) from a random start: the next item is
    a function of the last one, which popularity cannot know and SASRec must learn."""
    num_users, num_items, length = 48, 20, 10
    rng = np.random.default_rng(0)
    walks = (rng.integers(0, num_items, num_users)[:, None] + np.arange(length + 2)) % num_items
    events = pd.DataFrame({"user_id": np.repeat(np.arange(num_users), length + 2),
                           "item_id": walks.ravel(),
                           "timestamp": np.tile(np.arange(length + 2), num_users)})
    split = splits.make_split(events, "leave_one_out", seed=0)
    data = sequential_data_from_split(split, num_users=num_users, num_items=num_items,
                                      max_len=MAX_LEN, windows="all")
    model = SASRec(num_items, max_len=MAX_LEN, dim=16, num_blocks=1, dropout=0.0,
                   rngs=nnx.Rngs(0))
    validator = RankingValidator(data.target("val"), ks=(1,), metrics=("hr",))

    def validate(m):
        return validator(SequenceRanker(m, data.val_inputs))

    before = validate(model)["val_hr@1"]
    result = fit(model, nnx.Optimizer(model, optax.adam(0.02), wrt=nnx.Param),
                 make_sequence_softmax_loss(num_items=num_items), data.train, validate,
                 FitConfig(batch_size=16, num_epochs=30, monitor="val_hr@1", mode="max"),
                 workdir=None)
    assert before < 0.2
    assert validate(model)["val_hr@1"] >= 0.9, result.history[-1]
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["bce", "softmax"])
def test_train_sasrec_end_to_end(tmp_path, loss):
    config = tiny_config()
    config.loss.name = loss
    result = train_and_evaluate(config, tmp_path / loss)
    summary = json.loads((tmp_path / loss / "test_metrics.json").read_text())
    assert summary["task"] == "sequential" and summary["test_user_inputs"] == "train+val"
    assert {"hr@10", "ndcg@10", "hr@100"} <= set(summary["test"]["full"])
    assert summary["test"]["sampled-20"]["num_users"] == 60
    run = load_run(tmp_path / loss / "run")
    assert run.seen_parts == ("train", "val")
    # The saved model and the test inputs give back the run's embeddings.
    again = SequenceRanker(load_model(tmp_path / loss / "model"),
                           result.data.test_inputs).ranking_embeddings()
    np.testing.assert_allclose(again[0], run.source.users, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again[1], run.source.items, rtol=1e-6)
    assert jax.tree.leaves(nnx.state(result.model))  # the trained model comes back in memory
