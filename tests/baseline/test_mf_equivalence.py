"""The PyTorch MF is the JAX MF: same predictions from the same weights, same updates."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
from flax import nnx

from benchmarks.torch_baseline.mf_training import MFRecipe, SparseTrainer, make_adam
from benchmarks.torch_baseline.torch_mf import TorchMF, build_torch_mf, predict
from recsys_jax.models.mf import MatrixFactorization
from recsys_jax.tasks.rating import make_rating_loss
from recsys_jax.training import steps as steps_lib
from recsys_jax.training.optimizers import make_model_optimizer, make_optimizer

NUM_USERS, NUM_ITEMS, DIM = 9, 13, 6


def _jax_model(seed: int = 0) -> MatrixFactorization:
    """A JAX MF with non-trivial weights everywhere and some unseen users and items."""
    model = MatrixFactorization(NUM_USERS, NUM_ITEMS, DIM, rngs=nnx.Rngs(seed), init_std=0.3,
                                global_mean=3.4)
    rng = np.random.default_rng(seed)
    model.load_arrays({"user_bias": rng.normal(size=NUM_USERS),
                       "item_bias": rng.normal(size=NUM_ITEMS)})
    model.mark_seen(np.arange(NUM_USERS - 2), np.arange(1, NUM_ITEMS))  # users 7, 8, item 0 unseen
    return model


def _all_pairs() -> tuple[np.ndarray, np.ndarray]:
    users, items = np.meshgrid(np.arange(NUM_USERS), np.arange(NUM_ITEMS), indexing="ij")
    return users.ravel(), items.ravel()


def test_same_weights_give_same_predictions():
    jax_model = _jax_model()
    torch_model = TorchMF.from_arrays(jax_model.export_arrays())
    users, items = _all_pairs()
    expected = np.asarray(jax_model(jnp.asarray(users), jnp.asarray(items)))
    np.testing.assert_allclose(predict(torch_model, users, items), expected, rtol=1e-6,
                               atol=1e-6)
    # The unseen ids really took the fallback path in both (μ + b_i for user 7, item 3).
    b_i = jax_model.export_arrays()["item_bias"][3]
    np.testing.assert_allclose(predict(torch_model, np.array([7]), np.array([3])),
                               [3.4 + b_i], rtol=1e-6)


def test_export_round_trip_uses_the_jax_names():
    arrays = _jax_model().export_arrays()
    exported = TorchMF.from_arrays(arrays).export_arrays()
    assert exported.keys() == arrays.keys()
    for name, value in arrays.items():
        assert exported[name].shape == value.shape, name
        np.testing.assert_array_equal(exported[name], value, err_msg=name)


def test_load_arrays_rejects_wrong_shapes_and_missing_arrays():
    arrays = _jax_model().export_arrays()
    model = TorchMF(NUM_USERS, NUM_ITEMS, DIM)
    with pytest.raises(ValueError, match="user_embeddings"):
        model.load_arrays({**arrays, "user_embeddings": np.zeros((NUM_USERS, DIM + 1))})
    with pytest.raises(ValueError, match="missing"):
        model.load_arrays({k: v for k, v in arrays.items() if k != "item_bias"})


def test_predict_rejects_out_of_range_ids():
    model = TorchMF(NUM_USERS, NUM_ITEMS, DIM)
    with pytest.raises(ValueError, match="item ids"):
        predict(model, np.array([0]), np.array([NUM_ITEMS]))


def test_recipe_initialisation():
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 400, 5000), rng.integers(0, 300, 5000)
    ratings = rng.integers(1, 6, 5000).astype(np.float32)
    model = build_torch_mf(500, 300, 64, ratings, users, items, init_std=0.01, seed=3)
    table = model.user_embedding.weight.detach().numpy()
    assert abs(table.std() - 0.01) < 5e-4 and abs(table.mean()) < 5e-4
    assert float(model.global_mean.detach()) == pytest.approx(ratings.mean(), rel=1e-6)
    assert not model.user_bias.weight.any() and not model.item_bias.weight.any()
    assert not model.user_seen[400:].any() and model.user_seen[np.unique(users)].all()


def _config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = {"name": "mf", "dim": DIM, "init_std": 0.3}
    config.optimizer = {"name": "adam", "lr": 0.05, "weight_decay": 0.1, "schedule": "constant"}
    config.training = {"loss": "mse", "l2_reg": 0.0, "batch_size": 8, "epochs": 1,
                       "patience": 0, "seed": 0}
    return config


def _jax_step(step, state, users, items, ratings):
    """One step of the engine's compiled MF step on a batch of NumPy columns, all weight 1."""
    batch = {"user": jnp.asarray(users, jnp.int32), "item": jnp.asarray(items, jnp.int32),
             "rating": jnp.asarray(ratings), "weight": jnp.ones(len(ratings), jnp.float32)}
    return step(state, batch, jnp.zeros((2,), jnp.uint32))[0]


@pytest.mark.parametrize("fused", [None, True])
def test_adam_steps_match_optax(fused):
    """Same weights, same batches: PyTorch Adam(weight_decay) on the tables and no decay on μ
    gives the parameters of recsys_jax's ``adam`` (optax add_decayed_weights + adam)."""
    config = _config()
    jax_model = _jax_model()
    torch_model = TorchMF.from_arrays(jax_model.export_arrays())
    tx, _ = make_optimizer(config.optimizer, steps_per_epoch=1, num_epochs=1)
    graphdef, state = nnx.split((jax_model, nnx.Optimizer(jax_model, tx, wrt=nnx.Param)))
    step = steps_lib.make_train_step(graphdef, make_rating_loss("mse"))
    optimizer = make_adam(torch_model, MFRecipe.from_config(config), fused=fused)
    rng = np.random.default_rng(1)
    for _ in range(3):
        users = rng.integers(0, NUM_USERS - 2, 8)  # seen ids only, as in training
        items = rng.integers(1, NUM_ITEMS, 8)
        ratings = rng.integers(1, 6, 8).astype(np.float32)
        state = _jax_step(step, state, users, items, ratings)
        optimizer.zero_grad()
        loss = torch.nn.MSELoss()(torch_model(torch.as_tensor(users), torch.as_tensor(items)),
                                  torch.as_tensor(ratings))
        loss.backward()
        optimizer.step()
    jax_arrays = nnx.merge(graphdef, state)[0].export_arrays()
    for name, value in torch_model.export_arrays().items():
        np.testing.assert_allclose(value, jax_arrays[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_sparse_variant_steps_like_jax_lazy_adam():
    """Same weights, same batches: SparseAdam on nn.Embedding(sparse=True) tables with the L2
    of the distinct rows read in the loss, Adam on μ, gives the parameters of recsys_jax's
    ``optimizer.tables=lazy_adam`` (L2 once per row read per step, rows not read untouched).
    Rows are read several times per batch, so an L2 counted per read would differ."""
    config = _config()
    config.optimizer.tables = "lazy_adam"
    jax_model = _jax_model()
    before = jax_model.export_arrays()
    torch_model = TorchMF.from_arrays(before, sparse=True)
    optimizer, _ = make_model_optimizer(jax_model, config.optimizer, steps_per_epoch=1,
                                        num_epochs=1)
    graphdef, state = nnx.split((jax_model, optimizer))
    step = steps_lib.make_train_step(graphdef, make_rating_loss("mse"))
    empty = {"user": np.zeros(0, np.int64), "item": np.zeros(0, np.int64),
             "rating": np.zeros(0, np.float32)}
    trainer = SparseTrainer(torch_model, empty, MFRecipe.from_config(config))
    rng = np.random.default_rng(2)
    for _ in range(4):
        users = rng.integers(0, 5, 8)  # users 5, 6 (seen) and items 9.. are never read
        items = rng.integers(1, 9, 8)
        ratings = rng.integers(1, 6, 8).astype(np.float32)
        state = _jax_step(step, state, users, items, ratings)
        trainer.step(torch.as_tensor(users), torch.as_tensor(items), torch.as_tensor(ratings))
    jax_arrays = nnx.merge(graphdef, state)[0].export_arrays()
    torch_arrays = torch_model.export_arrays()
    for name, value in torch_arrays.items():
        np.testing.assert_allclose(value, jax_arrays[name], rtol=1e-4, atol=1e-5, err_msg=name)
    for name, unread in (("user_embeddings", slice(5, None)), ("user_bias", slice(5, None)),
                         ("item_embeddings", slice(9, None)), ("item_bias", slice(9, None))):
        np.testing.assert_array_equal(torch_arrays[name][unread], before[name][unread])
        assert not np.allclose(torch_arrays[name][:5], before[name][:5]), name
    assert torch_arrays["global_mean"] != before["global_mean"]


def test_recipe_from_config_refuses_what_the_baseline_does_not_implement():
    config = _config()
    assert MFRecipe.from_config(config).weight_decay == 0.1
    assert MFRecipe.from_config(config).tables == "dense"
    config.optimizer.tables = "lazy_adam"
    assert MFRecipe.from_config(config).tables == "lazy_adam"
    config.optimizer.tables = "rowwise_adagrad"
    with pytest.raises(ValueError, match="optimizer.tables"):
        MFRecipe.from_config(config)
    config.optimizer.tables = "dense"
    config.optimizer.name = "adamw"
    with pytest.raises(ValueError, match="optimizer.name"):
        MFRecipe.from_config(config)
