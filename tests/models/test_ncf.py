import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recsys_jax.models import registry
from recsys_jax.models.ncf import GMF, MLP, DotMF, NeuMF, load_pretrained

NUM_USERS, NUM_ITEMS = 7, 11


def _models(seed: int = 0):
    rngs = nnx.Rngs(seed)
    return {"gmf": GMF(NUM_USERS, NUM_ITEMS, 4, rngs=rngs),
            "mlp": MLP(NUM_USERS, NUM_ITEMS, (8, 4, 2), rngs=rngs),
            "neumf": NeuMF(NUM_USERS, NUM_ITEMS, 4, (8, 4, 2), rngs=rngs),
            "dot_mf": DotMF(NUM_USERS, NUM_ITEMS, 3, rngs=rngs)}


@pytest.mark.parametrize("name", ["gmf", "mlp", "neumf", "dot_mf"])
def test_logit_shapes_and_broadcasting(name):
    model = _models()[name]
    users = jnp.array([0, 3, 6])
    items = jnp.array([1, 10, 4])
    assert model(users, items).shape == (3,)
    grid = model(jnp.arange(NUM_USERS)[:, None], jnp.arange(NUM_ITEMS)[None, :])
    assert grid.shape == (NUM_USERS, NUM_ITEMS)
    # Broadcast scoring agrees with pairwise scoring.
    np.testing.assert_allclose(grid[users, items], model(users, items), rtol=1e-5, atol=1e-6)
    assert model(users[:, None], jnp.tile(items, (3, 1))).shape == (3, 3)


def test_parameter_shapes():
    m = _models()
    assert m["gmf"].tower.user_embedding[...].shape == (NUM_USERS, 4)
    assert m["gmf"].output.kernel[...].shape == (4, 1)
    # MLP (8, 4, 2): embeddings of 4 per side, layers 8→4→2, output 2→1.
    assert m["mlp"].tower.item_embedding[...].shape == (NUM_ITEMS, 4)
    assert [layer.kernel[...].shape for layer in m["mlp"].tower.hidden] == [(8, 4), (4, 2)]
    assert m["neumf"].output.kernel[...].shape == (4 + 2, 1)
    assert m["dot_mf"].user_bias[...].shape == (NUM_USERS,)


def test_mlp_needs_even_input_and_a_hidden_layer():
    with pytest.raises(ValueError):
        MLP(3, 4, (7, 2), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError):
        MLP(3, 4, (8,), rngs=nnx.Rngs(0))


def test_dot_mf_logit_and_ranking_embeddings():
    model = _models()["dot_mf"]
    model.user_bias[...] = jnp.arange(NUM_USERS, dtype=jnp.float32) / 10
    model.item_bias[...] = -jnp.arange(NUM_ITEMS, dtype=jnp.float32) / 7
    model.global_bias[...] = jnp.float32(0.3)
    grid = np.asarray(model(jnp.arange(NUM_USERS)[:, None], jnp.arange(NUM_ITEMS)[None, :]))
    p, q = np.asarray(model.user_embedding[...]), np.asarray(model.item_embedding[...])
    expected = 0.3 + np.arange(NUM_USERS)[:, None] / 10 - np.arange(NUM_ITEMS) / 7 + p @ q.T
    np.testing.assert_allclose(grid, expected, rtol=1e-5, atol=1e-6)
    users, items = model.ranking_embeddings()
    # Same ranking: differs from the logits by a per-user constant only.
    diff = grid - users @ items.T
    np.testing.assert_allclose(diff, diff[:, :1].repeat(NUM_ITEMS, 1), atol=1e-5)


def _trained_like(seed):
    """GMF and MLP with non-trivial weights (as if trained)."""
    gmf = GMF(NUM_USERS, NUM_ITEMS, 4, rngs=nnx.Rngs(seed), init_std=0.5)
    mlp = MLP(NUM_USERS, NUM_ITEMS, (8, 4, 2), rngs=nnx.Rngs(seed + 1), init_std=0.5)
    gmf.output.bias[...] = jnp.array([0.7])
    mlp.output.bias[...] = jnp.array([-0.2])
    return gmf, mlp


def test_pretraining_loads_gmf_and_mlp_weights():
    gmf, mlp = _trained_like(1)
    neumf = NeuMF(NUM_USERS, NUM_ITEMS, 4, (8, 4, 2), rngs=nnx.Rngs(9))
    before = np.asarray(neumf.gmf.user_embedding[...]).copy()
    load_pretrained(neumf, gmf, mlp, alpha=0.5)
    assert not np.allclose(before, neumf.gmf.user_embedding[...])
    for a, b in zip(jax.tree.leaves(nnx.state(neumf.gmf, nnx.Param)),
                    jax.tree.leaves(nnx.state(gmf.tower, nnx.Param)), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(nnx.state(neumf.mlp, nnx.Param)),
                    jax.tree.leaves(nnx.state(mlp.tower, nnx.Param)), strict=True):
        np.testing.assert_array_equal(a, b)
    kernel = np.asarray(neumf.output.kernel[...])
    np.testing.assert_allclose(kernel[:4], 0.5 * np.asarray(gmf.output.kernel[...]))
    np.testing.assert_allclose(kernel[4:], 0.5 * np.asarray(mlp.output.kernel[...]))
    np.testing.assert_allclose(neumf.output.bias[...], [0.25], rtol=1e-6)
    # At α = 0.5 NeuMF starts as the mean of the two pretrained models.
    u, i = jnp.arange(NUM_USERS)[:, None], jnp.arange(NUM_ITEMS)[None, :]
    np.testing.assert_allclose(neumf(u, i), 0.5 * (gmf(u, i) + mlp(u, i)), rtol=1e-5,
                               atol=1e-6)


def test_pretraining_alpha_and_copies():
    gmf, mlp = _trained_like(3)
    neumf = NeuMF(NUM_USERS, NUM_ITEMS, 4, (8, 4, 2), rngs=nnx.Rngs(0))
    load_pretrained(neumf, gmf, mlp, alpha=0.8)
    np.testing.assert_allclose(neumf.output.kernel[...][:4], 0.8 * gmf.output.kernel[...],
                               rtol=1e-6)
    np.testing.assert_allclose(neumf.output.bias[...], [0.8 * 0.7 - 0.2 * 0.2], rtol=1e-6)
    # Training NeuMF afterwards must not change the pretrained models.
    neumf.gmf.user_embedding[...] = neumf.gmf.user_embedding[...] + 1.0
    assert not np.allclose(neumf.gmf.user_embedding[...], gmf.tower.user_embedding[...])


def test_pretraining_refuses_mismatched_shapes():
    gmf, mlp = _trained_like(1)
    neumf = NeuMF(NUM_USERS, NUM_ITEMS, 8, (8, 4, 2), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="GMF"):
        load_pretrained(neumf, gmf, mlp)
    with pytest.raises(ValueError, match="alpha"):
        load_pretrained(NeuMF(NUM_USERS, NUM_ITEMS, 4, (8, 4, 2), rngs=nnx.Rngs(0)), gmf, mlp,
                        alpha=1.5)


@pytest.mark.parametrize("name", ["gmf", "mlp", "neumf", "dot_mf"])
def test_registry_builds_by_name(name):
    config = {"name": name, "dim": 4, "mlp_layers": (8, 4), "init_std": 0.1}
    model = registry.build_model(config, num_users=5, num_items=6, train={},
                                 rngs=nnx.Rngs(0))
    assert model(jnp.arange(5), jnp.arange(5)).shape == (5,)
