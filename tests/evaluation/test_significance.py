"""Significance tests against scipy and hand-worked values."""

import numpy as np
import pytest
import scipy.stats

from recsys_jax.evaluation import significance as sig

# Darwin's Zea mays height differences (cross − self fertilised), scipy's wilcoxon example.
DARWIN = np.array([6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75], dtype=float)


def test_wilcoxon_on_known_input():
    w, p = sig.wilcoxon_test(DARWIN, np.zeros_like(DARWIN))
    assert w == 24.0  # ranks of the negatives: 10 + 14
    assert p == pytest.approx(0.041259765625)  # exact two-sided


def test_paired_t_test_against_formula_and_scipy():
    rng = np.random.default_rng(0)
    a = rng.random(50)
    b = a - 0.05 + 0.1 * rng.standard_normal(50)
    t, p = sig.paired_t_test(a, b)
    d = a - b
    t_hand = d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))
    assert t == pytest.approx(t_hand)
    assert p == pytest.approx(2 * scipy.stats.t.sf(abs(t_hand), len(d) - 1))
    ref = scipy.stats.ttest_rel(a, b)
    assert (t, p) == pytest.approx((ref.statistic, ref.pvalue))
    w, wp = sig.wilcoxon_test(a, b)
    ref_w = scipy.stats.wilcoxon(a, b)
    assert (w, wp) == pytest.approx((ref_w.statistic, ref_w.pvalue))


def test_degenerate_differences():
    x = np.array([0.0, 1.0, 1.0, 0.0])
    assert sig.paired_t_test(x, x) == (0.0, 1.0)
    assert sig.wilcoxon_test(x, x) == (0.0, 1.0)
    assert sig.cohens_d_paired(x, x) == 0.0
    t, p = sig.paired_t_test(x + 1, x)
    assert t == np.inf and p == 0.0
    assert sig.cohens_d_paired(x - 1, x) == -np.inf


def test_nan_pairs_are_dropped():
    a = np.array([1.0, np.nan, 3.0, 4.0, 0.5])
    b = np.array([0.0, 2.0, np.nan, 1.0, 0.7])
    ref = scipy.stats.ttest_rel([1.0, 4.0, 0.5], [0.0, 1.0, 0.7])
    assert sig.paired_t_test(a, b) == pytest.approx((ref.statistic, ref.pvalue))


def test_cohens_d_paired():
    assert sig.cohens_d_paired(np.array([1.0, 2, 3, 4]), np.zeros(4)) == pytest.approx(
        2.5 / np.std([1, 2, 3, 4], ddof=1))


def test_holm_by_hand():
    # Sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → running max.
    np.testing.assert_allclose(sig.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(sig.holm([0.5, 0.6]), [1.0, 1.0])
    np.testing.assert_allclose(sig.holm([0.02]), [0.02])
    out = sig.holm([0.01, np.nan, 0.02])
    assert np.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02)


def test_bootstrap_matches_scipy_and_is_reproducible():
    rng = np.random.default_rng(1)
    x = rng.exponential(size=300)
    low, high = sig.mean_ci(x, n_resamples=999, seed=3)
    ref = scipy.stats.bootstrap((x,), np.mean, n_resamples=999, method="percentile",
                                rng=np.random.default_rng(3))
    assert (low, high) == pytest.approx((ref.confidence_interval.low,
                                         ref.confidence_interval.high))
    assert low < x.mean() < high
    assert sig.mean_ci(x, n_resamples=999, seed=3) == (low, high)
    y = x + rng.normal(0.1, 0.2, size=300)
    assert sig.difference_ci(y, x, n_resamples=999, seed=3) == pytest.approx(
        sig.mean_ci(y - x, n_resamples=999, seed=3))
    assert sig.mean_ci(np.full(5, 0.25)) == (0.25, 0.25)
    assert all(np.isnan(sig.mean_ci(np.array([1.0]))))


def test_compare_paired_and_markers():
    rng = np.random.default_rng(2)
    b = rng.random(200)
    a = b + 0.1
    a[::7] -= 0.3
    c = sig.compare_paired(a, b, n_resamples=500)
    assert c.n == 200 and c.delta == pytest.approx(a.mean() - b.mean())
    assert c.delta_ci[0] < c.delta < c.delta_ci[1]
    assert c.relative_delta == pytest.approx(c.delta / b.mean())
    assert sig.significance_marker(0.0009) == "***"
    assert sig.significance_marker(0.009) == "**"
    assert sig.significance_marker(0.04) == "*"
    assert sig.significance_marker(0.2) == "" and sig.significance_marker(np.nan) == ""
