"""Per-pair causal inputs computed in the step from the O(events) tables equal the rows
``build_causal_user_inputs`` materialises, and the training step on pointers equals the step on
materialised rows."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from recsys_jax.config_files import sibling_config
from recsys_jax.data import ids, splits, synthetic
from recsys_jax.data.causal_events import build_causal_event_tables
from recsys_jax.data.features import build_causal_user_inputs, build_two_tower_features
from recsys_jax.models.two_tower import TwoTower
from recsys_jax.tasks.pair_inputs import materialise_pair_inputs, pair_inputs_fn
from recsys_jax.tasks.retrieval import prepare_retrieval_data, train_two_tower
from recsys_jax.tasks.retrieval_losses import make_retrieval_loss, sampling_log_q
from recsys_jax.training import steps
from tests.benchmarks.scripts import ROOT


@pytest.fixture(scope="module")
def encoded_split():
    # Integer ratings 1-5, demographics, ties in time; users with 4 to ~40 training events.
    ds, _ = ids.encode_dataset(synthetic.generate_synthetic(40, 30, 900, seed=3))
    return ds, splits.make_split(ds.interactions, "leave_one_out")


def _inputs(ds, split, *, history_len, demographics, activity, block=16):
    kwargs = dict(users=ds.users, items=ds.items, genre_names=ds.genre_names,
                  num_users=ds.num_users, use_demographics=demographics, activity=activity)
    features = build_two_tower_features(split.train, history_len=history_len, **kwargs)
    tables, position = build_causal_event_tables(split.train, features, block=block, **kwargs)
    return features, tables, position, kwargs


@pytest.mark.parametrize("history_len,demographics,activity,block", [
    (4, True, True, 3), (4, True, True, 16), (0, False, False, 1), (6, False, True, 5)])
def test_step_inputs_equal_the_materialised_rows(encoded_split, history_len, demographics,
                                                 activity, block):
    ds, split = encoded_split
    features, tables, position, kwargs = _inputs(ds, split, history_len=history_len,
                                                 demographics=demographics, activity=activity,
                                                 block=block)
    # The pairs are a subset of the events; every event counts in the statistics.
    keep = (split.train["rating"] >= 3).to_numpy()
    want = build_causal_user_inputs(split.train, features, **kwargs).subset(keep)
    got = materialise_pair_inputs(split.train["user_id"].to_numpy()[keep], position[keep],
                                  tables, chunk_size=97)  # Chunks that do not divide the pairs.
    assert sorted(got) == sorted(["user_features"] + (["history_ids", "history_mask"]
                                                       if history_len else []))
    if history_len:
        np.testing.assert_array_equal(got["history_ids"], want.history_ids)
        np.testing.assert_array_equal(got["history_mask"], want.history_mask)
    assert got["user_features"].shape == want.user.shape
    # Float32 rounding only (the host computes in float64, then rounds).
    np.testing.assert_allclose(got["user_features"], want.user, rtol=1e-5, atol=1e-5)


def test_a_step_on_pointers_equals_the_step_on_materialised_rows(encoded_split):
    ds, split = encoded_split
    features, tables, position, kwargs = _inputs(ds, split, history_len=4, demographics=True,
                                                 activity=False)
    users = split.train["user_id"].to_numpy(np.int32)
    items = split.train["item_id"].to_numpy(np.int32)
    rows = np.arange(0, 64)
    materialised = build_causal_user_inputs(split.train, features, **kwargs).subset(rows)
    batch = {"user": users[rows], "item": items[rows], "weight": np.ones(64, np.float32)}
    log_q = sampling_log_q(items, ds.num_items)

    def one_step(loss_fn, batch, tables=None):
        model = TwoTower(features.user, features.item, rngs=nnx.Rngs(0), hidden_dim=16, dim=8,
                         history_ids=features.history_ids, history_mask=features.history_mask,
                         history_positions=True)
        graphdef, state = nnx.split((model, nnx.Optimizer(model, optax.sgd(0.1),
                                                          wrt=nnx.Param)))
        state, metrics = steps.make_train_step(graphdef, loss_fn)(state, batch, jax.random.key(0),
                                                                  tables)
        return float(metrics["loss"]), nnx.state(nnx.merge(graphdef, state)[0], nnx.Param)

    plain, plain_params = one_step(make_retrieval_loss(num_items=ds.num_items, item_log_q=log_q),
                                   {**batch, "user_features": materialised.user,
                                    "history_ids": materialised.history_ids,
                                    "history_mask": materialised.history_mask})
    pointed, pointed_params = one_step(
        make_retrieval_loss(num_items=ds.num_items, item_log_q=log_q,
                            pair_inputs=pair_inputs_fn(tables)),
        {**batch, "event": position[rows]}, tables.arrays())
    assert pointed == pytest.approx(plain, rel=1e-5)
    for (path, a), (_, b) in zip(nnx.to_flat_state(pointed_params),
                                 nnx.to_flat_state(plain_params), strict=True):
        np.testing.assert_allclose(np.asarray(a[...]), np.asarray(b[...]), rtol=1e-5,
                                   atol=1e-6, err_msg=str(path))


@pytest.mark.slow
def test_the_retrieval_task_trains_the_same_with_its_pairs_streamed_from_the_host():
    """The tables stay on the device while the pointers stream: the same epoch as on-device."""
    config = sibling_config(ROOT / "configs" / "two_tower_tiny.py", "two_tower_tiny")
    config.training.epochs = 1
    data = prepare_retrieval_data(config)
    assert set(data.train) == {"user", "item", "event"} and data.train_tables
    histories = []
    for mode in ("always", "never"):
        config.training.data_on_device = mode
        _, result = train_two_tower(config, data, None)
        assert result.data_on_device == (mode == "always")
        histories.append(result.history[0])
    assert histories[1]["train_loss"] == pytest.approx(histories[0]["train_loss"], rel=1e-5)
    assert histories[1]["val_recall@10"] == pytest.approx(histories[0]["val_recall@10"],
                                                          abs=1e-6)
