"""Trend and association decisions for claim rules, in the three outcomes of `decisions`.

- `trend`: does a quantity grow along an ordered factor (the batch size), the seeds paired? Page's (1963) L test:
  within each seed the configurations are ranked, and L = Σ_j j R_j (R_j the rank sum of the j-th configuration)
  is large when the ranks follow the predicted order. Exact for small tables (scipy), a one-sided test of an ordered
  alternative that uses the pairing and no more than the ranks (a seed's scale cannot dominate). Two configurations:
  the paired one-sided t of `decisions.higher` on the logs.
- `rank_association`: Spearman's rho between two quantities across runs, a permutation p-value each way and a
  percentile bootstrap interval.

Each returns a `Decision`: supported when the predicted direction is significant at alpha, not supported when the
opposite direction is, inconclusive otherwise (with about how many seeds or runs would decide at this effect).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from .decisions import ALPHA, Decision, higher

Z_POWER = 0.84  # 80 % power, as `decisions.seeds_needed`


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(stats.spearmanr(x, y).statistic)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson's r of each row of a with the same row of b (0 where a row does not vary)."""
    a, b = a - a.mean(-1, keepdims=True), b - b.mean(-1, keepdims=True)
    den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    with np.errstate(all="ignore"):
        return np.where(den > 0, (a * b).sum(-1) / den, 0.0)


def trend(
    samples: Sequence, *, increasing: bool = True, labels: Sequence | None = None, alpha: float = ALPHA
) -> Decision:
    """Page's L test that `samples[j]` (the seeds' values of configuration j, seed-aligned, NaN missing) follow the
    order j (increasing, or decreasing). A configuration with fewer than 2 finite seeds is left out (named in the
    why, and in `extra["dropped"]`); then only seeds with every remaining configuration finite take part (a block
    needs all its ranks). estimate: the mean over seeds of Spearman's rho between j and the values (+1: every seed
    in the predicted order); ci: the smallest and largest per-seed rho; p: Page's one-sided p."""
    table = np.asarray([np.asarray(s, dtype=float).reshape(-1) for s in samples], dtype=float)
    if table.ndim != 2 or table.size == 0:
        return Decision("inconclusive", math.nan, (math.nan,) * 2, math.nan, "trend", (0,), "no values")
    labels = [str(j + 1) for j in range(table.shape[0])] if labels is None else [str(x) for x in labels]
    kept = np.isfinite(table).sum(axis=1) >= 2
    dropped = [labels[j] for j in np.flatnonzero(~kept)]
    if dropped:
        d = trend(list(table[kept]), increasing=increasing, alpha=alpha)
        why = f"{d.why} ({', '.join(dropped)} left out: fewer than 2 finished seeds)"
        return Decision(d.verdict, d.estimate, d.ci, d.p, d.test, d.n, why, {"dropped": dropped})
    k = table.shape[0]
    order = np.arange(k) if increasing else np.arange(k)[::-1]
    complete = table[:, np.all(np.isfinite(table), axis=0)].T  # [seeds, k]
    n = complete.shape[0]
    word = "increasing" if increasing else "decreasing"
    if k < 2:
        return Decision("inconclusive", math.nan, (math.nan,) * 2, math.nan, "trend", (n,), "needs 2 configurations")
    if k == 2:
        logs = np.log(complete) if complete.size and np.all(complete > 0) else complete
        a, b = (logs[:, 0], logs[:, 1]) if increasing else (logs[:, 1], logs[:, 0])
        d = higher(a, b, alpha=alpha)
        return Decision(d.verdict, d.estimate, d.ci, d.p, f"{d.test} (two configurations)", d.n, d.why)
    test = f"Page's L test ({word} over {k} configurations, seeds as blocks, one-sided)"
    if n < 2:
        return Decision(
            "inconclusive",
            math.nan,
            (math.nan,) * 2,
            math.nan,
            test,
            (n,),
            f"{n} seed{'s' * (n != 1)} with every configuration finished: needs 2",
        )
    rhos = np.array([_spearman(order.astype(float), row) for row in complete])
    ranks = list(range(1, k + 1))
    p = float(stats.page_trend_test(complete, predicted_ranks=ranks if increasing else ranks[::-1]).pvalue)
    p_other = float(stats.page_trend_test(complete, predicted_ranks=ranks[::-1] if increasing else ranks).pvalue)
    est, ci = float(rhos.mean()), (float(rhos.min()), float(rhos.max()))
    label = f"mean per-seed Spearman rho {est:+.2f} over {n} seeds"
    if p < alpha:
        return Decision("supported", est, ci, p, test, (n,), f"{label}: {word} (Page p = {p:.2g})")
    if p_other < alpha:
        return Decision("not supported", est, ci, p, test, (n,), f"{label}: the opposite trend (p = {p_other:.2g})")
    # the normal approximation of L: z = rho_mean sqrt(n (k - 1)); seeds for z to reach z_alpha + z_power
    need = math.ceil(((stats.norm.ppf(1 - alpha) + Z_POWER) / est) ** 2 / (k - 1)) if est > 0 else None
    more = f"; needs about {max(need, n + 1)} seeds to decide at this effect" if need else ""
    return Decision("inconclusive", est, ci, p, test, (n,), f"{label}, Page p = {p:.2g}{more}")


def rank_association(
    x, y, *, negative: bool = True, alpha: float = ALPHA, resamples: int = 9999, boot: int = 2000, seed: int = 0
) -> Decision:
    """Spearman's rho between x and y over the pairs where both are finite, with a one-sided permutation p in the
    predicted direction (negative: rho < 0) and the other, and a 95 % percentile bootstrap interval over the
    pairs (both seeded: the same numbers give the same verdict). With fewer than 9 pairs every permutation is
    enumerated."""
    x, y = np.asarray(x, dtype=float).reshape(-1), np.asarray(y, dtype=float).reshape(-1)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.size)
    word = "negative" if negative else "positive"
    test = f"Spearman rho, one-sided permutation test ({word}), 95 % bootstrap CI over runs"
    if n < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        why = f"{n} runs with both values" + (": needs 4" if n < 4 else ": one of them does not vary")
        return Decision("inconclusive", math.nan, (math.nan,) * 2, math.nan, test, (n,), why)
    rho = _spearman(x, y)
    exact = math.factorial(n) <= resamples
    kw = dict(
        permutation_type="pairings", n_resamples=math.inf if exact else resamples, rng=np.random.default_rng(seed)
    )

    rx, ry = stats.rankdata(x), stats.rankdata(y)  # Spearman's rho is Pearson's r of the ranks

    def statistic(a, axis=-1):
        return _pearson_rows(np.moveaxis(a, axis, -1), np.broadcast_to(ry, np.moveaxis(a, axis, -1).shape))

    p_less = float(stats.permutation_test((rx,), statistic, alternative="less", vectorized=True, **kw).pvalue)
    p_greater = float(stats.permutation_test((rx,), statistic, alternative="greater", vectorized=True, **kw).pvalue)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(boot, n))
    boots = _pearson_rows(stats.rankdata(x[draws], axis=1), stats.rankdata(y[draws], axis=1))
    ci = (float(np.nanquantile(boots, 0.025)), float(np.nanquantile(boots, 0.975)))
    p, p_other = (p_less, p_greater) if negative else (p_greater, p_less)
    label = f"rho {rho:+.2f} over {n} runs (95 % CI [{ci[0]:+.2f}, {ci[1]:+.2f}])"
    if p < alpha:
        return Decision("supported", rho, ci, p, test, (n,), f"{label}: {word}, p = {p:.2g}")
    if p_other < alpha:
        return Decision("not supported", rho, ci, p, test, (n,), f"{label}: the opposite sign, p = {p_other:.2g}")
    z = abs(math.atanh(max(min(rho, 0.999), -0.999)))  # Fisher's z: runs for a one-sided test to see |rho| at 80 %
    right_sign = rho < 0 if negative else rho > 0
    need = math.ceil(((stats.norm.ppf(1 - alpha) + Z_POWER) / z) ** 2 + 3) if right_sign and z > 0 else None
    more = f"; needs about {max(need, n + 1)} runs to decide at this rho" if need else ""
    if need and need > 10_000:
        more = "; rho is so near 0 that more than 10,000 runs would be needed to decide"
    return Decision("inconclusive", rho, ci, p, test, (n,), f"{label}, p = {p:.2g}{more}")
