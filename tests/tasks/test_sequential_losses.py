"""The sequential task's losses against hand computations on tiny batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recsys_jax.models.sasrec import SASRec
from recsys_jax.tasks.negatives import build_positive_set
from recsys_jax.tasks.sequential_losses import make_sequence_bce_loss, make_sequence_softmax_loss

NUM_ITEMS = 3
PAD = NUM_ITEMS


def _model():
    # No dropout: the loss's hidden states are the deterministic ones.
    return SASRec(NUM_ITEMS, max_len=3, dim=4, num_blocks=1, num_heads=1, dropout=0.0,
                  rngs=nnx.Rngs(0))


# Row 0: user 0, inputs [pad, 0, 1] → targets of its two item positions: 1, 0.
# Row 1: user 1, inputs [0, 1, 0] → targets 1, 0, 1.
# Row 2: the padding of an epoch's last batch (weight 0).
BATCH = {"user": jnp.array([0, 1, 0]),
         "sequence": jnp.array([[PAD, 0, 1, 0], [0, 1, 0, 1], [0, 1, 0, 1]]),
         "weight": jnp.array([1.0, 1.0, 0.0])}
KEPT = [(0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]  # (row, position) pairs that are trained


def _states(model):
    hidden = np.asarray(nnx.jit(lambda m, s: m(s))(model, BATCH["sequence"][:, :-1]),
                        np.float64)
    table = np.asarray(model.item_embedding[...], np.float64)
    return hidden, table, np.asarray(BATCH["sequence"][:, 1:])


def test_bce_equals_a_hand_computation():
    model = _model()
    # Both users own items 0 and 1, so every negative is item 2.
    positives = build_positive_set(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]), 2, NUM_ITEMS)
    loss, aux = nnx.jit(make_sequence_bce_loss(positives))(model, BATCH, jax.random.key(0))
    hidden, table, targets = _states(model)

    def softplus(x):
        return np.log1p(np.exp(x))

    terms = [softplus(-hidden[r, t] @ table[targets[r, t]]) + softplus(hidden[r, t] @ table[2])
             for r, t in KEPT]
    assert float(loss) == pytest.approx(np.mean(terms), rel=1e-5)
    assert float(aux["targets"]) == pytest.approx(len(KEPT) / 2)


def test_softmax_equals_a_hand_computation_with_log_q_and_accidental_hits():
    model = _model()
    log_q = np.log(np.array([0.5, 0.3, 0.2]))
    loss, _ = nnx.jit(make_sequence_softmax_loss(num_items=NUM_ITEMS, target_log_q=log_q))(
        model, BATCH, jax.random.key(0))
    hidden, table, targets = _states(model)
    # Every kept position is a row; its candidates are the targets of all kept positions, a
    # candidate equal to the row's own target (other than its own column) is masked.
    items = [targets[r, t] for r, t in KEPT]
    per_row = []
    for p, (r, t) in enumerate(KEPT):
        logits = np.array([hidden[r, t] @ table[i] - log_q[i] for i in items])
        keep = np.array([j == p or items[j] != items[p] for j in range(len(items))])
        per_row.append(np.log(np.exp(logits[keep]).sum()) - logits[p])
    assert float(loss) == pytest.approx(np.mean(per_row), rel=1e-5)
    # Without logQ the value differs (the correction is applied).
    plain, _ = nnx.jit(make_sequence_softmax_loss(num_items=NUM_ITEMS))(model, BATCH,
                                                                        jax.random.key(0))
    assert abs(float(plain) - float(loss)) > 1e-4


def test_dropout_is_drawn_from_the_step_rng():
    model = SASRec(NUM_ITEMS, max_len=3, dim=4, num_blocks=1, num_heads=1, dropout=0.5,
                   rngs=nnx.Rngs(0))
    loss_fn = nnx.jit(make_sequence_softmax_loss(num_items=NUM_ITEMS))
    a, b, c = (float(loss_fn(model, BATCH, jax.random.key(k))[0]) for k in (1, 1, 2))
    assert a == b and a != c
