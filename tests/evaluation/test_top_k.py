"""Blocked top-K: the same lists as ``jax.lax.top_k``, ties across block boundaries included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recsys_jax.evaluation.top_k import block_size, blocked_top_k


def _reference(values, k):
    """Sort by (-value, index); -0.0 equals +0.0; -inf positions are padding (index -1)."""
    values = np.where(values == 0, 0.0, values)
    out = np.full((len(values), k), -1)
    for r, row in enumerate(values):
        order = [i for i in np.lexsort((np.arange(len(row)), -row)) if row[i] != -np.inf][:k]
        out[r, :len(order)] = order
    return out


def _listed(values, k):
    top, index = jax.jit(blocked_top_k, static_argnums=1)(jnp.asarray(values, jnp.float32), k)
    top, index = np.asarray(top), np.asarray(index)
    return np.where(np.isneginf(top), -1, index), top


def test_block_size_is_a_power_of_two_near_sqrt_n_over_k_and_off_for_short_rows():
    assert block_size(26_744, 100) == 16  # ML-20M's catalogue: sqrt(267) ≈ 16.4
    assert block_size(25_600, 100) == 16
    assert block_size(12_000, 100) == 0  # fewer than 128 values per K: plain top_k
    assert block_size(10**6, 10) == 256  # sqrt(10^5) ≈ 316


def test_ties_on_the_kth_block_maximum_go_to_the_lowest_indices():
    # Blocks of 16 (n = 256, K = 2). Block 2 holds the best value; blocks 0 and 1 tie on 1.0
    # and the lower block wins, although block 2 holds 1.0s too (at higher indices).
    row = np.zeros(256, np.float32)
    row[0:32], row[32:48] = 1.0, [9.0] + [1.0] * 15
    assert block_size(256, 2) == 16
    items, top = _listed(row[None], 2)
    assert items[0].tolist() == [32, 0] and top[0].tolist() == [9.0, 1.0]
    # Equal values in later blocks than the K-th: the lower indices still win.
    row = np.full(256, -1.0, np.float32)
    row[[3, 16, 160, 255]] = [5.0, 5.0, 5.0, 7.0]
    assert _listed(row[None], 3)[0][0].tolist() == [255, 3, 16]
    # A block of -0.0 ties with blocks of +0.0 (its maximum is -0.0).
    row = np.full(256, -1.0, np.float32)
    row[0:16], row[16:48] = -0.0, 0.0
    assert _listed(row[None], 2)[0][0].tolist() == [0, 1]


def test_rows_with_fewer_than_k_finite_values_are_padded():
    values = np.full((4, 700), -np.inf, np.float32)
    values[0, [7, 699]] = [1.0, 2.0]  # two finite values, one in the last (short) block
    values[2, :] = -0.0
    # The short last block (688..699) is read as 684..699: 684..687 belong to the block
    # before, which is chosen too, and must not be listed twice.
    values[3, [685, 699]] = [3.0, 2.0]
    assert block_size(700, 5) == 16 and 700 % 16
    items, top = _listed(values, 5)
    assert items[0].tolist() == [699, 7, -1, -1, -1]
    assert items[1].tolist() == [-1] * 5 and np.isneginf(top[1]).all()
    assert items[2].tolist() == [0, 1, 2, 3, 4] and not np.signbit(top[2]).any()
    assert items[3].tolist() == [685, 699, -1, -1, -1]


@pytest.mark.parametrize("n,k", [(130, 1), (400, 3), (1031, 8), (9000, 64)])
def test_equals_lax_top_k_on_heavily_tied_rows(n, k):
    rng = np.random.default_rng(n + k)
    # 64 rows of few distinct values (ties everywhere, -0.0 and +0.0 among them), some -inf.
    palette = np.array([-np.inf, -1.0, -0.0, 0.0, 0.5, 1.0, 2.0], np.float32)
    weights = rng.dirichlet(np.ones(len(palette)), size=64)
    values = np.stack([rng.choice(palette, size=n, p=w) for w in weights])
    values[0] = -np.inf  # a row with no candidate at all
    values[1, rng.integers(0, n)] = 3.0  # a lone best value
    assert block_size(n, k) > 0
    items, top = _listed(values, k)
    np.testing.assert_array_equal(items, _reference(values, k))
    expected_top, expected_index = jax.lax.top_k(jnp.where(values == 0, 0.0, values), k)
    np.testing.assert_array_equal(top, np.asarray(expected_top))
    finite = ~np.isneginf(top)
    np.testing.assert_array_equal(items[finite], np.asarray(expected_index)[finite])


def test_long_rows_equal_lax_top_k():
    # 10^5 values, K = 10: blocks of 128, a short last block.
    rng = np.random.default_rng(7)
    values = rng.integers(-50, 50, size=(4, 100_000)).astype(np.float32)
    assert block_size(100_000, 10) == 128
    items, top = _listed(values, 10)
    expected_top, expected_index = jax.lax.top_k(values, 10)
    np.testing.assert_array_equal(items, np.asarray(expected_index))
    np.testing.assert_array_equal(top, np.asarray(expected_top))
