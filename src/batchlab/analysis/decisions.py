"""Statistical decisions behind claim verdicts: each returns the verdict and the numbers it rests on.

Every decision has three outcomes. `supported`: the data show the statement at level alpha.
`not supported`: the data show its opposite at level alpha. `inconclusive`: neither, because
there are too few seeds or the spread is too wide for the margin; the `why` says so, and where it
can, how many seeds per arm would decide at this spread.

Seeds are paired where both samples come from the same seeds (seed s fixes the init and the data
order of every configuration): the test then runs on the per-seed differences, which removes the
seed-to-seed variation both arms share (Student's paired t). Otherwise Welch's t (unequal
variances). Equivalence within a margin m is Schuirmann's (1987) two one-sided tests (TOST): the
(1 - 2 alpha) confidence interval of the difference lies inside (-m, m). Several tests inside one
claim are Holm-corrected (Holm 1979).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

ALPHA = 0.05


@dataclass(frozen=True)
class Decision:
    """A verdict and its numbers: estimate, confidence interval, p-value, test, seeds used, and why."""

    verdict: str  # "supported" | "not supported" | "inconclusive"
    estimate: float
    ci: tuple[float, float]
    p: float
    test: str
    n: tuple[int, ...]
    why: str
    extra: dict = field(default_factory=dict)

    def evidence(self, prefix: str = "", scale: float = 1.0, unit: str = "") -> dict:
        """The numbers as claim evidence (estimate and CI scaled, e.g. 100 for percentage points)."""
        u = f" ({unit})" if unit else ""
        out = {
            f"{prefix}estimate{u}": self.estimate * scale,
            f"{prefix}CI{u}": f"[{self.ci[0] * scale:.4g}, {self.ci[1] * scale:.4g}]",
            f"{prefix}p": self.p,
            f"{prefix}test": self.test,
            f"{prefix}seeds": "/".join(map(str, self.n)),
        }
        if not math.isfinite(self.p):  # a CI-only decision (ratio) or too few seeds: no p to show
            del out[f"{prefix}p"]
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def _finite(x) -> np.ndarray:
    a = np.asarray(x, dtype=float).reshape(-1)
    return a[np.isfinite(a)]


def _pairs(a, b) -> tuple[np.ndarray, np.ndarray] | None:
    """Seed-aligned finite pairs when a and b are the same seeds (same length), else None."""
    a, b = np.asarray(a, dtype=float).reshape(-1), np.asarray(b, dtype=float).reshape(-1)
    if a.shape != b.shape:
        return None
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def difference(a, b, *, paired: bool = True, confidence: float = 0.95) -> dict:
    """mean(b - a): estimate, standard error, degrees of freedom and a two-sided t interval.

    `paired` uses seed-aligned differences when both samples have the same seeds; otherwise (or
    when asked not to) Welch's unequal-variance t with the Welch-Satterthwaite degrees of freedom.
    """
    pairs = _pairs(a, b) if paired else None
    if pairs is not None and len(pairs[0]) < 2:  # the same seeds, too few of them complete: no silent Welch
        nan = float("nan")
        est = float(np.mean(pairs[1] - pairs[0])) if len(pairs[0]) else nan
        k = len(pairs[0])
        return {"estimate": est, "se": nan, "df": nan, "ci": (nan, nan), "test": "paired t", "n": (k, k), "pairs": k}
    if pairs is not None:
        d = pairs[1] - pairs[0]
        est, n = float(d.mean()), len(d)
        se, df, test, ns = float(d.std(ddof=1) / math.sqrt(n)), n - 1, "paired t", (n, n)
    else:
        fa, fb = _finite(a), _finite(b)
        ns = (len(fa), len(fb))
        if min(ns) < 2:
            return {
                "estimate": float(fb.mean() - fa.mean()) if min(ns) else float("nan"),
                "se": float("nan"),
                "df": float("nan"),
                "ci": (float("nan"), float("nan")),
                "test": "Welch t",
                "n": ns,
            }
        va, vb = fa.var(ddof=1) / len(fa), fb.var(ddof=1) / len(fb)
        est, se = float(fb.mean() - fa.mean()), float(math.sqrt(va + vb))
        df = float((va + vb) ** 2 / (va**2 / (len(fa) - 1) + vb**2 / (len(fb) - 1))) if va + vb > 0 else float("inf")
        test = "Welch t"
    t = stats.t.ppf(0.5 + confidence / 2, df) if se > 0 else 0.0
    return {"estimate": est, "se": se, "df": df, "ci": (est - t * se, est + t * se), "test": test, "n": ns}


def _undecidable(r: dict) -> str | None:
    """Why a `difference` cannot decide anything, or None: too few seeds, too few complete pairs, or no spread among
    2 seeds (both differences equal: a tie of two seeds at the same accuracy is not evidence of zero variance; with 3
    or more, equal differences are taken as what they are, e.g. a deterministic comparison)."""
    if "pairs" in r:
        return f"only {r['pairs']} complete seed pair{'s' * (r['pairs'] != 1)} (a seed missing or diverged in one arm)"
    if min(r["n"]) < 2 or not math.isfinite(r["se"]):
        return "needs at least 2 finished seeds in each arm"
    if r["se"] == 0 and min(r["n"]) < 3:  # two seeds at the same quantised accuracy are a tie, not certainty
        return "every seed gives the same difference: no spread to test against (more seeds or a finer measurement)"
    return None


def _p_greater(est: float, se: float, df: float, delta: float) -> float:
    """One-sided p for H1: true difference > delta."""
    if se == 0:
        return 0.0 if est > delta else 1.0
    return float(stats.t.sf((est - delta) / se, df))


def seeds_needed(sd: float, distance: float, alpha: float = ALPHA, power_z: float = 0.84) -> int | None:
    """About how many seeds per arm make a one-sided t-test at `alpha` detect `distance` at this
    spread (normal approximation, 80 % power by default); None when it cannot (distance <= 0)."""
    if not (sd > 0) or not (distance > 0):
        return None
    z = stats.norm.ppf(1 - alpha)
    return max(2, math.ceil(((z + power_z) * sd / distance) ** 2) + 1)


def equivalent(a, b, margin: float, *, paired: bool = True, alpha: float = ALPHA) -> Decision:
    """TOST: mean(b) - mean(a) lies within (-margin, margin).

    supported: the (1 - 2 alpha) CI lies inside the margins. not supported: the CI lies entirely
    outside them (the difference is significantly larger than the margin). Otherwise inconclusive.
    """
    r = difference(a, b, paired=paired, confidence=1 - 2 * alpha)
    est, se, df, (lo, hi) = r["estimate"], r["se"], r["df"], r["ci"]
    test = f"TOST ({r['test']}, margin ±{margin:g}, {100 * (1 - 2 * alpha):.0f} % CI)"
    if why := _undecidable(r):
        return Decision("inconclusive", est, (lo, hi), float("nan"), test, r["n"], why)
    p = max(_p_greater(est, se, df, -margin), _p_greater(-est, se, df, -margin))
    if -margin < lo and hi < margin:
        return Decision(
            "supported",
            est,
            (lo, hi),
            p,
            test,
            r["n"],
            f"the {100 * (1 - 2 * alpha):.0f} % CI [{lo:.3g}, {hi:.3g}] lies inside ±{margin:g}",
        )
    if lo >= margin or hi <= -margin:
        return Decision(
            "not supported",
            est,
            (lo, hi),
            p,
            test,
            r["n"],
            f"the {100 * (1 - 2 * alpha):.0f} % CI [{lo:.3g}, {hi:.3g}] lies outside ±{margin:g}",
        )
    sd = se * math.sqrt(min(r["n"]) if r["test"] == "paired t" else min(r["n"]) / 2)
    need = seeds_needed(sd, margin - abs(est))
    more = f"; needs about {need} seeds per arm to decide at this spread" if need else ""
    return Decision(
        "inconclusive",
        est,
        (lo, hi),
        p,
        test,
        r["n"],
        f"the {100 * (1 - 2 * alpha):.0f} % CI [{lo:.3g}, {hi:.3g}] crosses ±{margin:g}{more}",
    )


def lower(a, b, *, by: float = 0.0, paired: bool = True, alpha: float = ALPHA) -> Decision:
    """One-sided: mean(b) < mean(a) - by (b is lower than a by more than `by`).

    supported: p < alpha. not supported: the opposite one-sided test is significant (b is not
    lower by `by`: mean(b) - mean(a) > -by at level alpha). Otherwise inconclusive.
    """
    r = difference(a, b, paired=paired, confidence=1 - 2 * alpha)
    est, se, df, ci = r["estimate"], r["se"], r["df"], r["ci"]
    test = f"one-sided {r['test']}" + (f", by more than {by:g}" if by else "")
    if why := _undecidable(r):
        return Decision("inconclusive", est, ci, float("nan"), test, r["n"], why)
    p = _p_greater(-est, se, df, by)  # H1: -(b - a) > by
    if p < alpha:
        return Decision("supported", est, ci, p, test, r["n"], f"lower by {-est:.3g} (p = {p:.2g} < {alpha:g})")
    if _p_greater(est, se, df, -by) < alpha:
        return Decision(
            "not supported",
            est,
            ci,
            p,
            test,
            r["n"],
            f"difference {est:+.3g}: significantly not lower by {by:g}"
            if by
            else f"difference {est:+.3g}: significantly not lower",
        )
    sd = se * math.sqrt(min(r["n"]) if r["test"] == "paired t" else min(r["n"]) / 2)
    need = seeds_needed(sd, abs(est + by)) if -est > by else None
    more = f"; needs about {need} seeds per arm to decide at this spread" if need else ""
    return Decision("inconclusive", est, ci, p, test, r["n"], f"difference {est:+.3g} with p = {p:.2g}{more}")


def higher(a, b, *, by: float = 0.0, paired: bool = True, alpha: float = ALPHA) -> Decision:
    """One-sided: mean(b) > mean(a) + by. (The mirror of `lower`, with the estimate as b - a, in its words too.)"""
    d = lower(-np.asarray(a, dtype=float), -np.asarray(b, dtype=float), by=by, paired=paired, alpha=alpha)
    why = d.why.replace("lower", "higher")
    if why.startswith("difference ") and math.isfinite(d.estimate):  # the difference b - a, not its negative
        why = f"difference {-d.estimate:+.3g}" + why[len(f"difference {d.estimate:+.3g}") :]
    return Decision(d.verdict, -d.estimate, (-d.ci[1], -d.ci[0]), d.p, d.test, d.n, why)


def ratio_within(
    a, b, lo: float, hi: float, *, paired: bool = True, alpha: float = ALPHA, n_boot: int = 10_000, seed: int = 0
) -> Decision:
    """The ratio mean(b) / mean(a) lies inside [lo, hi] with (1 - alpha) confidence.

    Paired seeds: a t interval of the mean log ratio, exponentiated. Otherwise a percentile
    bootstrap over seeds of the ratio of means. supported: the CI lies inside [lo, hi]; not
    supported: entirely outside; else inconclusive.
    """
    pairs = _pairs(a, b) if paired else None
    if pairs is not None and len(pairs[0]) >= 2 and np.all(pairs[0] > 0) and np.all(pairs[1] > 0):
        logs = np.log(pairs[1] / pairs[0])
        n = len(logs)
        m, se = float(logs.mean()), float(logs.std(ddof=1) / math.sqrt(n))
        t = stats.t.ppf(1 - alpha / 2, n - 1)
        est, ci, test, ns = math.exp(m), (math.exp(m - t * se), math.exp(m + t * se)), "paired log-ratio t", (n, n)
    else:
        fa, fb = _finite(a), _finite(b)
        ns = (len(fa), len(fb))
        if min(ns) < 2 or fa.mean() <= 0:
            return Decision(
                "inconclusive",
                float("nan"),
                (float("nan"),) * 2,
                float("nan"),
                "bootstrap ratio",
                ns,
                "needs at least 2 finished seeds in each arm",
            )
        rng = np.random.default_rng(seed)
        boot = rng.choice(fb, (n_boot, len(fb))).mean(1) / rng.choice(fa, (n_boot, len(fa))).mean(1)
        est = float(fb.mean() / fa.mean())
        ci = (float(np.quantile(boot, alpha / 2)), float(np.quantile(boot, 1 - alpha / 2)))
        test = "bootstrap ratio of means"
    if min(ns) < 2:
        return Decision("inconclusive", est, ci, float("nan"), test, ns, "needs at least 2 finished seeds in each arm")
    label = f"{100 * (1 - alpha):.0f} % CI [{ci[0]:.3g}, {ci[1]:.3g}]"
    if lo <= ci[0] and ci[1] <= hi:
        return Decision("supported", est, ci, float("nan"), test, ns, f"{label} lies inside [{lo:g}, {hi:g}]")
    if ci[1] < lo or ci[0] > hi:
        return Decision("not supported", est, ci, float("nan"), test, ns, f"{label} lies outside [{lo:g}, {hi:g}]")
    return Decision("inconclusive", est, ci, float("nan"), test, ns, f"{label} crosses [{lo:g}, {hi:g}]")


def holm(pvalues: Sequence[float], alpha: float = ALPHA) -> list[float]:
    """Holm-adjusted p-values (reject where adjusted p < alpha): step-down, monotone, capped at 1."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def monotone(
    samples: Sequence, *, direction: str = "decreasing", paired: bool = True, alpha: float = ALPHA
) -> tuple[str, list[Decision], list[float]]:
    """Each consecutive step of `samples` is a significant decrease (or increase), Holm-corrected.

    Returns the verdict, the step decisions and their Holm-adjusted p-values. supported: every
    adjusted p < alpha. not supported: some step significantly goes the other way. Otherwise
    inconclusive.
    """
    test = lower if direction == "decreasing" else higher
    steps = [test(a, b, paired=paired, alpha=alpha) for a, b in zip(samples[:-1], samples[1:])]
    if not steps or any(d.verdict == "inconclusive" and not math.isfinite(d.p) for d in steps):
        return "inconclusive", steps, [float("nan")] * len(steps)
    adjusted = holm([d.p for d in steps], alpha)
    if all(p < alpha for p in adjusted):
        return "supported", steps, adjusted
    if any(d.verdict == "not supported" for d in steps):
        return "not supported", steps, adjusted
    return "inconclusive", steps, adjusted


def joint_verdict(decisions: Sequence[Decision], adjusted: Sequence[float] | None = None) -> str:
    """The verdict of a claim that needs every one of its tests: any not supported -> not supported; all
    supported (and, with Holm, every adjusted p below alpha) -> supported; else inconclusive."""
    if any(d.verdict == "not supported" for d in decisions):
        return "not supported"
    if all(d.verdict == "supported" for d in decisions) and (adjusted is None or all(p < ALPHA for p in adjusted)):
        return "supported"
    return "inconclusive"


def holm_evidence(tests: Mapping[str, Decision], adjusted: Sequence[float], *, unit: str = "") -> dict:
    """Each test's numbers (`Decision.evidence`) under its label, with its Holm-adjusted p."""
    evidence: dict = {}
    for (label, d), p_adj in zip(tests.items(), adjusted):
        evidence |= d.evidence(prefix=f"{label}: ", unit=unit) | {f"{label}: Holm p": p_adj}
    return evidence


def fit_exponent(x, y) -> float:
    """a of y = c x^a by least squares on log-log over the points with x > 0 and y > 0."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = (x > 0) & (y > 0) & np.isfinite(y)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


def exponent_interval(x, curves, *, alpha: float = ALPHA) -> dict:
    """Power-law exponent per seed (curves [seeds, points] against x), their mean and a Student t interval over the
    seeds: {"per_seed", "mean", "ci", "n"}. The t interval has its nominal coverage for normal per-seed exponents
    at any number of seeds (a percentile bootstrap over 2, 3, 5 and 10 seeds covers 49, 74, 84 and 90 % at a
    nominal 95 %: tests/test_decisions.py simulates both); below 2 finished seeds the interval is NaN."""
    per_seed = np.array([fit_exponent(x, c) for c in np.atleast_2d(np.asarray(curves, dtype=float))])
    per_seed = per_seed[np.isfinite(per_seed)]
    n = int(per_seed.size)
    if n < 2:
        mean = float(per_seed.mean()) if n else float("nan")
        return {"per_seed": per_seed.tolist(), "mean": mean, "ci": (float("nan"), float("nan")), "n": n}
    mean, se = float(per_seed.mean()), float(per_seed.std(ddof=1) / math.sqrt(n))
    t = stats.t.ppf(1 - alpha / 2, n - 1)
    return {"per_seed": per_seed.tolist(), "mean": mean, "ci": (mean - t * se, mean + t * se), "n": n}


def not_worse(a, b, margin: float, *, alpha: float = ALPHA) -> Decision:
    """Non-inferiority of b to a, relative and paired by seed: mean log(b_s / a_s) < log(1 + margin), by a
    one-sided paired t on the per-seed log ratios (losses: positive, lower is better).

    supported: the upper end of the one-sided (1 - alpha) bound lies below log(1 + margin). not supported: b is
    worse by more than the margin at level alpha, or some seed of b diverged (+inf, NaN) where a's did not: a
    diverged arm is an outcome, the worst one. inconclusive: neither, with the seeds it would need."""
    a, b = np.asarray(a, dtype=float).reshape(-1), np.asarray(b, dtype=float).reshape(-1)
    bound = math.log1p(margin)
    test = f"one-sided paired t on log(b/a), non-inferiority margin {100 * margin:g} %"
    n = (len(a), len(b))
    if a.shape != b.shape or len(a) < 2:
        return Decision("inconclusive", math.nan, (math.nan,) * 2, math.nan, test, n, "needs at least 2 paired seeds")
    bad_a, bad_b = ~(np.isfinite(a) & (a > 0)), ~(np.isfinite(b) & (b > 0))
    if np.any(bad_b & ~bad_a):
        k = int(np.sum(bad_b & ~bad_a))
        return Decision("not supported", math.inf, (math.inf,) * 2, 0.0, test, n, f"{k} of {len(b)} seeds diverged")
    keep = ~bad_a & ~bad_b
    if keep.sum() < 2:
        return Decision("inconclusive", math.nan, (math.nan,) * 2, math.nan, test, n, "the reference arm diverged")
    d = np.log(b[keep] / a[keep])
    m, k = float(d.mean()), int(keep.sum())
    se = float(d.std(ddof=1) / math.sqrt(k))
    est = math.expm1(m)
    if se == 0:
        p = 0.0 if m < bound else 1.0
        p_worse = 0.0 if m > bound else 1.0
        ci = (est, est)
    else:
        p = float(stats.t.cdf((m - bound) / se, k - 1))  # H1: mean log ratio < bound
        p_worse = float(stats.t.sf((m - bound) / se, k - 1))  # H1: mean log ratio > bound
        t = stats.t.ppf(1 - alpha, k - 1)
        ci = (math.expm1(m - t * se), math.expm1(m + t * se))
    label = f"b/a - 1 = {100 * est:+.2f} % (90 % CI [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}] %)"
    if p < alpha:
        return Decision("supported", est, ci, p, test, (k, k), f"{label}: below +{100 * margin:g} %, p = {p:.2g}")
    if p_worse < alpha:
        return Decision("not supported", est, ci, p, test, (k, k), f"{label}: worse than +{100 * margin:g} %")
    need = seeds_needed(se * math.sqrt(k), abs(bound - m))
    more = f"; needs about {need} seeds to decide at this spread" if need else ""
    return Decision("inconclusive", est, ci, p, test, (k, k), f"{label} crosses +{100 * margin:g} %{more}")


def fixed_sequence(decisions: Sequence[Decision]) -> tuple[int, Decision | None]:
    """Fixed-sequence testing (Maurer, Hothorn & Lehmacher 1995; Westfall & Krishen 2001): hypotheses in an order
    set before the data (e.g. batch sizes from small to large), each tested at the full alpha, stopping at the first
    that is not supported; the family-wise error stays at alpha without a correction. Returns how many were supported
    before the stop and the decision that stopped the sequence (None when every one is supported)."""
    for i, d in enumerate(decisions):
        if d.verdict != "supported":
            return i, d
    return len(decisions), None


def diverged_as_worst(values, diverged, worst: float) -> np.ndarray:
    """`values` with the diverged seeds' set to `worst`: a run that diverged is an outcome, the worst one, not a
    missing sample (leaving it out would compare only the seeds that survived). Missing seeds stay NaN."""
    out = np.asarray(values, dtype=float).copy()
    out[np.asarray(diverged, dtype=bool)] = worst
    return out
