"""Significance tests on per-user metric values (scipy does the statistics).

Two models evaluated on the same users give paired samples a_u, b_u with differences
d_u = a_u − b_u (pairs where either value is NaN are dropped):

- paired t-test: ``scipy.stats.ttest_rel(a, b)``, t = mean(d) / (sd(d) / sqrt(n)), two-sided;
- Wilcoxon signed-rank: ``scipy.stats.wilcoxon(a, b)`` (zero differences discarded, scipy's
  default ``zero_method="wilcox"``), two-sided;
- bootstrap confidence intervals: ``scipy.stats.bootstrap`` over users, for a model's mean and,
  resampling the users' differences d_u, for the mean difference (percentile method by
  default; "BCa" is available but its jackknife is O(n²));
- effect size: Cohen's d for paired samples, d_z = mean(d) / sd(d) (sd with n − 1);
- Holm's step-down correction when several models are compared with one baseline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import scipy.stats

DEFAULT_RESAMPLES = 2000
# Resampled values held at once by scipy's bootstrap (its `batch`), to bound memory.
_BOOTSTRAP_VALUES_PER_BATCH = 10_000_000


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """Model a against baseline b on the users where both are defined."""

    n: int
    mean_a: float
    mean_b: float
    delta: float
    delta_ci: tuple[float, float]
    relative_delta: float
    t_statistic: float
    t_pvalue: float
    wilcoxon_statistic: float
    wilcoxon_pvalue: float
    cohens_d: float


def paired_values(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 copies of ``a`` and ``b`` without the pairs where either is NaN."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples must be 1-D and of equal length: {a.shape}, {b.shape}")
    keep = ~(np.isnan(a) | np.isnan(b))
    return a[keep], b[keep]


def bootstrap_ci(data: Sequence[np.ndarray], statistic: Callable[..., np.ndarray], *,
                 confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                 method: str = "percentile") -> tuple[float, float]:
    """Bootstrap CI of ``statistic`` over users; the arrays in ``data`` are resampled together.

    ``statistic(*arrays, axis=-1)`` must be vectorised, as ``scipy.stats.bootstrap`` expects.
    Returns (NaN, NaN) for fewer than two users.
    """
    data = tuple(np.asarray(d, dtype=np.float64) for d in data)
    n = len(data[0])
    if n < 2:
        return float("nan"), float("nan")
    if all(np.ptp(d) == 0 for d in data):  # every resample gives the same value
        value = float(statistic(*data, axis=-1))
        return value, value
    result = scipy.stats.bootstrap(
        data, statistic, n_resamples=n_resamples, confidence_level=confidence, method=method,
        paired=len(data) > 1, vectorized=True, rng=np.random.default_rng(seed),
        batch=max(1, _BOOTSTRAP_VALUES_PER_BATCH // n))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def mean_ci(values: np.ndarray, **kwargs) -> tuple[float, float]:
    """Bootstrap CI of the mean of per-user values (NaNs dropped); kwargs as ``bootstrap_ci``."""
    v = np.asarray(values, dtype=np.float64)
    return bootstrap_ci((v[~np.isnan(v)],), np.mean, **kwargs)


def difference_ci(a: np.ndarray, b: np.ndarray, **kwargs) -> tuple[float, float]:
    """Bootstrap CI of mean(a − b), resampling the per-user differences."""
    a, b = paired_values(a, b)
    return bootstrap_ci((a - b,), np.mean, **kwargs)


def paired_t_test(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sided paired t-test (``scipy.stats.ttest_rel``): (t, p).

    When every difference is equal the test is degenerate: p = 1 if they are all zero, else
    p = 0 (t = ±inf).
    """
    a, b = paired_values(a, b)
    d = a - b
    if len(d) < 2:
        return float("nan"), float("nan")
    if np.all(d == d[0]):
        return (0.0, 1.0) if d[0] == 0 else (float(np.sign(d[0]) * np.inf), 0.0)
    res = scipy.stats.ttest_rel(a, b)
    return float(res.statistic), float(res.pvalue)


def wilcoxon_test(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``): (W, p).

    p = 1 when every difference is zero (scipy has nothing to rank).
    """
    a, b = paired_values(a, b)
    if len(a) == 0:
        return float("nan"), float("nan")
    if np.all(a == b):
        return 0.0, 1.0
    res = scipy.stats.wilcoxon(a, b)
    return float(res.statistic), float(res.pvalue)


def cohens_d_paired(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's d_z = mean(d) / sd(d), d = a − b, sd with n − 1 degrees of freedom.

    0 when every difference is zero; ±inf when they are all equal and non-zero.
    """
    a, b = paired_values(a, b)
    d = a - b
    if len(d) < 2:
        return float("nan")
    sd = d.std(ddof=1)
    if sd == 0:
        return 0.0 if d.mean() == 0 else float(np.sign(d.mean()) * np.inf)
    return float(d.mean() / sd)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values, in the input order.

    With the m non-NaN p-values sorted ascending p_(1) ≤ ... ≤ p_(m):
    p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j)). Reject H_(i) when p̃_(i) ≤ α. NaNs stay NaN.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def compare_paired(a: np.ndarray, b: np.ndarray, *, confidence: float = 0.95,
                   n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                   method: str = "percentile") -> PairedComparison:
    """All paired statistics of model ``a`` against baseline ``b``."""
    pa, pb = paired_values(a, b)
    mean_a = float(pa.mean()) if len(pa) else float("nan")
    mean_b = float(pb.mean()) if len(pb) else float("nan")
    t, tp = paired_t_test(pa, pb)
    w, wp = wilcoxon_test(pa, pb)
    delta = mean_a - mean_b
    return PairedComparison(
        n=len(pa), mean_a=mean_a, mean_b=mean_b, delta=delta,
        delta_ci=difference_ci(pa, pb, confidence=confidence, n_resamples=n_resamples,
                               seed=seed, method=method),
        relative_delta=delta / mean_b if mean_b else float("nan"),
        t_statistic=t, t_pvalue=tp, wilcoxon_statistic=w, wilcoxon_pvalue=wp,
        cohens_d=cohens_d_paired(pa, pb))


def significance_marker(p: float) -> str:
    """``***`` p < 0.001, ``**`` p < 0.01, ``*`` p < 0.05, else empty."""
    if not np.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""
