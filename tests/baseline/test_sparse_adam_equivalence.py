"""Lazy Adam (optimizer.tables="lazy_adam") is PyTorch's SparseAdam on an nn.Embedding(sparse=True),
step for step, at weight decay 0 (SparseAdam has none)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recsys_jax.training import steps
from recsys_jax.training.optimizers import make_model_optimizer
from recsys_jax.training.tables import Table

torch = pytest.importorskip("torch")

ROWS, DIM, LR = 12, 4, 0.02
# Pairs (a, b) of rows: repeated rows within a step, rows 9..11 never read.
STEPS = [([0, 1, 1, 2], [3, 3, 1, 0]), ([4, 4, 4, 5], [6, 0, 0, 0]), ([7, 8, 2, 1], [1, 5, 5, 8]),
         ([0, 0, 0, 0], [0, 2, 4, 6]), ([3, 6, 8, 8], [2, 7, 7, 1]), ([1, 2, 3, 4], [5, 6, 7, 8])]


class PairTable(nnx.Module):
    """One table both sides of a pair read from (like MF's shared table)."""

    def __init__(self, values: np.ndarray):
        self.table = Table(jnp.asarray(values, jnp.float32))


def pair_loss(model, batch, rng):
    del rng
    score = jnp.sum(model.table.lookup(batch["a"]) * model.table.lookup(batch["b"]), axis=-1)
    return jnp.sum(jnp.square(score - batch["y"])), {}


# Two known differences, both far below a step: the bias corrections are computed in float32
# here, as by optax and the dense Adam (1 − 0.999 keeps ~5 digits: a step ≈ 7e-6 shorter at t=1),
# in float64 by SparseAdam; and ε is added to √v̂ here (as PyTorch's dense Adam), to √v by
# SparseAdam (≈ ε/(|g|·√(1−β₂ᵗ)) of a step). Over six steps: within 5e-5 of a step (lr).
ATOL = 5e-5 * LR


def test_lazy_adam_steps_like_torch_sparse_adam():
    values = np.random.default_rng(0).normal(size=(ROWS, DIM)).astype(np.float32)
    targets = np.random.default_rng(1).normal(size=(len(STEPS), 4)).astype(np.float32)

    model = PairTable(values)
    optimizer, _ = make_model_optimizer(
        model, {"name": "adam", "lr": LR, "weight_decay": 0.0, "tables": "lazy_adam"},
        steps_per_epoch=1, num_epochs=1)
    graphdef, state = nnx.split((model, optimizer))
    step = steps.make_train_step(graphdef, pair_loss)

    embedding = torch.nn.Embedding(ROWS, DIM, sparse=True)
    with torch.no_grad():
        embedding.weight.copy_(torch.from_numpy(values))
    sparse_adam = torch.optim.SparseAdam(embedding.parameters(), lr=LR, betas=(0.9, 0.999),
                                         eps=1e-8)

    for (a, b), y in zip(STEPS, targets, strict=True):
        batch = {"a": jnp.asarray(a, jnp.int32), "b": jnp.asarray(b, jnp.int32),
                 "y": jnp.asarray(y)}
        state, _ = step(state, batch, jax.random.key(0))

        sparse_adam.zero_grad()
        score = (embedding(torch.tensor(a)) * embedding(torch.tensor(b))).sum(-1)
        ((score - torch.from_numpy(y)) ** 2).sum().backward()
        sparse_adam.step()

        ours = np.asarray(nnx.merge(graphdef, state)[0].table[...])
        theirs = embedding.weight.detach().numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=ATOL)
        np.testing.assert_array_equal(ours[9:], values[9:])  # Never read: untouched.
    assert not np.allclose(ours[:9], values[:9])
