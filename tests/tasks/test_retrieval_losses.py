"""The in-batch softmax equals a hand-computed NumPy cross-entropy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from recsys_jax.models.two_tower import TwoTower
from recsys_jax.tasks.retrieval_losses import (
    in_batch_softmax_loss,
    make_retrieval_loss,
    sampling_log_q,
)


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _reference(u, v, ids, tau, *, log_q=None, remove_hits=False, weight=None, neg=None,
               neg_ids=None):
    """Row by row, with Python loops: -log softmax of the diagonal over allowed candidates."""
    cands = v if neg is None else np.concatenate([v, neg])
    cand_ids = ids if neg is None else np.concatenate([ids, neg_ids])
    b = len(u)
    weight = np.ones(b) if weight is None else weight
    out = []
    for i in range(b):
        logits, positive = [], None
        for j in range(len(cands)):
            s = float(u[i] @ cands[j]) / tau - (0.0 if log_q is None else log_q[j])
            if j == i:
                positive = s
                continue
            if j < b and weight[j] == 0 or remove_hits and cand_ids[j] == ids[i]:
                continue
            logits.append(s)
        all_logits = np.array(logits + [positive])
        m = all_logits.max()
        out.append(m + np.log(np.exp(all_logits - m).sum()) - positive)
    return np.array(out)


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    u = _unit(rng.normal(size=(5, 4)))
    v = _unit(rng.normal(size=(5, 4)))
    ids = np.array([3, 7, 3, 1, 7])  # items 3 and 7 appear twice: accidental hits
    v[2], v[4] = v[0], v[1]           # same item, same embedding
    q = np.array([0.3, 0.1, 0.3, 0.05, 0.1])
    return u.astype(np.float32), v.astype(np.float32), ids, np.log(q)


@pytest.mark.parametrize("logq", [False, True])
@pytest.mark.parametrize("remove_hits", [False, True])
def test_matches_numpy_cross_entropy(batch, logq, remove_hits):
    u, v, ids, log_q = batch
    tau = 0.07
    got = in_batch_softmax_loss(jnp.asarray(u), jnp.asarray(v), jnp.asarray(ids),
                                jnp.ones(5), jnp.float32(tau),
                                candidate_log_q=jnp.asarray(log_q) if logq else None,
                                remove_accidental_hits=remove_hits)
    want = _reference(u, v, ids, tau, log_q=log_q if logq else None, remove_hits=remove_hits)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_plain_loss_is_softmax_cross_entropy_of_the_logit_matrix(batch):
    u, v, ids, _ = batch
    got = in_batch_softmax_loss(jnp.asarray(u), jnp.asarray(v), jnp.asarray(ids), jnp.ones(5),
                                jnp.float32(0.5))
    want = optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(u @ v.T / 0.5),
                                                           jnp.arange(5))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5)


def test_padding_rows_are_not_candidates(batch):
    u, v, ids, _ = batch
    weight = np.array([1, 1, 1, 0, 1], np.float32)
    got = in_batch_softmax_loss(jnp.asarray(u), jnp.asarray(v), jnp.asarray(ids),
                                jnp.asarray(weight), jnp.float32(0.1))
    want = _reference(u, v, ids, 0.1, weight=weight)
    np.testing.assert_allclose(np.asarray(got)[weight > 0], want[weight > 0], rtol=1e-5)


def test_random_negatives_with_mixed_correction_and_hits(batch):
    u, v, ids, log_q = batch
    rng = np.random.default_rng(1)
    neg = _unit(rng.normal(size=(3, 4))).astype(np.float32)
    neg_ids = np.array([7, 9, 2])
    cand_log_q = rng.normal(size=8)
    got = in_batch_softmax_loss(jnp.asarray(u), jnp.asarray(v), jnp.asarray(ids), jnp.ones(5),
                                jnp.float32(0.2), candidate_log_q=jnp.asarray(cand_log_q),
                                remove_accidental_hits=True, negative_vectors=jnp.asarray(neg),
                                negative_ids=jnp.asarray(neg_ids))
    want = _reference(u, v, ids, 0.2, log_q=cand_log_q, remove_hits=True, neg=neg,
                      neg_ids=neg_ids)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def _autodiff_loss(u, v, ids, weight, tau, log_q, remove_hits, neg, neg_ids):
    """The loss written with masks and ``logsumexp`` only, for JAX's own autodiff."""
    cands, cand_ids = jnp.concatenate([v, neg]), jnp.concatenate([ids, neg_ids])
    b, n = len(ids), len(cand_ids)
    logits = u @ cands.T / tau - log_q[None, :]
    diagonal = jnp.eye(b, n, dtype=bool)
    keep = (jnp.concatenate([weight > 0, jnp.ones(n - b, bool)])[None, :] | diagonal)
    if remove_hits:
        keep &= ~((cand_ids[None, :] == ids[:, None]) & ~diagonal)
    logits = jnp.where(keep, logits, -1e9)
    per_row = jax.nn.logsumexp(logits, axis=1) - jnp.diagonal(logits)
    return jnp.sum(per_row * jnp.arange(1.0, b + 1))  # Unequal row weights in the gradient.


@pytest.mark.parametrize("remove_hits", [False, True])
def test_gradients_equal_autodiff_of_the_masked_logsumexp(batch, remove_hits):
    # The loss has a hand-written backward pass: its gradients in every input (users,
    # candidates, τ, the logQ offsets) equal JAX's autodiff of the plain formula, with
    # padding rows, accidental hits and random negatives (one of which is an in-batch item).
    u, v, ids, _ = batch
    rng = np.random.default_rng(2)
    neg = jnp.asarray(_unit(rng.normal(size=(3, 4))), jnp.float32)
    neg_ids = jnp.asarray([7, 9, 2])
    log_q = jnp.asarray(rng.normal(size=8), jnp.float32)
    weight = jnp.asarray([1, 1, 0, 1, 1], jnp.float32)
    args = (jnp.asarray(u), jnp.asarray(v), jnp.float32(0.3), log_q, neg)

    def custom(u, v, tau, log_q, neg):
        per_row = in_batch_softmax_loss(u, v, jnp.asarray(ids), weight, tau,
                                        candidate_log_q=log_q, remove_accidental_hits=remove_hits,
                                        negative_vectors=neg, negative_ids=neg_ids)
        return jnp.sum(per_row * jnp.arange(1.0, 6))

    def plain(u, v, tau, log_q, neg):
        return _autodiff_loss(u, v, jnp.asarray(ids), weight, tau, log_q, remove_hits, neg,
                              neg_ids)
    got = jax.grad(custom, argnums=range(5))(*args)
    want = jax.grad(plain, argnums=range(5))(*args)
    np.testing.assert_allclose(custom(*args), plain(*args), rtol=1e-6)
    for name, g, w in zip(("users", "items", "temperature", "log_q", "negatives"), got,
                           want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=name)
    assert np.abs(np.asarray(want[3])).min() > 0  # every offset's gradient was live


def test_sampling_log_q_is_a_smoothed_distribution():
    log_q = sampling_log_q(np.array([0, 0, 1]), 3)
    np.testing.assert_allclose(np.exp(log_q), [3 / 6, 2 / 6, 1 / 6], rtol=1e-6)


@pytest.mark.parametrize("options", [dict(), dict(num_random_negatives=4),
                                     dict(remove_accidental_hits=False)])
def test_loss_fn_trains_a_two_tower(options):
    rng = np.random.default_rng(0)
    model = TwoTower(rng.normal(size=(6, 3)).astype(np.float32),
                     rng.normal(size=(5, 2)).astype(np.float32), rngs=nnx.Rngs(0),
                     hidden_dim=8, dim=4)
    loss_fn = make_retrieval_loss(num_items=5, item_log_q=sampling_log_q(np.arange(5), 5),
                                  **options)
    batch = {"user": jnp.arange(6) % 6, "item": jnp.array([0, 1, 2, 3, 4, 0]),
             "weight": jnp.ones(6)}
    optimizer = nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param)
    first = None
    for step in range(8):
        (loss, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(
            model, batch, jax.random.key(step))
        optimizer.update(model, grads)
        first = float(loss) if first is None else first
    assert np.isfinite(float(loss)) and float(loss) < first
    assert 1e-3 <= float(aux["temperature"]) <= 1.0


def test_per_row_user_inputs_replace_the_stored_rows():
    """Batches carrying causal inputs (``user_features``, ``history_*``) are encoded from
    them; the same rows as the stored ones give the same loss."""
    rng = np.random.default_rng(1)
    user = rng.normal(size=(4, 3)).astype(np.float32)
    hist = rng.integers(0, 5, size=(4, 2)).astype(np.int32)
    mask = np.ones((4, 2), np.float32)
    model = TwoTower(user, rng.normal(size=(5, 2)).astype(np.float32), rngs=nnx.Rngs(0),
                     hidden_dim=8, dim=4, history_ids=hist, history_mask=mask)
    loss_fn = make_retrieval_loss(num_items=5)
    batch = {"user": jnp.array([0, 1, 2, 3]), "item": jnp.array([0, 1, 2, 3]),
             "weight": jnp.ones(4)}
    stored, _ = loss_fn(model, batch, jax.random.key(0))
    same = {**batch, "user_features": jnp.asarray(user), "history_ids": jnp.asarray(hist),
            "history_mask": jnp.asarray(mask)}
    np.testing.assert_allclose(loss_fn(model, same, jax.random.key(0))[0], stored, rtol=1e-6)
    other = {**same, "history_mask": jnp.zeros((4, 2))}
    assert abs(float(loss_fn(model, other, jax.random.key(0))[0]) - float(stored)) > 1e-4


@pytest.mark.slow
def test_history_model_gathers_batch_items_from_the_catalogue_pass():
    """With the history tower the loss encodes the catalogue once and gathers the batch's
    items from it: the same value and gradients as encoding the batch's items directly."""
    rng = np.random.default_rng(2)
    model = TwoTower(rng.normal(size=(4, 3)).astype(np.float32),
                     rng.normal(size=(6, 2)).astype(np.float32), rngs=nnx.Rngs(0),
                     hidden_dim=8, dim=4, history_ids=rng.integers(0, 6, (4, 3)),
                     history_mask=np.ones((4, 3), np.float32), history_positions=True)
    log_q = sampling_log_q(np.array([0, 0, 1, 2, 5]), 6)
    loss_fn = make_retrieval_loss(num_items=6, item_log_q=log_q, num_random_negatives=3)
    batch = {"user": jnp.array([0, 1, 2, 3]), "item": jnp.array([1, 4, 4, 0]),
             "weight": jnp.ones(4)}
    key = jax.random.key(3)

    def direct(model):
        negatives = jax.random.randint(key, (3,), 0, 6, dtype=batch["item"].dtype)
        ids = jnp.concatenate([batch["item"], negatives])
        offsets = jnp.log(4 * jnp.exp(jnp.asarray(log_q)[ids]) + 3 / 6)
        return in_batch_softmax_loss(
            model.user_embeddings(batch["user"]), model.item_embeddings(batch["item"]),
            batch["item"], batch["weight"], model.temperature, candidate_log_q=offsets,
            remove_accidental_hits=True, negative_vectors=model.item_embeddings(negatives),
            negative_ids=negatives).mean()

    got, got_grads = nnx.value_and_grad(lambda m: loss_fn(m, batch, key)[0])(model)
    want, want_grads = nnx.value_and_grad(direct)(model)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    for (path, g), (_, w) in zip(nnx.to_flat_state(got_grads), nnx.to_flat_state(want_grads)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6, err_msg=str(path))
