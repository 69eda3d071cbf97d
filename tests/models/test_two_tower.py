"""TwoTower: unit-norm towers, positive temperature, history pooling, save/load, registry."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from recsys_jax.data.features import Standardizer, TwoTowerFeatures
from recsys_jax.models import two_tower
from recsys_jax.models.registry import build_model, load_model, save_model
from recsys_jax.models.two_tower import TwoTower
from recsys_jax.tasks.retrieval_losses import (
    in_batch_softmax_loss,
    make_retrieval_loss,
    sampling_log_q,
)
from recsys_jax.training import steps
from recsys_jax.training.losses import weighted_mean


def _features(num_users=7, num_items=9, history_len=3, seed=0):
    rng = np.random.default_rng(seed)
    user, item = rng.normal(size=(num_users, 5)), rng.normal(size=(num_items, 4))
    hist = rng.integers(0, num_items, size=(num_users, history_len)).astype(np.int32)
    mask = (rng.random((num_users, history_len)) < 0.7).astype(np.float32)
    return TwoTowerFeatures(user=user.astype(np.float32), item=item.astype(np.float32),
                            user_names=tuple("abcde"), item_names=tuple("wxyz"),
                            user_scaler=Standardizer.fit(user), item_scaler=Standardizer.fit(item),
                            history_ids=hist, history_mask=mask)


@pytest.mark.parametrize("config", [dict(), dict(history=True), dict(user_id_dim=3,
                                                                     item_id_dim=2)])
def test_outputs_are_unit_norm(config):
    f = _features()
    model = build_model({"name": "two_tower", "hidden_dim": 16, "dim": 8, **config},
                        num_users=7, num_items=9, train={}, rngs=nnx.Rngs(0), features=f)
    arrays = model.export_arrays(chunk_size=4)  # Chunks that do not divide the counts.
    assert arrays["user_embeddings"].shape == (7, 8)
    assert arrays["item_embeddings"].shape == (9, 8)
    for a in arrays.values():
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(arrays["item_embeddings"][3],
                               np.asarray(model.item_embeddings(jnp.array([3])))[0], rtol=1e-5)
    scores = model(jnp.array([0, 1]), jnp.array([2, 3]))
    np.testing.assert_allclose(scores, np.sum(arrays["user_embeddings"][[0, 1]]
                                              * arrays["item_embeddings"][[2, 3]], 1),
                               rtol=1e-4, atol=1e-6)


def test_temperature_starts_at_init_and_stays_positive():
    f = _features()
    model = TwoTower(f.user, f.item, rngs=nnx.Rngs(0), hidden_dim=8, dim=4)
    assert float(model.temperature) == pytest.approx(0.07, rel=1e-6)
    model.log_temperature[...] = jnp.float32(-50.0)
    assert float(model.temperature) == pytest.approx(two_tower.MIN_TEMPERATURE, rel=1e-5)
    model.log_temperature[...] = jnp.float32(50.0)
    assert float(model.temperature) == pytest.approx(two_tower.MAX_TEMPERATURE, rel=1e-5)


def test_history_pooling_is_masked_mean_of_item_embeddings():
    f = _features()
    model = TwoTower(f.user, f.item, rngs=nnx.Rngs(0), hidden_dim=8, dim=4,
                     history_ids=f.history_ids, history_mask=f.history_mask)
    items = np.asarray(model.item_embeddings(jnp.arange(9)))
    pooled = np.asarray(model.pooled_history(jnp.asarray(f.history_ids),
                                             jnp.asarray(f.history_mask)))
    for u in range(7):
        m = f.history_mask[u] > 0
        want = items[f.history_ids[u][m]].mean(0) if m.any() else np.zeros(4)
        np.testing.assert_allclose(pooled[u], want, rtol=1e-5, atol=1e-6)
    # Precomputed item table (serving) gives the same user vectors.
    np.testing.assert_allclose(model.user_embeddings(jnp.arange(7), jnp.asarray(items)),
                               model.user_embeddings(jnp.arange(7)), rtol=1e-5, atol=1e-6)


def test_history_position_weights_are_a_masked_softmax():
    f = _features()
    model = TwoTower(f.user, f.item, rngs=nnx.Rngs(0), hidden_dim=8, dim=4,
                     history_ids=f.history_ids, history_mask=f.history_mask,
                     history_positions=True)
    items = np.asarray(model.item_embeddings(jnp.arange(9)))
    ids_, mask = jnp.asarray(f.history_ids), jnp.asarray(f.history_mask)
    uniform = TwoTower(f.user, f.item, rngs=nnx.Rngs(0), hidden_dim=8, dim=4,
                       history_ids=f.history_ids, history_mask=f.history_mask)
    # Zero logits: the plain masked mean.
    np.testing.assert_allclose(model.pooled_history(ids_, mask),
                               uniform.pooled_history(ids_, mask), rtol=1e-5, atol=1e-6)
    params = np.array([0.2, 0.0, -0.1], np.float32)
    model.history_position_logits[...] = jnp.asarray(params)
    pooled = np.asarray(model.pooled_history(ids_, mask))
    for u in range(7):
        w = np.exp(two_tower.HISTORY_POSITION_SCALE * params) * f.history_mask[u]
        want = (w[:, None] * items[f.history_ids[u]]).sum(0) / w.sum() if w.sum() else 0.0
        np.testing.assert_allclose(pooled[u], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("history_positions", [False, True])
def test_save_load_round_trip(tmp_path, history_positions):
    f = _features()
    model = TwoTower(f.user, f.item, rngs=nnx.Rngs(3), hidden_dim=8, dim=4,
                     history_ids=f.history_ids, history_mask=f.history_mask, item_id_dim=2,
                     history_positions=history_positions)
    if history_positions:
        model.history_position_logits[...] = jnp.array([1.0, -2.0, 0.5])
    config = {"name": "two_tower", "hidden_dim": 8, "dim": 4, "item_id_dim": 2,
              "history": True, "history_positions": history_positions}
    save_model(model, tmp_path, model_config=config, num_users=7, num_items=9)
    loaded = load_model(tmp_path, features=f)
    for name, array in model.export_arrays().items():
        np.testing.assert_allclose(loaded.export_arrays()[name], array, rtol=1e-6)
    # The stored inputs travel with the model: other feature values of the same shapes are
    # replaced by the saved ones.
    shifted = dataclasses.replace(f, user=f.user + 1.0)
    again = load_model(tmp_path, features=shifted)
    np.testing.assert_allclose(again.export_arrays()["user_embeddings"],
                               model.export_arrays()["user_embeddings"], rtol=1e-6)


def test_builder_checks_feature_sizes():
    with pytest.raises(ValueError, match="features cover"):
        build_model({"name": "two_tower"}, num_users=8, num_items=9, train={},
                    rngs=nnx.Rngs(0), features=_features())
    with pytest.raises(ValueError, match="needs features"):
        build_model({"name": "two_tower"}, num_users=7, num_items=9, train={},
                    rngs=nnx.Rngs(0))


def _step_problem(num_items=40, batch=6, history_len=3, seed=0, **model_options):
    """A model over ``num_items`` items and a batch of per-row inputs (padded histories,
    repeated items) whose ids number fewer than the catalogue."""
    rng = np.random.default_rng(seed)
    users = 9
    model = TwoTower(rng.normal(size=(users, 5)).astype(np.float32),
                     rng.normal(size=(num_items, 4)).astype(np.float32), rngs=nnx.Rngs(seed),
                     hidden_dim=8, dim=4,
                     history_ids=rng.integers(0, num_items, (users, history_len)),
                     history_mask=np.ones((users, history_len), np.float32), **model_options)
    mask = (rng.random((batch, history_len)) < 0.7).astype(np.float32)
    items = rng.integers(0, num_items, batch)
    items[1] = items[0]  # An accidental hit.
    batch = {"user": jnp.asarray(rng.integers(0, users, batch)), "item": jnp.asarray(items),
             "weight": jnp.asarray([1, 1, 1, 1, 1, 0], jnp.float32),
             "user_features": jnp.asarray(rng.normal(size=(batch, 5)), jnp.float32),
             "history_ids": jnp.asarray(rng.integers(0, num_items, mask.shape) * (mask > 0)),
             "history_mask": jnp.asarray(mask)}
    return model, batch


def _full_catalogue_loss(model, batch, rng, *, num_items, log_q, m):
    """The retrieval loss as it was computed before: the item tower over the whole catalogue,
    the histories and candidates gathered from that table."""
    items = batch["item"]
    negatives = jax.random.randint(rng, (m,), 0, num_items, dtype=items.dtype) if m else None
    ids_ = items if negatives is None else jnp.concatenate([items, negatives])
    offsets = None
    if log_q is not None:
        offsets = jnp.asarray(log_q)[ids_]
        if m:
            offsets = jnp.log(items.shape[0] * jnp.exp(offsets) + m / num_items)
    table = model.item_embeddings(jnp.arange(num_items))
    users = model.encode_users(batch["user_features"], user_ids=batch["user"],
                               history_ids=batch["history_ids"],
                               history_mask=batch["history_mask"], item_table=table)
    vectors = table[ids_]
    per_row = in_batch_softmax_loss(
        users, vectors[:items.shape[0]], items, batch["weight"], model.temperature,
        candidate_log_q=offsets, remove_accidental_hits=True,
        negative_vectors=None if m == 0 else vectors[items.shape[0]:], negative_ids=negatives)
    return weighted_mean(per_row, batch["weight"])


@pytest.mark.parametrize("logq,negatives,model_options", [
    (False, 0, {}),
    (True, 4, {"item_id_dim": 2, "user_id_dim": 3}),
    (True, 4, {"item_id_dim": 2, "history_positions": True, "max_step_items": 20})])
def test_step_encodes_only_its_items_with_the_full_catalogue_loss_and_gradients(
        logq, negatives, model_options):
    model, batch = _step_problem(**model_options)
    if model_options.get("history_positions"):
        model.history_position_logits[...] = jnp.asarray([0.1, -0.05, 0.02])
    log_q = sampling_log_q(np.arange(40) % 7, 40) if logq else None
    loss_fn = make_retrieval_loss(num_items=40, item_log_q=log_q,
                                  num_random_negatives=negatives)
    key = jax.random.key(1)
    # The step's table: one row per id it gathers (6 × 3 history + 6 + M < 40 items), or the
    # cap; a cap of 20 binds (24 + 4 ids) without being exceeded (at most 20 distinct here).
    table, _ = model.step_item_table(batch["history_ids"], batch["item"],
                                     jnp.zeros((negatives,), jnp.int32))
    assert table.shape[0] == min(24 + negatives, model_options.get("max_step_items") or 99)
    got, got_grads = nnx.jit(nnx.value_and_grad(lambda m: loss_fn(m, batch, key)[0]))(model)
    want, want_grads = nnx.jit(nnx.value_and_grad(lambda m: _full_catalogue_loss(
        m, batch, key, num_items=40, log_q=log_q, m=negatives)))(model)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    flat_want = dict(nnx.to_flat_state(want_grads))
    for path, g in nnx.to_flat_state(got_grads):
        np.testing.assert_allclose(np.asarray(g[...]), np.asarray(flat_want[path][...]),
                                   rtol=1e-5, atol=1e-7, err_msg=str(path))


def test_a_catalogue_no_larger_than_the_step_is_encoded_whole():
    model, batch = _step_problem(num_items=20)  # 24 ids in a step, 20 items.
    table, (history, items) = model.step_item_table(batch["history_ids"], batch["item"])
    np.testing.assert_allclose(table, model.item_embeddings(jnp.arange(20)), rtol=1e-6)
    np.testing.assert_array_equal(history, batch["history_ids"])
    np.testing.assert_array_equal(items, batch["item"])


def test_a_step_needing_more_items_than_the_cap_is_refused():
    model, batch = _step_problem(max_step_items=8)
    distinct = len(np.unique(np.concatenate([np.ravel(batch["history_ids"]), batch["item"]])))
    assert distinct > 8
    graphdef, state = nnx.split((model, nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)))
    step = steps.make_train_step(graphdef, make_retrieval_loss(num_items=40))
    with pytest.raises(Exception, match=f"needs the item tower on {distinct} distinct items, but "
                                        "model.max_step_items = 8"):
        jax.block_until_ready(step(state, batch, jax.random.key(0)))
    with pytest.raises(ValueError, match="max_step_items"):
        TwoTower(np.zeros((2, 1)), np.zeros((3, 1)), rngs=nnx.Rngs(0), max_step_items=-1)


def _id_history_loss(model, batch, rng, *, num_items, log_q, m):
    """The retrieval loss with the id-embedding history, written out independently: the
    position-weighted mean of the table's rows by hand, the item tower on the candidates."""
    items = batch["item"]
    negatives = jax.random.randint(rng, (m,), 0, num_items, dtype=items.dtype)
    ids_ = jnp.concatenate([items, negatives])
    offsets = jnp.log(items.shape[0] * jnp.exp(jnp.asarray(log_q)[ids_]) + m / num_items)
    w = batch["history_mask"] * jnp.exp(
        two_tower.HISTORY_POSITION_SCALE * model.history_position_logits[...])
    rows = model.history_item_embedding[...][batch["history_ids"]]             # [B, L, d]
    pooled = jnp.einsum("bl,bld->bd", w, rows) / jnp.maximum(w.sum(1), 1e-6)[:, None]
    users = model.user_tower(jnp.concatenate([batch["user_features"], pooled], -1))
    vectors = model.item_tower(model.item_features[...][ids_])
    per_row = in_batch_softmax_loss(
        users, vectors[:items.shape[0]], items, batch["weight"], model.temperature,
        candidate_log_q=offsets, remove_accidental_hits=True,
        negative_vectors=vectors[items.shape[0]:], negative_ids=negatives)
    return weighted_mean(per_row, batch["weight"])


def test_id_embedding_history_loss_and_gradients_equal_an_independent_computation():
    model, batch = _step_problem(history_positions=True, history_source="id_embedding")
    # Logits of ≈ ±1 after the ×10 scale: positions weigh differently (max-shift exercised).
    model.history_position_logits[...] = jnp.asarray([0.1, -0.05, 0.02])
    log_q = sampling_log_q(np.arange(40) % 7, 40)
    loss_fn = make_retrieval_loss(num_items=40, item_log_q=log_q, num_random_negatives=4)
    key = jax.random.key(1)
    got, got_grads = nnx.jit(nnx.value_and_grad(lambda m: loss_fn(m, batch, key)[0]))(model)
    want, want_grads = nnx.jit(nnx.value_and_grad(lambda m: _id_history_loss(
        m, batch, key, num_items=40, log_q=log_q, m=4)))(model)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    flat_want = dict(nnx.to_flat_state(want_grads))
    paths = [path for path, _ in nnx.to_flat_state(got_grads)]
    assert ("history_item_embedding",) in paths and ("history_position_logits",) in paths
    for path, g in nnx.to_flat_state(got_grads):
        np.testing.assert_allclose(np.asarray(g[...]), np.asarray(flat_want[path][...]),
                                   rtol=1e-5, atol=1e-7, err_msg=str(path))
    # Only rows the batch's unmasked history reads get a gradient.
    table_grad = np.asarray(got_grads["history_item_embedding"][...])
    read = np.unique(np.asarray(batch["history_ids"])[np.asarray(batch["history_mask"]) > 0])
    assert set(np.flatnonzero(np.abs(table_grad).sum(1))) <= set(read)
    # Serving pools the same table: user_embeddings = the tower on the stored inputs.
    users = jnp.arange(3)
    want_users = model.encode_users(model.user_features[...][users],
                                    history_ids=model.history_ids[...][users],
                                    history_mask=model.history_mask[...][users])
    np.testing.assert_allclose(model.user_embeddings(users, item_table=jnp.zeros((40, 4))),
                               want_users, rtol=1e-6)


def _item_tower_rows(fn, *args) -> set[int]:
    """Leading sizes of the item tower's first layer's outputs in ``fn``'s program: the dot
    products of the item features' width (4) into the hidden width (8)."""
    rows = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                lhs, rhs = (v.aval.shape for v in eqn.invars)
                if lhs[-1:] == (4,) and rhs == (4, 8):
                    rows.add(lhs[0])
            for sub in jax.core.jaxprs_in_params(eqn.params):
                walk(sub)
    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return rows


@pytest.mark.parametrize("source,want", [("item_tower", {6 * 4 + 5}),
                                         ("id_embedding", {6 + 5})])
def test_the_step_runs_the_item_tower_on_b_plus_m_rows_with_the_id_history(source, want):
    # B = 6 rows, L = 3, M = 5 negatives, 40 items: the item-tower history encodes the
    # B(L + 1) + M = 29 ids of the step, the id-embedding history the B + M = 11 candidates.
    model, batch = _step_problem(history_source=source)
    loss_fn = make_retrieval_loss(num_items=40, num_random_negatives=5)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params):
        return loss_fn(nnx.merge(graphdef, params, rest), batch, jax.random.key(0))[0]
    assert _item_tower_rows(jax.grad(loss), params) == want


def test_id_embedding_history_trains_row_sparsely_and_round_trips(tmp_path):
    from recsys_jax.training.optimizers import make_model_optimizer
    model, batch = _step_problem(history_source="id_embedding")
    before = np.asarray(model.history_item_embedding[...])
    optimizer, _ = make_model_optimizer(
        model, {"name": "adamw", "lr": 0.01, "weight_decay": 1e-4, "tables": "lazy_adam"},
        steps_per_epoch=1, num_epochs=1)
    graphdef, state = nnx.split((model, optimizer))
    state, _ = steps.make_train_step(graphdef, make_retrieval_loss(num_items=40))(
        state, batch, jax.random.key(0))
    model, _ = nnx.merge(graphdef, state)
    after = np.asarray(model.history_item_embedding[...])
    # Rows of unmasked history entries of real (weight-1) rows move; no other row does.
    real = np.asarray(batch["weight"]) > 0
    read = np.asarray(batch["history_ids"])[real][np.asarray(batch["history_mask"])[real] > 0]
    moved = np.flatnonzero(np.any(after != before, axis=1))
    assert len(moved) and set(moved) <= set(read)
    config = {"name": "two_tower", "hidden_dim": 8, "dim": 4, "history": True,
              "history_source": "id_embedding"}
    f = TwoTowerFeatures(user=np.asarray(model.user_features[...]),
                         item=np.asarray(model.item_features[...]), user_names=tuple("abcde"),
                         item_names=tuple("wxyz"), user_scaler=None, item_scaler=None,
                         history_ids=np.asarray(model.history_ids[...]),
                         history_mask=np.asarray(model.history_mask[...]))
    save_model(model, tmp_path, model_config=config, num_users=9, num_items=40)
    loaded = load_model(tmp_path, features=f)
    np.testing.assert_array_equal(loaded.history_item_embedding[...], after)
    np.testing.assert_allclose(loaded.export_arrays()["user_embeddings"],
                               model.export_arrays()["user_embeddings"], rtol=1e-6)
    with pytest.raises(ValueError, match="history_source"):
        TwoTower(np.zeros((2, 1)), np.zeros((3, 1)), rngs=nnx.Rngs(0), history_source="x")
