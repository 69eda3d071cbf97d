"""SASRec: causal, padding-blind, dropout only when asked, saved and loaded whole."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recsys_jax.models.contract import SequenceEncoder
from recsys_jax.models.registry import load_model, save_model
from recsys_jax.models.sasrec import SASRec

NUM_ITEMS = 30
PAD = NUM_ITEMS


def _model(max_len=6, **kwargs):
    options = dict(dim=8, num_blocks=2, num_heads=2, dropout=0.3) | kwargs
    return SASRec(NUM_ITEMS, max_len=max_len, rngs=nnx.Rngs(0), **options)


@pytest.fixture(scope="module")
def model():
    return _model()


# Compiled once per shape: cheaper than running the layers op by op.
forward = nnx.jit(lambda m, s: m(s))
forward_dropout = nnx.jit(lambda m, s, key: m(s, rngs=nnx.Rngs(dropout=key)))


def test_is_a_sequence_encoder_with_hidden_states_per_position(model):
    assert isinstance(model, SequenceEncoder)
    hidden = forward(model, jnp.array([[PAD, PAD, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10]]))
    assert hidden.shape == (2, 6, 8)
    assert model.item_vectors(jnp.array([[1, 2]])).shape == (1, 2, 8)
    with pytest.raises(ValueError, match="length 5"):
        model(jnp.zeros((1, 5), jnp.int32))


@pytest.mark.parametrize("with_dropout", [False, True])
def test_a_position_does_not_see_later_items(model, with_dropout):
    sequences = jnp.array([[PAD, PAD, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10]])
    later_changed = sequences.at[:, 4:].set(jnp.array([[11, 12], [13, 14]]))

    def run(s):  # the same dropout masks for both inputs
        return forward_dropout(model, s, jax.random.key(7)) if with_dropout else forward(model, s)

    before, after = run(sequences), run(later_changed)
    np.testing.assert_array_equal(before[:, :4], after[:, :4])
    assert np.abs(np.asarray(before[:, 4:] - after[:, 4:])).max() > 1e-3


def test_left_padding_changes_nothing_at_the_item_positions():
    # With the positions zeroed, [a, b] and [pad, pad, a, b] must give the same states for
    # a and b: padding is masked out as keys and never enters the sum.
    short, long = _model(max_len=2, dropout=0.0), _model(max_len=4, dropout=0.0)
    short.position_embedding[...] = jnp.zeros((2, 8))
    long.position_embedding[...] = jnp.zeros((4, 8))
    long.item_embedding[...] = long.item_embedding[...].at[PAD].set(5.0)  # any padding row
    np.testing.assert_allclose(forward(long, jnp.array([[PAD, PAD, 3, 7]]))[:, 2:],
                               forward(short, jnp.array([[3, 7]])), rtol=1e-5, atol=1e-5)


def test_dropout_only_with_rngs(model):
    sequences = jnp.array([[1, 2, 3, 4, 5, 6], [PAD, PAD, 1, 2, 3, 4]])
    plain = forward(model, sequences)
    first = forward_dropout(model, sequences, jax.random.key(1))
    np.testing.assert_array_equal(first, forward_dropout(model, sequences, jax.random.key(1)))
    assert np.abs(np.asarray(first - plain)).max() > 1e-3
    other = forward_dropout(model, sequences, jax.random.key(2))
    assert np.abs(np.asarray(first - other)).max() > 1e-3


def test_input_and_output_embeddings_are_one_table(model):
    sequences = jnp.array([[1, 2, 3, 4, 5, 6], [PAD, PAD, 1, 2, 3, 4]])
    grads = nnx.jit(nnx.grad(
        lambda m: jnp.sum(m(sequences)[:, -1] * m.item_vectors(jnp.array([9])))))(model)
    rows = np.abs(np.asarray(grads.item_embedding[...])).sum(axis=1)
    # Read as inputs (1..6) and as the output (9); no other row, the padding row least of all.
    assert set(np.flatnonzero(rows > 0)) == {1, 2, 3, 4, 5, 6, 9}


def test_save_and_load_give_the_same_model(tmp_path, model):
    config = {"name": "sasrec", "max_len": 6, "dim": 8, "num_blocks": 2, "num_heads": 2,
              "dropout": 0.3}
    save_model(model, tmp_path, model_config=config, num_users=4, num_items=NUM_ITEMS)
    loaded = load_model(tmp_path)
    for a, b in zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(loaded)),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    sequences = jnp.array([[PAD, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6]])
    np.testing.assert_array_equal(forward(model, sequences), forward(loaded, sequences))


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="multiple of model.num_heads"):
        SASRec(NUM_ITEMS, dim=10, num_heads=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="dropout"):
        SASRec(NUM_ITEMS, dropout=1.0, rngs=nnx.Rngs(0))
