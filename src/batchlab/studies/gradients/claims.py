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

G2_RHO = 0.8
G4_SPREAD = 1e-5
V1_TOL = 0.10
N1_TOL = 0.25
N2_FACTOR = 3.0
N2_R2 = 0.9


def power_law(batch_sizes: Sequence[int], norms: np.ndarray, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Fit mean ||sum|| = c B^alpha on log-log over the batch sizes; a percentile bootstrap over trials
    (norms [B, trials], the same trials at every B) gives alpha's 95 % CI. A trial whose norm is not
    finite (its steps diverged) is left out of its batch size's mean and counted; a batch size with
    fewer than 2 finite trials is left out of the fit."""
    x = np.log(np.asarray(batch_sizes, dtype=float))
    norms = np.asarray(norms, dtype=float)
    nan = {"alpha": math.nan, "ci": (math.nan, math.nan), "c": math.nan, "diverged trials": 0, "fitted B": 0}
    if norms.ndim != 2 or norms.shape[1] < 2:
        return nan
    norms = np.where(np.isfinite(norms) & (norms > 0) & (norms < 1e30), norms, np.nan)
    keep = np.isfinite(norms).sum(1) >= 2
    diverged = int((~np.isfinite(norms)).sum())
    if keep.sum() < 2:
        return nan | {"diverged trials": diverged}
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
    return {
        "alpha": float(slope),
        "ci": ci,
        "c": float(np.exp(intercept)),
        "r2": r2,
        "diverged trials": diverged,
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
    """G1: alpha > 0 (95 % CI above 0), per regime and reduction; fits[regime][reduction] = power_law()."""
    rule = "mean ||sum of last-layer gradients|| ~ B^alpha: alpha's 95 % bootstrap CI above 0, per reduction"
    holds, evidence = {}, {}
    for regime, per in fits.items():
        holds[regime] = {}
        for reduction, fit in per.items():
            lo, hi = fit["ci"]
            # True: CI above 0; False: CI below 0; None: it crosses 0 (or could not be fitted)
            holds[regime][reduction] = True if lo > 0 else False if hi < 0 else None
            evidence[f"{regime}, {reduction}: alpha"] = fit["alpha"]
            evidence[f"{regime}, {reduction}: 95% CI"] = f"[{lo:.3g}, {hi:.3g}]"
            if "r2" in fit:
                evidence[f"{regime}, {reduction}: power-law R^2 (log-log)"] = fit["r2"]
            if fit.get("diverged trials"):
                evidence[f"{regime}, {reduction}: diverged trials left out"] = fit["diverged trials"]
    verdict, why = _per_reduction("alpha > 0", holds)
    return G1.claim(rule, verdict, evidence, why)


def rule_g2(batch_sizes: Sequence[int], cv: Mapping[str, Mapping[str, np.ndarray]]) -> Claim:
    """G2: Spearman rho(B, std/mean of ||sum||) > 0.8, per regime and reduction."""
    rule = f"Spearman correlation of std/mean of ||sum|| with B above {G2_RHO}, per reduction"
    holds, evidence = {}, {}
    for regime, per in cv.items():
        holds[regime] = {}
        for reduction, values in per.items():
            values = np.asarray(values, dtype=float)
            rho = float(stats.spearmanr(batch_sizes, values)[0]) if np.all(np.isfinite(values)) else math.nan
            holds[regime][reduction] = None if not math.isfinite(rho) else rho > G2_RHO
            evidence[f"{regime}, {reduction}: Spearman rho"] = rho
    verdict, why = _per_reduction(f"rho > {G2_RHO}", holds)
    return G2.claim(rule, verdict, evidence, why)


def rule_g3(batch_sizes: Sequence[int], tails: Mapping[str, Mapping[str, np.ndarray]], threshold: str) -> Claim:
    """G3: the count of gradient elements beyond a fixed magnitude never decreases with B."""
    rule = f"count of summed-gradient elements with |value| above {threshold} non-decreasing in B, per reduction"
    holds, evidence = {}, {}
    for regime, per in tails.items():
        holds[regime] = {}
        for reduction, counts in per.items():
            counts = np.asarray(counts, dtype=float)
            # a missing task (NaN count) leaves the rule undecided, as too few batch sizes do
            ok = bool(np.all(np.diff(counts) >= 0)) if counts.size > 1 and np.isfinite(counts).all() else None
            holds[regime][reduction] = ok
            evidence[f"{regime}, {reduction}: counts by B"] = ", ".join(
                f"{int(c)}" if np.isfinite(c) else "missing" for c in counts
            )
    verdict, why = _per_reduction("the tail count never decreases with B", holds)
    return G3.claim(rule, verdict, evidence, why)


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


def rule_v1(problems: Mapping[str, tuple[Sequence[float], Sequence[float], float]]) -> Claim:
    """V1: B E||g_B - G||^2 within 10 % of tr(Sigma) for every B (with replacement), on every problem.

    problems[name] = (batch sizes, measured E||g_B - G||^2 with replacement, tr(Sigma))."""
    rule = f"B E||g_B - G||^2 / tr(Sigma) within 1 +- {V1_TOL:g} for every B (with replacement), every problem"
    if not problems:
        return V1.inconclusive(rule, "no measurement is stored")
    evidence, worst = {}, 0.0
    for name, (bs, measured, trace) in problems.items():
        ratio = np.asarray(bs, dtype=float) * np.asarray(measured, dtype=float) / trace
        if not np.all(np.isfinite(ratio)):
            return V1.inconclusive(rule, f"{name}: non-finite measurements")
        evidence[f"{name}: B E||g_B - G||^2 / tr(Sigma) by B"] = ", ".join(f"{r:.3f}" for r in ratio)
        worst = max(worst, float(np.max(np.abs(ratio - 1))))
    verdict = "supported" if worst <= V1_TOL else "not supported"
    return V1.claim(rule, verdict, evidence, f"largest deviation {100 * worst:.1f} %")


def rule_n1(estimates: Mapping[str, tuple[float, float]]) -> Claim:
    """N1: B_simple from per-example gradients and from two batch sizes agree within 25 % at every checkpoint.

    estimates[regime] = (per-example B_simple, two-batch B_simple)."""
    rule = f"two-batch / per-example B_simple within 1 +- {N1_TOL:g} at every checkpoint"
    if not estimates or not all(math.isfinite(a) and math.isfinite(b) and a > 0 for a, b in estimates.values()):
        return N1.inconclusive(rule, "an estimate is missing or not positive")
    evidence = {}
    for regime, (a, b) in estimates.items():
        evidence[f"{regime}: per-example B_simple"] = a
        evidence[f"{regime}: two-batch B_simple"] = b
    worst = max(abs(b / a - 1) for a, b in estimates.values())
    verdict = "supported" if worst <= N1_TOL else "not supported"
    return N1.claim(rule, verdict, evidence, f"largest relative difference {100 * worst:.0f} %")


def rule_n2(fit: dict, b_simple: float) -> Claim:
    """N2: the fit S = S_min (1 + B_noise / B) (steps_to_target.fit_steps) describes the steps (R^2 >= N2_R2 on
    log S) and its B_noise lies within a factor N2_FACTOR of the measured B_simple."""
    rule = (
        f"S = S_min (1 + B_noise / B) describes the best-of-grid steps (R^2 >= {N2_R2} on log S, >= 3 batch sizes "
        f"reaching the target) and B_noise / B_simple lies within [1/{N2_FACTOR:g}, {N2_FACTOR:g}]"
    )
    if fit["points"] < 3 or not math.isfinite(fit["b_noise"]):
        return N2.inconclusive(rule, f"only {fit['points']} batch sizes reached the target")
    if not math.isfinite(b_simple) or b_simple <= 0:
        return N2.inconclusive(rule, "B_simple could not be measured")
    ratio = fit["b_noise"] / b_simple
    evidence = {
        "fitted S_min": fit["s_min"],
        "fitted B_noise": fit["b_noise"],
        "B_noise 95% CI": f"[{fit['ci'][0]:.4g}, {fit['ci'][1]:.4g}]",
        "fit R^2 (log S)": fit["r2"],
        "measured B_simple (late checkpoint)": b_simple,
        "B_noise / B_simple": ratio,
        "batch sizes that reached the target": fit["points"],
    }
    if fit["r2"] < N2_R2:
        return N2.claim(rule, "not supported", evidence, f"the fit describes the steps poorly (R^2 {fit['r2']:.2f})")
    if 1 / N2_FACTOR <= ratio <= N2_FACTOR:
        return N2.claim(
            rule, "supported", evidence, f"B_noise {fit['b_noise']:.3g} is {ratio:.2f} x B_simple {b_simple:.3g}"
        )
    why = f"B_noise {fit['b_noise']:.3g} is {ratio:.2g} x B_simple {b_simple:.3g}, outside a factor {N2_FACTOR:g}"
    return N2.claim(rule, "not supported", evidence, why)
