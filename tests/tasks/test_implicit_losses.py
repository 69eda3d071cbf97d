"""BPR with the row L2: a hand-computed value, training on a planted problem, model checks."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from recsys_jax.evaluation.evaluate import evaluate_ranking
from recsys_jax.evaluation.sources import Embeddings
from recsys_jax.evaluation.validators import RankingValidator
from recsys_jax.models.ncf import DotMF
from recsys_jax.tasks.implicit import ImplicitTask
from recsys_jax.tasks.implicit_losses import make_bpr_loss
from recsys_jax.tasks.negatives import build_positive_set
from recsys_jax.training.loop import FitConfig, fit
from tests.tasks.test_ncf_training import NUM_ITEMS, NUM_USERS, planted_problem

REPO = Path(__file__).resolve().parents[2]


def _hand_model() -> DotMF:
    model = DotMF(2, 3, dim=2, rngs=nnx.Rngs(0))
    model.user_embedding[...] = jnp.array([[1.0, 0.0], [0.0, 2.0]])
    model.item_embedding[...] = jnp.array([[0.5, 0.0], [0.0, 1.0], [1.0, 1.0]])
    model.user_bias[...] = jnp.array([0.05, -0.1])
    model.item_bias[...] = jnp.array([0.1, -0.2, 0.3])
    model.global_bias[...] = jnp.array(0.7)
    return model


# User 0 owns items 0 and 1 (its negative is always 2), user 1 items 1 and 2 (negative 0).
POSITIVES = build_positive_set(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 2]), 2, 3)
BATCH = {"user": jnp.array([0, 1, 0]), "item": jnp.array([0, 1, 1]),
         "weight": jnp.array([1.0, 1.0, 0.0])}  # the last row pads an epoch's last batch


def softplus(x):
    return np.log1p(np.exp(x))


def test_bpr_with_row_l2_equals_a_hand_computation():
    model = _hand_model()
    # s(u, i) − s(u, j) = p_u·(q_i − q_j) + b_i − b_j (μ and b_u cancel):
    # row 0: (0.5 + 0.1) − (1 + 0.3) = −0.7;  row 1: (2 − 0.2) − (0 + 0.1) = 1.7.
    bpr = (softplus(0.7) + softplus(-1.7)) / 2
    # ‖p_u‖² + ‖q_i‖² + b_u² + b_i² of each scored pair, averaged per row, then over rows:
    # row 0: (1 + 0.25 + 0.0025 + 0.01, 1 + 2 + 0.0025 + 0.09) → 2.1775;
    # row 1: (4 + 1 + 0.01 + 0.04, 4 + 0.25 + 0.01 + 0.01) → 4.66.
    row_l2 = (2.1775 + 4.66) / 2
    loss, aux = nnx.jit(make_bpr_loss(POSITIVES, 1, l2_reg=0.1))(model, BATCH,
                                                                 jax.random.key(0))
    assert float(aux["row_l2"]) == pytest.approx(row_l2, rel=1e-6)
    assert float(loss) == pytest.approx(bpr + 0.1 * row_l2, rel=1e-6)
    assert float(aux["pos_above_neg"]) == pytest.approx(0.5)


def test_bpr_ranks_the_planted_items_first_and_beats_popularity():
    train, target = planted_problem()
    model = DotMF(NUM_USERS, NUM_ITEMS, dim=8, rngs=nnx.Rngs(0), init_std=0.1)
    loss_fn = make_bpr_loss(build_positive_set(train["user"], train["item"], NUM_USERS,
                                               NUM_ITEMS), 1, l2_reg=1e-3)
    validator = RankingValidator(target, ks=(4,), metrics=("precision",))
    result = fit(model, nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param), loss_fn, train,
                 validator, FitConfig(batch_size=32, num_epochs=20, monitor="val_precision@4",
                                      mode="max"), workdir=None)
    counts = np.bincount(train["item"], minlength=NUM_ITEMS).astype(np.float32)
    popularity = evaluate_ranking(Embeddings(np.ones((NUM_USERS, 1), np.float32),
                                             counts[:, None]), target, (4,),
                                  metrics=("precision",)).mean("precision@4")
    assert popularity < 0.5
    assert validator(model)["val_precision@4"] >= 0.9, result.history[-1]
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_l2_reg_needs_a_row_regularized_model():
    spec = importlib.util.spec_from_file_location("ncf_tiny", REPO / "configs" / "ncf_tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.training.loss, config.training.l2_reg = "bpr", 1e-3
    data = SimpleNamespace(num_users=5, num_items=7, train={})  # all a builder reads
    with pytest.raises(TypeError, match="RowRegularized"):
        ImplicitTask().build_model(config, data)
    config.model.name = "dot_mf"
    assert isinstance(ImplicitTask().build_model(config, data), DotMF)
