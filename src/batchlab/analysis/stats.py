"""Statistics over small samples (the seeds of one configuration) and over curves, for claim rules.

Accuracies are fractions; helpers that speak of percentage points (pp) say so. A diverged run has
NaN metrics, so most helpers first keep only the finite values.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
from scipy import stats


def mean_std(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation (ddof=1; zero for a single seed); NaN where no value is finite
    (every seed diverged), without numpy's warnings about it."""
    values = np.asarray(values, dtype=float)
    n = values.shape[axis] if values.size else 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=axis)
        std = np.nanstd(values, axis=axis, ddof=1) if n > 1 else np.zeros_like(mean)
    return mean, std


def finite(values) -> np.ndarray:
    """The finite values of a 1-D sample (a diverged run has NaN metrics)."""
    arr = np.asarray(values, dtype=float).reshape(-1)
    return arr[np.isfinite(arr)]


def pp(sample) -> float:
    """The mean of a sample of fractions, in percent."""
    return 100 * float(np.mean(sample))


def without_finite(samples: Mapping[str, np.ndarray]) -> list[str]:
    """Labels of samples without a single finite value (runs missing or all diverged)."""
    return [label for label, s in samples.items() if finite(s).size == 0]


def nonfinite(samples: Mapping[str, np.ndarray]) -> dict[str, int]:
    """label -> how many values of that sample are not finite (diverged runs), for the samples that have any."""
    counts = {label: int(np.size(s) - finite(s).size) for label, s in samples.items()}
    return {label: n for label, n in counts.items() if n}


def welch_p(a: np.ndarray, b: np.ndarray) -> float | str:
    """Two-sided p-value of Welch's t-test (unequal variances), or why there is none."""
    if len(a) < 2 or len(b) < 2:
        return "n/a (needs 2 seeds each)"
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return "n/a (no spread)"
    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return p if np.isfinite(p) else "n/a (no spread)"


def within_pp(reference: np.ndarray, other: np.ndarray, tol_pp: float) -> tuple[bool, float]:
    """Whether mean(other) lies within tol_pp percentage points of mean(reference); and the gap in pp."""
    gap = pp(other) - pp(reference)
    return abs(gap) <= tol_pp, gap


def concavity(x, y) -> tuple[float, int]:
    """Fraction of negative second divided differences of y(x) (x increasing), and how many there are."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    slopes = np.diff(y) / np.diff(x)
    second = np.diff(slopes)
    second = second[np.isfinite(second)]
    return (float(np.mean(second < 0)) if second.size else float("nan")), int(second.size)


def power_law_exponent(x, y) -> float:
    """alpha of y ~ c x^alpha, least squares on log-log over the points with x > 0 and y > 0."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = (x > 0) & (y > 0) & np.isfinite(y)
    if keep.sum() < 2:
        return float("nan")
    return float(stats.linregress(np.log(x[keep]), np.log(y[keep])).slope)


def linear_r2(x, y) -> float:
    """R^2 of a least-squares line through the finite points of y(x); NaN for fewer than 3 points or constant y."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(y)
    if keep.sum() < 3 or np.ptp(y[keep]) == 0:
        return float("nan")
    return float(stats.linregress(x[keep], y[keep]).rvalue ** 2)


def spearman(x, y) -> tuple[float, float]:
    """Spearman rank correlation of two samples and its p-value."""
    rho, p = stats.spearmanr(x, y)
    return float(rho), float(p)


def linear_fit(x, y) -> tuple[float, float, float]:
    """Least-squares line through (x, y): intercept, slope and R^2."""
    fit = stats.linregress(x, y)
    return float(fit.intercept), float(fit.slope), float(fit.rvalue**2)


__all__ = [
    "mean_std",
    "finite",
    "pp",
    "without_finite",
    "nonfinite",
    "welch_p",
    "within_pp",
    "concavity",
    "power_law_exponent",
    "linear_r2",
    "spearman",
    "linear_fit",
    "grid_argmin",
]


def grid_argmin(logx, profile) -> tuple[float, bool]:
    """The minimiser of a profile over a log grid (of lrs, of half-lives): the grid argmin moved to the vertex of
    the parabola through it and its two neighbours (clipped to between them), so that an optimum between grid points
    is not forced onto one; +inf (a diverged point) is the worst value and NaN is skipped. Also whether the argmin
    sits on the grid's edge (the grid does not bracket it). NaN when no point is finite."""
    logx, profile = np.asarray(logx, dtype=float), np.asarray(profile, dtype=float)
    if not np.any(np.isfinite(profile)):
        return float("nan"), False
    i = int(np.nanargmin(np.where(np.isnan(profile), np.inf, profile)))
    if i == 0 or i == len(profile) - 1:
        return float(logx[i]), len(profile) > 1
    (x0, x1, x2), (y0, y1, y2) = logx[i - 1 : i + 2], profile[i - 1 : i + 2]
    if not (np.isfinite(y0) and np.isfinite(y2)):
        return float(logx[i]), False
    den = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / den
    b = (x2**2 * (y0 - y1) + x1**2 * (y2 - y0) + x0**2 * (y1 - y2)) / den
    if a <= 0:
        return float(x1), False
    return float(np.clip(-b / (2 * a), x0, x2)), False
