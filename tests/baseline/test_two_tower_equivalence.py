"""The PyTorch two-tower gives the JAX two-tower's embeddings and loss from the same weights."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from benchmarks.torch_baseline.torch_two_tower import TorchTwoTower
from benchmarks.torch_baseline.torch_two_tower import in_batch_softmax_loss as torch_loss
from recsys_jax.models.two_tower import TwoTower
from recsys_jax.tasks.retrieval_losses import in_batch_softmax_loss

USERS, ITEMS = 11, 17


def _models(history: bool, ids: bool, positions: bool = False):
    rng = np.random.default_rng(0)
    user_features = rng.normal(size=(USERS, 5)).astype(np.float32)
    item_features = rng.normal(size=(ITEMS, 7)).astype(np.float32)
    extra = {}
    if history:
        extra["history_ids"] = rng.integers(0, ITEMS, (USERS, 4))
        extra["history_mask"] = (rng.random((USERS, 4)) < 0.7).astype(np.float32)
        extra["history_positions"] = positions
    if ids:
        extra.update(user_id_dim=3, item_id_dim=2)
    jax_model = TwoTower(user_features, item_features, rngs=nnx.Rngs(1), hidden_dim=16, dim=8,
                         temperature=0.1, **extra)
    # Non-trivial LayerNorm parameters, so a transposed or swapped copy would show.
    for t in (jax_model.user_tower, jax_model.item_tower):
        t.norm.scale[...] = jnp.asarray(rng.normal(1.0, 0.3, 8), jnp.float32)
        t.norm.bias[...] = jnp.asarray(rng.normal(0.0, 0.3, 8), jnp.float32)
    if positions:
        jax_model.history_position_logits[...] = jnp.asarray([1.5, 0.0, -1.0, 0.3])
    flat = {"/".join(map(str, path)): np.asarray(value)
            for path, value in nnx.to_flat_state(nnx.state(jax_model, nnx.Param))}
    torch_model = TorchTwoTower(user_features, item_features, hidden_dim=16, dim=8,
                                temperature=0.5, **extra)
    torch_model.load_jax_params(flat)
    return jax_model, torch_model


@pytest.mark.parametrize("history,ids,positions", [(False, False, False), (True, True, False),
                                                   (True, False, True)])
def test_same_weights_give_same_embeddings(history, ids, positions):
    jax_model, torch_model = _models(history, ids, positions)
    expected = jax_model.export_arrays()
    got = torch_model.export_arrays()
    for name in ("user_embeddings", "item_embeddings"):
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-5, err_msg=name)
    assert float(torch_model.temperature.detach()) == pytest.approx(
        float(jax_model.temperature), rel=1e-6)


def test_load_rejects_missing_parameters():
    jax_model, torch_model = _models(False, False)
    with pytest.raises(ValueError, match="missing JAX parameter"):
        torch_model.load_jax_params({})


@pytest.mark.parametrize("log_q", [False, True])
def test_in_batch_softmax_matches_the_jax_loss(log_q):
    rng = np.random.default_rng(2)
    u = rng.normal(size=(6, 4)).astype(np.float32)
    v = rng.normal(size=(6, 4)).astype(np.float32)
    ids = np.array([0, 3, 3, 5, 1, 0])  # two accidental hits
    offsets = rng.normal(size=6).astype(np.float32) if log_q else None
    expected = in_batch_softmax_loss(
        jnp.asarray(u), jnp.asarray(v), jnp.asarray(ids), jnp.ones(6), jnp.asarray(0.2),
        candidate_log_q=None if offsets is None else jnp.asarray(offsets),
        remove_accidental_hits=True).mean()
    got = torch_loss(torch.from_numpy(u), torch.from_numpy(v), torch.from_numpy(ids),
                     torch.tensor(0.2),
                     candidate_log_q=None if offsets is None else torch.from_numpy(offsets))
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


def test_per_pair_user_inputs_give_the_same_embeddings():
    """Causal training encodes each pair from its own inputs: both frameworks agree."""
    jax_model, torch_model = _models(True, True, positions=True)
    rng = np.random.default_rng(5)
    features = rng.normal(size=(6, 5)).astype(np.float32)
    users = np.array([0, 3, 3, 7, 10, 1])
    hist = rng.integers(0, ITEMS, (6, 4))
    mask = (rng.random((6, 4)) < 0.6).astype(np.float32)
    expected = jax_model.encode_users(jnp.asarray(features), user_ids=jnp.asarray(users),
                                      history_ids=jnp.asarray(hist),
                                      history_mask=jnp.asarray(mask))
    with torch.no_grad():
        got = torch_model.encode_users(torch.from_numpy(features), torch.from_numpy(users),
                                       torch.from_numpy(hist), torch.from_numpy(mask))
    np.testing.assert_allclose(got.numpy(), np.asarray(expected), rtol=1e-5, atol=1e-5)
