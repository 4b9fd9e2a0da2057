"""The few statistical tests drift detection needs, in numpy (scipy is not a dependency).

- `ks_2samp`: two-sample Kolmogorov-Smirnov statistic and its asymptotic p-value (Numerical Recipes' probks
  with Stephens' small-sample correction), matching scipy's `ks_2samp(method="asymp")` to ~1e-3.
- `chi2_sf` / `chi2_homogeneity`: chi-squared survival function via the regularised incomplete gamma function
  (series below a+1, Lentz continued fraction above), and the 2 x K homogeneity test built on it.
- `psi` and `js_distance` on already-binned proportions.
"""

from __future__ import annotations

import math

import numpy as np

_EPS = 1e-14
_TINY = 1e-300


def kolmogorov_sf(lam: float) -> float:
    """P(K > lam) for the Kolmogorov distribution: 2 * sum_{j>=1} (-1)^(j-1) exp(-2 j^2 lam^2)."""
    if lam < 0.18:
        return 1.0  # the alternating series converges badly here and the true value is 1.0 to 1e-9
    j = np.arange(1, 101)
    terms = 2.0 * (-1.0) ** (j - 1) * np.exp(-2.0 * j * j * lam * lam)
    return float(min(1.0, max(0.0, terms.sum())))


def ks_2samp(a_sorted: np.ndarray, b_sorted: np.ndarray) -> tuple[float, float]:
    """(D, p-value) for two samples given already sorted (NaNs removed)."""
    n, m = len(a_sorted), len(b_sorted)
    if n == 0 or m == 0:
        return math.nan, math.nan
    pooled = np.concatenate((a_sorted, b_sorted))
    cdf_a = np.searchsorted(a_sorted, pooled, side="right") / n
    cdf_b = np.searchsorted(b_sorted, pooled, side="right") / m
    d = float(np.max(np.abs(cdf_a - cdf_b)))
    en = math.sqrt(n * m / (n + m))
    return d, kolmogorov_sf((en + 0.12 + 0.11 / en) * d)


def _gamma_series(a: float, x: float) -> float:
    """Regularised lower incomplete gamma P(a, x) by its series (good for x < a + 1)."""
    ap, term = a, 1.0 / a
    total = term
    for _ in range(10_000):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * _EPS:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_cont_fraction(a: float, x: float) -> float:
    """Regularised upper incomplete gamma Q(a, x) by Lentz's continued fraction (good for x >= a + 1)."""
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < _TINY:
            d = _TINY
        c = b + an / c
        if abs(c) < _TINY:
            c = _TINY
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def gammaincc(a: float, x: float) -> float:
    """Q(a, x) = Gamma(a, x) / Gamma(a)."""
    if a <= 0:
        raise ValueError("a must be > 0")
    if x <= 0:
        return 1.0
    if x < a + 1.0:
        return max(0.0, 1.0 - _gamma_series(a, x))
    return min(1.0, _gamma_cont_fraction(a, x))


def chi2_sf(x: float, dof: int) -> float:
    """P(X > x) for a chi-squared variable with `dof` degrees of freedom."""
    if dof < 1:
        return math.nan
    return gammaincc(dof / 2.0, x / 2.0)


def chi2_homogeneity(ref_counts: np.ndarray, live_counts: np.ndarray) -> tuple[float, float]:
    """Chi-squared test that two count vectors over the same categories come from one distribution."""
    table = np.vstack((ref_counts, live_counts)).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return math.nan, math.nan
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    stat = float(((table - expected) ** 2 / expected).sum())
    return stat, chi2_sf(stat, table.shape[1] - 1)


def psi(expected: np.ndarray, actual: np.ndarray, eps: float = 1e-4) -> float:
    """Population stability index sum((a - e) * ln(a / e)); empty bins are floored at `eps`."""
    e = np.maximum(expected, eps)
    a = np.maximum(actual, eps)
    return float(np.sum((a - e) * np.log(a / e)))


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, so 0..1) between two probability vectors."""
    p = p / p.sum()
    q = q / q.sum()
    m = 0.5 * (p + q)

    def kl(x: np.ndarray) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / m[mask])))

    return math.sqrt(max(0.0, 0.5 * kl(p) + 0.5 * kl(q)))
