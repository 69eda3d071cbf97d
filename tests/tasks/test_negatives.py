import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recsys_jax.models.ncf import GMF
from recsys_jax.tasks.implicit_losses import make_bce_loss
from recsys_jax.tasks.negatives import build_positive_set, sample_negatives
from recsys_jax.training.steps import step_key

NUM_USERS, NUM_ITEMS = 12, 25


def _positives(seed=0, n=120):
    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, NUM_USERS, n), rng.integers(0, NUM_ITEMS, n)
    truth = np.zeros((NUM_USERS, NUM_ITEMS), bool)
    truth[users, items] = True
    return users, items, truth


@pytest.mark.parametrize("kind", ["dense", "sorted"])
def test_membership_matches_the_positives(kind):
    users, items, truth = _positives()
    positives = build_positive_set(users, items, NUM_USERS, NUM_ITEMS, kind=kind)
    assert positives.kind == kind
    got = positives.contains(jnp.arange(NUM_USERS)[:, None], jnp.arange(NUM_ITEMS)[None, :])
    np.testing.assert_array_equal(got, truth)


def test_auto_picks_sorted_when_the_bitmap_is_too_large():
    users, items, _ = _positives()
    assert build_positive_set(users, items, NUM_USERS, NUM_ITEMS).kind == "dense"
    assert build_positive_set(users, items, NUM_USERS, NUM_ITEMS,
                              dense_limit_bytes=100).kind == "sorted"


@pytest.mark.parametrize("kind", ["dense", "sorted"])
def test_negatives_are_never_training_positives(kind):
    users, items, truth = _positives(seed=1, n=200)
    positives = build_positive_set(users, items, NUM_USERS, NUM_ITEMS, kind=kind)
    sample = jax.jit(lambda key, u: sample_negatives(positives, key, u, 8))
    batch = jnp.asarray(np.repeat(np.arange(NUM_USERS), 5), jnp.int32)
    for step in range(20):
        negatives = np.asarray(sample(jax.random.key(step), batch))
        assert negatives.shape == (len(batch), 8) and negatives.dtype == np.int32
        assert negatives.min() >= 0 and negatives.max() < NUM_ITEMS
        assert not truth[np.asarray(batch)[:, None], negatives].any()


def test_negatives_are_uniform_over_the_non_positives():
    users, items, truth = _positives(seed=2)
    positives = build_positive_set(users, items, NUM_USERS, NUM_ITEMS)
    negatives = np.asarray(sample_negatives(positives, jax.random.key(0),
                                            jnp.zeros(4000, jnp.int32), 5))
    allowed = np.flatnonzero(~truth[0])
    counts = np.bincount(negatives.ravel(), minlength=NUM_ITEMS)
    assert set(np.flatnonzero(counts)) == set(allowed)
    expected = negatives.size / len(allowed)
    # Each allowed item within 5 standard deviations of its binomial expectation.
    assert np.all(np.abs(counts[allowed] - expected) < 5 * np.sqrt(expected))


def test_a_user_with_one_free_item_always_gets_it_and_a_full_user_is_refused():
    users = np.repeat([0, 1], [NUM_ITEMS - 1, 2])
    items = np.concatenate([np.arange(1, NUM_ITEMS), [0, 1]])
    positives = build_positive_set(users, items, NUM_USERS, NUM_ITEMS, kind="sorted")
    negatives = sample_negatives(positives, jax.random.key(3), jnp.zeros(16, jnp.int32), 4)
    np.testing.assert_array_equal(negatives, 0)
    with pytest.raises(ValueError, match="every item"):
        build_positive_set(np.zeros(NUM_ITEMS, int), np.arange(NUM_ITEMS), NUM_USERS,
                           NUM_ITEMS)


def test_negatives_are_reproducible_and_resampled_every_step():
    users, items, _ = _positives()
    positives = build_positive_set(users, items, NUM_USERS, NUM_ITEMS)
    batch = jnp.arange(NUM_USERS, dtype=jnp.int32)
    key = jax.random.key(7)
    first = sample_negatives(positives, step_key(key, 0), batch, 4)
    again = sample_negatives(positives, step_key(key, 0), batch, 4)
    later = sample_negatives(positives, step_key(key, 1), batch, 4)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, later)


def test_bce_loss_matches_the_formula_and_ignores_padding():
    users, items, _ = _positives()
    positives = build_positive_set(users, items, NUM_USERS, NUM_ITEMS)
    model = GMF(NUM_USERS, NUM_ITEMS, 3, rngs=nnx.Rngs(0), init_std=0.5)
    loss_fn = make_bce_loss(positives, num_negatives=3)
    batch = {"user": jnp.asarray(users[:10], jnp.int32),
             "item": jnp.asarray(items[:10], jnp.int32),
             "weight": jnp.asarray([1.0] * 8 + [0.0] * 2)}
    rng = jax.random.key(5)
    loss, aux = loss_fn(model, batch, rng)
    negatives = sample_negatives(positives, rng, batch["user"], 3)
    pos = np.asarray(model(batch["user"], batch["item"]))[:8]
    neg = np.asarray(model(batch["user"][:, None], negatives))[:8]
    expected = (np.log1p(np.exp(-pos)).sum() + np.log1p(np.exp(neg)).sum()) / (8 * 4)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(aux["pos_loss"]) == pytest.approx(np.log1p(np.exp(-pos)).mean(), rel=1e-5)
    assert 0.0 <= float(aux["pos_above_neg"]) <= 1.0
    # Gradients flow to the model through the sampled negatives' logits.
    grads = nnx.grad(lambda m: loss_fn(m, batch, rng)[0])(model)
    assert np.abs(np.asarray(grads.tower.item_embedding[...])).sum() > 0
