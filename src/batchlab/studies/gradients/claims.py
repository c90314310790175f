"""Claim rules of the gradient-statistics family (G1-G4, V1, N1, N2), as pure functions of stored numbers.

Each rule states its threshold; none is tuned to make a claim come out. A claim about several
(regime, reduction) combinations says, per combination, what the data show; missing or non-finite
numbers make it inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from ...claims import Claim, ClaimSpec
from ..dynamics.common import SHEN_2018

MCCANDLISH_2018 = "McCandlish et al. 2018, An Empirical Model of Large-Batch Training"
COMPETITION = f"{SHEN_2018}: the gradient-competition hypothesis and its experiment; cf. McCandlish et al. 2018"

# The claims, as the studies declare them (gradient-competition G1-G4, gradient-variance V1, noise-scale N1,
# steps-to-target N2).
G1 = ClaimSpec("G1", "Larger batches make larger summed gradient steps for the same examples seen.", COMPETITION)
G2 = ClaimSpec("G2", "The relative spread of the summed gradient grows with batch size.", COMPETITION)
G3 = ClaimSpec("G3", "Larger batches have heavier-tailed gradient element distributions.", COMPETITION)
G4 = ClaimSpec(
    "G4", "Control: with lr = 0 and a summed loss, the summed gradient is identical for every batch size.", COMPETITION
)
V1 = ClaimSpec(
    "V1",
    "Mini-batch gradient variance falls as 1/B: B E||g_B - G||^2 is constant, equal to tr(Sigma).",
    "textbook sampling theory; e.g. Bottou, Curtis & Nocedal 2018",
)
N1 = ClaimSpec(
    "N1", "The two estimators of the simple noise scale B_simple agree.", f"{MCCANDLISH_2018} (appendix A.1)"
)
N2 = ClaimSpec(
    "N2",
    "Steps to a target scale perfectly for small batches and flatten beyond a critical batch size near the "
    "gradient noise scale.",
    f"{MCCANDLISH_2018} (eq. 2.11, fig. 7)",
)

G1_DIVERGE = 10.0  # a pass diverged when the loss on its own examples rose tenfold (noise alone rose it 4x)
G1_MIN_B = 3  # stable batch sizes a fit needs
G1_FIT = 1.25  # every batch size's mean within this factor of the fitted power law
TREND_RHO = 0.8  # G2 and G3: a monotone rise with B, as a rank correlation
TREND_MIN_TRIALS = 10  # trials a bootstrap interval of the trend needs
G4_SPREAD = 1e-5
V1_TOL = 0.10
N1_TOL = 0.25
N2_FACTOR = 3.0
N2_R2 = 0.9


def diverged_passes(norms: np.ndarray, loss_before: np.ndarray | None, loss_after: np.ndarray | None) -> np.ndarray:
    """[B, trials] True where a trial's pass diverged: its summed gradient is not finite (or beyond 1e30), or the
    loss on its own examples after the pass is not finite or more than G1_DIVERGE times the loss before it (SGD noise
    alone raised it up to 4x in a stable pass at a trained checkpoint, where the loss is small; a blow-up raises it
    by orders of magnitude)."""
    norms = np.asarray(norms, dtype=float)
    out = ~(np.isfinite(norms) & (norms < 1e30))
    if loss_before is not None and loss_after is not None:
        before, after = np.asarray(loss_before, dtype=float), np.asarray(loss_after, dtype=float)
        with np.errstate(invalid="ignore"):
            out |= ~np.isfinite(after) | (after > G1_DIVERGE * before)
    return out


def power_law(
    batch_sizes: Sequence[int], norms: np.ndarray, diverged: np.ndarray | None = None, *, n_boot: int = 2000, seed=0
) -> dict:
    """Fit mean ||sum|| = c B^alpha on log-log over the stable batch sizes; a percentile bootstrap over trials
    (norms [B, trials], the same trials at every B) gives alpha's 95 % CI.

    A batch size with a diverged pass (`diverged` [B, trials], see `diverged_passes`; by default a norm that is
    not finite) is left out of the fit and named: its norm measures the blow-up, not the examples. The fit's
    quality is the largest factor between a batch size's mean and the fitted line (`worst factor`)."""
    x = np.log(np.asarray(batch_sizes, dtype=float))
    norms = np.asarray(norms, dtype=float)
    nan = {"alpha": math.nan, "ci": (math.nan, math.nan), "c": math.nan, "diverged trials": 0, "fitted B": 0}
    if norms.ndim != 2 or norms.shape[1] < 2:
        return nan | {"diverged B": [], "worst factor": math.nan}
    if diverged is None:
        diverged = diverged_passes(norms, None, None)
    diverged = np.asarray(diverged, dtype=bool) & ~np.isnan(norms)  # a missing task is missing, not diverged
    unstable = [int(b) for b, d in zip(batch_sizes, diverged.any(1)) if d]
    keep = ~diverged.any(1) & (np.isfinite(norms).sum(1) >= 2)
    out = nan | {"diverged trials": int(diverged.sum()), "diverged B": unstable, "worst factor": math.nan}
    if keep.sum() < 2:
        return out | {"fitted B": int(keep.sum())}
    x, norms = x[keep], norms[keep]
    logs = np.log(np.nanmean(norms, 1))
    slope, intercept = np.polyfit(x, logs, 1)
    resid = logs - (slope * x + intercept)
    r2 = 1 - float(resid @ resid) / float(((logs - logs.mean()) ** 2).sum()) if np.ptp(logs) > 0 else math.nan
    rng = np.random.default_rng(seed)
    t = norms.shape[1]
    boot = []
    with np.errstate(all="ignore"):
        for _ in range(n_boot):
            means = np.nanmean(norms[:, rng.integers(0, t, t)], 1)
            if np.all(np.isfinite(means)):
                boot.append(np.polyfit(x, np.log(means), 1)[0])
    ci = (float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))) if boot else (math.nan, math.nan)
    return out | {
        "alpha": float(slope),
        "ci": ci,
        "c": float(np.exp(intercept)),
        "r2": r2,
        "worst factor": float(np.exp(np.abs(resid).max())),
        "fitted B": int(keep.sum()),
    }


def _per_reduction(label: str, holds: Mapping[str, Mapping[str, bool | None]]) -> tuple[str, str]:
    """Verdict of a per-(regime, reduction) property: supported under a reduction where it holds in every
    regime; not supported when it fails everywhere it was decided; else inconclusive."""
    reductions = sorted({r for per in holds.values() for r in per})
    under = [r for r in reductions if all(per.get(r) is True for per in holds.values())]
    decided = [v for per in holds.values() for v in per.values() if v is not None]
    if under:
        return "supported", f"{label} under the {' and '.join(under)} reduction in every regime"
    if decided and not any(decided) and len(decided) == sum(len(per) for per in holds.values()):
        return "not supported", f"{label} under no reduction and in no regime"
    return "inconclusive", f"{label} in some regimes or reductions only, or could not be measured in all"


def rule_g1(fits: Mapping[str, Mapping[str, dict]]) -> Claim:
    """G1: alpha > 0 (95 % CI above 0) over the stable batch sizes, per regime and reduction, where the power law
    describes them (at least G1_MIN_B of them, every mean within a factor G1_FIT of the line); fits[regime][reduction]
    = power_law(). A batch size whose passes diverged is left out and named: its norm measures the blow-up."""
    rule = (
        "mean ||sum of last-layer gradients|| ~ B^alpha over the batch sizes whose passes all stayed stable (loss on "
        f"the pass's examples at most {G1_DIVERGE:g}x its start, norms finite): alpha's 95 % bootstrap CI above 0 "
        f"(below: not), per reduction; undecided where fewer than {G1_MIN_B} batch sizes are stable or a mean lies "
        f"more than a factor {G1_FIT:g} off the fitted line"
    )
    holds, evidence, notes = {}, {}, []
    for regime, per in fits.items():
        holds[regime] = {}
        for reduction, fit in per.items():
            lo, hi = fit["ci"]
            where = f"{regime}, {reduction}"
            if fit.get("diverged B"):
                bs = fit["diverged B"]
                evidence[f"{where}: batch sizes with diverged passes (left out)"] = ", ".join(map(str, bs))
                evidence[f"{where}: diverged trials"] = fit["diverged trials"]
                notes.append(f"{where}: passes diverged at B = {', '.join(map(str, bs))}, left out")
            evidence[f"{where}: alpha"] = fit["alpha"]
            evidence[f"{where}: 95% CI"] = f"[{lo:.3g}, {hi:.3g}]"
            evidence[f"{where}: stable batch sizes fitted"] = fit["fitted B"]
            evidence[f"{where}: largest factor between a mean and the fit"] = fit.get("worst factor", math.nan)
            if fit["fitted B"] < G1_MIN_B:
                holds[regime][reduction] = None
                notes.append(f"{where}: only {fit['fitted B']} stable batch sizes")
            elif not fit.get("worst factor", math.inf) <= G1_FIT:
                holds[regime][reduction] = None
                notes.append(
                    f"{where}: the power law misses a mean by a factor {fit.get('worst factor', math.nan):.3g}"
                )
            else:  # True: CI above 0; False: CI below 0; None: it crosses 0
                holds[regime][reduction] = True if lo > 0 else False if hi < 0 else None
    verdict, why = _per_reduction("alpha > 0", holds)
    return G1.claim(rule, verdict, evidence, "; ".join([why, *notes]))


def relative_spread(norms: np.ndarray) -> np.ndarray:
    """std / mean of ||sum|| over the trials, per batch size (norms [B, trials]; NaN trials left out)."""
    with np.errstate(all="ignore"):
        return np.nanstd(norms, 1, ddof=1) / np.nanmean(norms, 1)


def trend(batch_sizes: Sequence[int], values: np.ndarray, statistic, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Spearman rho(B, statistic per B) and its 95 % percentile bootstrap interval over trials (the same trials
    resampled at every B, as they are drawn: values [B, trials]; statistic maps [B, trials] to [B]). Below
    TREND_MIN_TRIALS trials the percentile bootstrap covers too little (it cannot see the spread it has not drawn),
    so no interval is given."""
    values = np.asarray(values, dtype=float)
    point = statistic(values)
    if values.ndim != 2 or not np.all(np.isfinite(point)):
        return {"rho": math.nan, "ci": (math.nan, math.nan), "by B": point}
    rho = float(stats.spearmanr(batch_sizes, point)[0])
    if values.shape[1] < TREND_MIN_TRIALS:
        return {"rho": rho, "ci": (math.nan, math.nan), "by B": point}
    rng = np.random.default_rng(seed)
    t = values.shape[1]
    boot = []
    for _ in range(n_boot):
        c = statistic(values[:, rng.integers(0, t, t)])
        if np.all(np.isfinite(c)) and np.ptp(c) > 0:
            boot.append(stats.spearmanr(batch_sizes, c)[0])
    ci = (float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))) if boot else (math.nan, math.nan)
    return {"rho": rho, "ci": ci, "by B": point}


def spread_trend(batch_sizes: Sequence[int], norms: np.ndarray, **kw) -> dict:
    """G2's trend: Spearman rho(B, std/mean of ||sum||) with its bootstrap interval over trials."""
    return trend(batch_sizes, norms, relative_spread, **kw)


def mean_over_trials(values: np.ndarray) -> np.ndarray:
    """Mean over the trials per B, NaN where a batch size has none."""
    counts = np.isfinite(values).sum(1)
    return np.where(counts > 0, np.nansum(values, 1) / np.maximum(counts, 1), np.nan)


def _rho_rule(claim: ClaimSpec, rule: str, label: str, batch_sizes, per_regime, statistic) -> Claim:
    """A trend claim decided per (regime, reduction) on the 95 % bootstrap CI of Spearman rho: above TREND_RHO
    holds, below it fails, across it undecided (per_regime[regime][reduction] = [B, trials])."""
    holds, evidence = {}, {}
    for regime, per in per_regime.items():
        holds[regime] = {}
        for reduction, values in per.items():
            t = trend(batch_sizes, values, statistic)
            lo, hi = t["ci"]
            holds[regime][reduction] = True if lo > TREND_RHO else False if hi < TREND_RHO else None
            evidence[f"{regime}, {reduction}: {label} by B"] = ", ".join(f"{v:.3g}" for v in t["by B"])
            evidence[f"{regime}, {reduction}: Spearman rho"] = t["rho"]
            evidence[f"{regime}, {reduction}: 95% CI"] = f"[{lo:.3g}, {hi:.3g}]"
    verdict, why = _per_reduction(f"rho > {TREND_RHO} (CI)", holds)
    return claim.claim(rule, verdict, evidence, why)


def rule_g2(batch_sizes: Sequence[int], norms: Mapping[str, Mapping[str, np.ndarray]]) -> Claim:
    """G2: Spearman rho(B, std/mean of ||sum||) above TREND_RHO, decided on its 95 % bootstrap interval over trials,
    per regime and reduction (norms[regime][reduction] = [B, trials])."""
    rule = (
        f"Spearman correlation of std/mean of ||sum|| with B above {TREND_RHO}: its 95 % bootstrap CI over trials "
        f"above {TREND_RHO} (below: not), per reduction"
    )
    return _rho_rule(G2, rule, "std/mean", batch_sizes, norms, relative_spread)


def rule_g3(batch_sizes: Sequence[int], kurtosis: Mapping[str, Mapping[str, np.ndarray]]) -> Claim:
    """G3: the tails of the summed gradient's elements get heavier with B, measured scale-free: the kurtosis
    E v^4 / (E v^2)^2 of each trial's elements (3 for Gaussian elements; a count beyond a fixed magnitude would
    measure the gradient's scale, which falls with B under a mean loss). Decided like G2: Spearman rho(B, mean
    kurtosis) on its 95 % bootstrap CI over trials (kurtosis[regime][reduction] = [B, trials])."""
    rule = (
        f"Spearman correlation of the mean kurtosis of the summed gradient's elements (E v^4 / (E v^2)^2, scale-free) "
        f"with B above {TREND_RHO}: its 95 % bootstrap CI over trials above {TREND_RHO} (below: not), per reduction"
    )
    return _rho_rule(G3, rule, "mean kurtosis", batch_sizes, kurtosis, mean_over_trials)


def rule_g4(spread: Mapping[str, float]) -> Claim:
    """G4: with lr = 0 and the sum reduction, ||sum|| is the same for every B (relative spread < 1e-5)."""
    rule = f"largest (max_B - min_B) / mean_B of a trial's ||sum|| below {G4_SPREAD:g}, in every regime"
    if not spread or not all(math.isfinite(v) for v in spread.values()):
        return G4.inconclusive(rule, "the lr = 0 control is missing")
    evidence = {f"{regime}: largest relative spread": v for regime, v in spread.items()}
    worst = max(spread.values())
    if worst < G4_SPREAD:
        return G4.claim(rule, "supported", evidence, f"largest spread {worst:.2g}")
    why = f"largest spread {worst:.2g}: the weights must be moving, or the control does not compute what it should"
    return G4.claim(rule, "not supported", evidence, why)


def rule_v1(problems: Mapping[str, tuple[Sequence[float], Sequence[float], float, Sequence[float] | None]]) -> Claim:
    """V1: B E||g_B - G||^2 / tr(Sigma) within 1 +- V1_TOL for every B (with replacement), on every problem, decided
    on each ratio's 95 % Monte Carlo interval (the draws' sd / sqrt(draws)): every interval inside: supported; one
    wholly outside: not supported; else inconclusive, with the draws that would decide.

    problems[name] = (batch sizes, measured E||g_B - G||^2, tr(Sigma), the standard errors of the measured means)."""
    rule = (
        f"B E||g_B - G||^2 / tr(Sigma) within 1 +- {V1_TOL:g} for every B (with replacement), every problem: each "
        "ratio's 95 % Monte Carlo interval inside the band"
    )
    if not problems:
        return V1.inconclusive(rule, "no measurement is stored")
    evidence, verdicts, crossing = {}, [], []
    for name, (bs, measured, trace, se) in problems.items():
        b = np.asarray(bs, dtype=float)
        ratio = b * np.asarray(measured, dtype=float) / trace
        if not np.all(np.isfinite(ratio)):
            return V1.inconclusive(rule, f"{name}: non-finite measurements")
        evidence[f"{name}: B E||g_B - G||^2 / tr(Sigma) by B"] = ", ".join(f"{r:.3f}" for r in ratio)
        if se is None:
            return V1.inconclusive(
                rule, f"{name}: the Monte Carlo standard errors are not stored (an older store)", evidence
            )
        half = 1.96 * b * np.asarray(se, dtype=float) / trace
        evidence[f"{name}: 95% half-width by B"] = ", ".join(f"{h:.3f}" for h in half)
        for bb, r, h in zip(bs, ratio, half):
            if abs(r - 1) + h <= V1_TOL:
                verdicts.append("supported")
            elif abs(r - 1) - h > V1_TOL:
                verdicts.append("not supported")
            else:
                verdicts.append("inconclusive")
                room = V1_TOL - abs(r - 1)
                crossing.append(
                    f"{name} B={bb:g}" + (f" (about {math.ceil((h / room) ** 2)}x the draws)" if room > 0 else "")
                )
    if "not supported" in verdicts:
        return V1.claim(rule, "not supported", evidence, f"a ratio's interval lies outside 1 +- {V1_TOL:g}")
    if all(v == "supported" for v in verdicts):
        return V1.claim(rule, "supported", evidence, f"every ratio's interval lies inside 1 +- {V1_TOL:g}")
    return V1.claim(rule, "inconclusive", evidence, f"intervals cross the band at {', '.join(crossing)}")


def rule_n1(estimates: Mapping[str, tuple[float, float, tuple[float, float]]]) -> Claim:
    """N1: the two estimators of B_simple agree within 25 %, decided on the 95 % bootstrap interval of their ratio
    at every checkpoint: inside [1 - tol, 1 + tol] everywhere: supported; wholly outside somewhere: not supported;
    else (straddling an end) inconclusive.

    estimates[regime] = (per-example B_simple, two-batch B_simple, the ratio's 95 % interval)."""
    rule = f"the 95 % bootstrap CI of two-batch / per-example B_simple inside 1 +- {N1_TOL:g} at every checkpoint"
    if not estimates:
        return N1.inconclusive(rule, "no estimate is stored")
    evidence, verdicts = {}, []
    lo_ok, hi_ok = 1 - N1_TOL, 1 + N1_TOL
    for regime, (a, b, (lo, hi)) in estimates.items():
        evidence[f"{regime}: per-example B_simple"] = a
        evidence[f"{regime}: two-batch B_simple"] = b
        evidence[f"{regime}: ratio two-batch / per-example"] = b / a if a > 0 else math.nan
        evidence[f"{regime}: ratio 95% CI"] = f"[{lo:.3g}, {hi:.3g}]"
        if math.isnan(lo) or math.isnan(hi):
            verdicts.append("inconclusive")
        elif lo_ok <= lo and hi <= hi_ok:
            verdicts.append("supported")
        elif hi < lo_ok or lo > hi_ok:
            verdicts.append("not supported")
        else:
            verdicts.append("inconclusive")
    cis = "; ".join(f"{r} {evidence[f'{r}: ratio 95% CI']}" for r in estimates)
    if "not supported" in verdicts:
        return N1.claim(rule, "not supported", evidence, f"a ratio's CI lies outside 1 +- {N1_TOL:g}: {cis}")
    if all(v == "supported" for v in verdicts):
        return N1.claim(rule, "supported", evidence, f"every ratio's CI lies inside 1 +- {N1_TOL:g}: {cis}")
    return N1.claim(rule, "inconclusive", evidence, f"a ratio's CI crosses 1 +- {N1_TOL:g}: {cis}")


def rule_n2(fit: dict, b_simple: float, b_simple_ci: tuple[float, float], bounds: Sequence[int] = ()) -> Claim:
    """N2: the fit S = S_min (1 + B_noise / B) (steps_to_target.fit_steps) describes the steps (R^2 >= N2_R2 on
    log S) and B_noise / B_simple lies within a factor N2_FACTOR, decided on the range of the ratio over both 95 %
    intervals. A batch size whose best lr is the largest that reached the target (`bounds`: a larger lr was not
    tried or failed) has steps that are an upper bound, not a measurement: the claim is then inconclusive."""
    rule = (
        f"S = S_min (1 + B_noise / B) describes the best-of-grid steps (R^2 >= {N2_R2} on log S, >= 3 batch sizes "
        f"reaching the target, each best lr bracketed by a slower larger one) and the range of B_noise / B_simple "
        f"over both 95 % intervals lies within [1/{N2_FACTOR:g}, {N2_FACTOR:g}]"
    )
    if fit["points"] < 3 or not math.isfinite(fit["b_noise"]):
        return N2.inconclusive(rule, f"only {fit['points']} batch sizes reached the target")
    if not math.isfinite(b_simple) or b_simple <= 0:
        return N2.inconclusive(rule, "B_simple could not be measured")
    ratio = fit["b_noise"] / b_simple
    lo = fit["ci"][0] / b_simple_ci[1] if b_simple_ci[1] > 0 else 0.0
    hi = fit["ci"][1] / b_simple_ci[0] if b_simple_ci[0] > 0 else math.inf
    evidence = {
        "fitted S_min": fit["s_min"],
        "fitted B_noise": fit["b_noise"],
        "B_noise 95% CI": f"[{fit['ci'][0]:.4g}, {fit['ci'][1]:.4g}]",
        "fit R^2 (log S)": fit["r2"],
        "measured B_simple (late checkpoint)": b_simple,
        "B_simple 95% CI": f"[{b_simple_ci[0]:.4g}, {b_simple_ci[1]:.4g}]",
        "B_noise / B_simple": ratio,
        "B_noise / B_simple over both intervals": f"[{lo:.3g}, {hi:.3g}]",
        "batch sizes that reached the target": fit["points"],
    }
    if bounds:
        evidence["steps that are bounds (best lr not bracketed) at B"] = ", ".join(map(str, bounds))
        why = (
            f"at B = {', '.join(map(str, bounds))} the best lr is the largest that reached the target, so their steps "
            "are upper bounds (a larger lr might be faster): extend the lr grid"
        )
        return N2.claim(rule, "inconclusive", evidence, why)
    if fit["r2"] < N2_R2:
        return N2.claim(rule, "not supported", evidence, f"the fit describes the steps poorly (R^2 {fit['r2']:.2f})")
    text = f"B_noise {fit['b_noise']:.3g} is {ratio:.2g} x B_simple {b_simple:.3g} (range [{lo:.3g}, {hi:.3g}])"
    if 1 / N2_FACTOR <= lo and hi <= N2_FACTOR:
        return N2.claim(rule, "supported", evidence, text)
    if hi < 1 / N2_FACTOR or lo > N2_FACTOR:
        return N2.claim(rule, "not supported", evidence, f"{text}, outside a factor {N2_FACTOR:g}")
    return N2.claim(rule, "inconclusive", evidence, f"{text}: the range crosses a factor {N2_FACTOR:g}")
