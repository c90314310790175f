"""Claim rules of the critical-batch family (C1-C5), as pure functions of stored numbers.

Each rule states its threshold before any number is seen; a proxy is compared with the measured interval
through both ends of both intervals, so a wide measurement can make a claim inconclusive but never supported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from ...analysis.critical import ratio_interval, within_factor
from ...analysis.decisions import higher, lower, not_worse
from ...claims import Claim, ClaimSpec

MERRILL_2025 = "Merrill, Arora, Groeneveld & Hajishirzi 2025, Critical Batch Size Revisited (arXiv 2505.23971)"
MCCANDLISH_2018 = "McCandlish et al. 2018, An Empirical Model of Large-Batch Training"

C1 = ClaimSpec(
    "C1",
    "The critical batch size grows during training: near the smallest batch at initialisation, larger later.",
    f"{MERRILL_2025}, sec. 4",
)
C2 = ClaimSpec(
    "C2",
    "The simple noise scale B_simple = tr(Sigma)/|G|^2 is within a factor of 2 of the measured critical batch "
    "size at every checkpoint.",
    f"{MCCANDLISH_2018}, sec. 2.2; tested as in {MERRILL_2025}",
)
C3 = ClaimSpec(
    "C3",
    "The Hessian-weighted B_noise = tr(H Sigma)/(G^T H G) is closer to the measured critical batch size than B_simple.",
    f"{MCCANDLISH_2018}, eq. 2.6-2.7",
)
C4 = ClaimSpec(
    "C4",
    "The B_noise fitted to steps-to-target, S = S_min (1 + B_noise/B), agrees with the measured critical batch "
    "size within a factor of 2.",
    f"{MCCANDLISH_2018}, eq. 2.11",
)
C5 = ClaimSpec(
    "C5",
    "A batch-size warmup driven by the measured critical batch size reaches the target in fewer steps than "
    "training at the smallest batch throughout, at no worse final loss.",
    f"{MERRILL_2025}, sec. 5 (43 % fewer steps on OLMo 1B)",
)

FACTOR = 2.0


def rule_c1(fractions: Sequence[float], lowers: Sequence[float], uppers: Sequence[float]) -> Claim:
    """C1: Spearman's rho between the checkpoint's place in training and the interval's geometric midpoint, with an
    exact one-sided permutation p (increasing); supported when p < 0.05 and the last checkpoint's interval lies
    wholly above the first's; not supported when the last lies wholly below the first, or p(decreasing) < 0.05."""
    rule = (
        "Spearman rho of (checkpoint, critical batch size) > 0 by an exact one-sided permutation test at 0.05, and "
        "the last checkpoint's interval wholly above the first's"
    )
    lo, hi = np.asarray(lowers, dtype=float), np.asarray(uppers, dtype=float)
    mid = np.where(np.isfinite(hi), np.sqrt(lo * np.where(np.isfinite(hi), hi, 1)), lo * math.sqrt(2))
    evidence = {f"at {100 * f:g} % of training": f"[{a:g}, {b:g}]" for f, a, b in zip(fractions, lo, hi)}
    if len(lo) < 3:
        return C1.inconclusive(rule, "needs at least 3 checkpoints", evidence)
    rho = float(stats.spearmanr(np.arange(len(mid)), mid).statistic) if np.ptp(mid) > 0 else 0.0
    perms = stats.permutation_test(
        (mid,), lambda m: stats.spearmanr(np.arange(len(m)), m).statistic if np.ptp(m) > 0 else 0.0,
        permutation_type="pairings", alternative="greater", n_resamples=math.inf,
    )  # fmt: skip
    p_up = float(perms.pvalue)
    p_down = float(
        stats.permutation_test(
            (mid,), lambda m: stats.spearmanr(np.arange(len(m)), m).statistic if np.ptp(m) > 0 else 0.0,
            permutation_type="pairings", alternative="less", n_resamples=math.inf,
        ).pvalue
    )  # fmt: skip
    evidence |= {"Spearman rho": rho, "p (increasing)": p_up, "p (decreasing)": p_down}
    above = lo[-1] >= hi[0]
    below = hi[-1] <= lo[0]
    if p_up < 0.05 and above:
        return C1.claim(rule, "supported", evidence, f"rho {rho:.2f} (p {p_up:.2g}); last interval above the first")
    if below or p_down < 0.05:
        return C1.claim(rule, "not supported", evidence, f"rho {rho:.2f}: it does not grow (p down {p_down:.2g})")
    why = f"rho {rho:.2f}, p {p_up:.2g}" + ("" if above else "; the last interval overlaps the first")
    return C1.claim(rule, "inconclusive", evidence, why)


def proxy_ratios(proxy: Sequence[tuple[float, float]], critical: Sequence[tuple[float, float]]) -> list[tuple]:
    """Per checkpoint: the range of proxy / critical over the proxy's CI and the measured interval."""
    return [ratio_interval(p, c) for p, c in zip(proxy, critical)]


def rule_c2(fractions, b_simple_ci, critical) -> Claim:
    """C2: at every checkpoint, B_simple's CI over the measured interval lies within a factor FACTOR."""
    rule = (
        f"at every checkpoint the range of B_simple / critical (B_simple's 95 % CI over the measured interval) "
        f"lies inside [1/{FACTOR:g}, {FACTOR:g}]; any checkpoint wholly outside: not supported"
    )
    missing = [f"{100 * f:g} %" for f, ci in zip(fractions, b_simple_ci) if any(map(math.isnan, ci))]
    if missing or not fractions:
        return C2.inconclusive(rule, f"B_simple was not measured at {', '.join(missing) or 'any checkpoint'}")
    ratios = proxy_ratios(b_simple_ci, critical)
    verdicts = [within_factor(r, FACTOR) for r in ratios]
    evidence = {f"B_simple / critical at {100 * f:g} %": f"[{a:.3g}, {b:.3g}]" for f, (a, b) in zip(fractions, ratios)}
    if any(v == "not supported" for v in verdicts):
        worst = [f"{100 * f:g} %" for f, v in zip(fractions, verdicts) if v == "not supported"]
        return C2.claim(rule, "not supported", evidence, f"outside a factor {FACTOR:g} at {', '.join(worst)}")
    if verdicts and all(v == "supported" for v in verdicts):
        return C2.claim(rule, "supported", evidence, f"within a factor {FACTOR:g} at every checkpoint")
    return C2.claim(rule, "inconclusive", evidence, "an interval crosses the factor-2 band")


def rule_c3(fractions, b_simple, b_noise, critical_points) -> Claim:
    """C3: d_j = |log(B_simple / critical)| - |log(B_noise / critical)| over the checkpoints with a finite
    measured point, one-sided paired t that mean d > 0 (B_noise closer)."""
    rule = (
        "over the checkpoints whose measured interval has both ends finite (B_crit: its geometric midpoint), "
        "|log(B_simple/B_crit)| - |log(B_noise/B_crit)| > 0 on average (one-sided t at 0.05)"
    )
    rows = [
        (f, s, n, c)
        for f, s, n, c in zip(fractions, b_simple, b_noise, critical_points)
        if all(math.isfinite(v) and v > 0 for v in (s, n, c))
    ]
    d = np.array([abs(math.log(s / c)) - abs(math.log(n / c)) for _, s, n, c in rows])
    evidence = {f"at {100 * f:g} %: B_simple, B_noise / B_crit": f"{s / c:.3g}, {n / c:.3g}" for f, s, n, c in rows}
    if len(d) < 2:
        return C3.inconclusive(
            rule, f"{len(d)} checkpoints with a measured critical batch size and both proxies", evidence
        )
    dec = higher(np.zeros_like(d), d)
    evidence |= dec.evidence(prefix="log-distance gain: ")
    return C3.claim(rule, dec.verdict, evidence, dec.why)


def rule_c4(fit: dict | None, critical: tuple[float, float], fraction: float) -> Claim:
    """C4: the steps-to-target fit's B_noise CI over the measured interval at the last checkpoint lies within a
    factor FACTOR."""
    rule = (
        f"the range of fitted B_noise / critical (the fit's 95 % CI over the measured interval at the last "
        f"checkpoint, {100 * fraction:g} % of training) lies inside [1/{FACTOR:g}, {FACTOR:g}]"
    )
    if fit is None:
        return C4.inconclusive(rule, "steps-to-target was not run (a user model, or switched off)")
    if not math.isfinite(fit.get("b_noise", math.nan)):
        return C4.inconclusive(rule, f"the steps-to-target fit has no B_noise ({fit.get('points', 0)} batch sizes)")
    ratio = ratio_interval(fit["ci"], critical)
    evidence = {
        "fitted B_noise": fit["b_noise"],
        "fit 95 % CI": f"[{fit['ci'][0]:.3g}, {fit['ci'][1]:.3g}]",
        "measured interval": f"[{critical[0]:g}, {critical[1]:g}]",
        "ratio range": f"[{ratio[0]:.3g}, {ratio[1]:.3g}]",
        "largest B with examples to target within +20 % of the smallest B's (Zhang et al. 2024)": fit.get("b_20"),
    }
    verdict = within_factor(ratio, FACTOR)
    return C4.claim(rule, verdict, evidence, f"B_noise / critical in [{ratio[0]:.3g}, {ratio[1]:.3g}]")


def rule_c5(steps_b0, steps_warm, final_b0, final_warm, margin: float, schedule: list) -> Claim:
    """C5: paired by seed, the warmup needs fewer steps to the target (one-sided t, a run that never reaches it
    counts as not fewer) and its final training loss is not worse than B0's by more than `margin`."""
    rule = (
        "paired by seed: steps to the target lower with the warmup (one-sided t at 0.05) and its final training "
        f"loss not worse by more than {100 * margin:g} % (one-sided non-inferiority); both needed"
    )
    evidence = {"schedule (epoch: batch)": ", ".join(f"{e}: {b}" for e, b in schedule)}
    if len(steps_warm) == 0:
        return C5.inconclusive(rule, "the measurement never called for a larger batch: no warmup to test", evidence)
    b0, warm = np.asarray(steps_b0, dtype=float), np.asarray(steps_warm, dtype=float)
    if np.any(~np.isfinite(warm) & np.isfinite(b0)):
        return C5.claim(rule, "not supported", evidence, "a warmup run never reached the target")
    fewer = lower(b0, warm)
    loss = not_worse(final_b0, final_warm, margin)
    evidence |= {
        "steps B0 (per seed)": ", ".join(f"{v:g}" for v in b0),
        "steps warmup (per seed)": ", ".join(f"{v:g}" for v in warm),
        "fewer steps": fewer.why,
        "final loss": loss.why,
    }
    if fewer.verdict == "supported" and loss.verdict == "supported":
        saved = 1 - float(np.mean(warm) / np.mean(b0))
        return C5.claim(rule, "supported", evidence, f"{100 * saved:.0f} % fewer steps, final loss not worse")
    if "not supported" in (fewer.verdict, loss.verdict):
        return C5.claim(rule, "not supported", evidence, fewer.why if fewer.verdict == "not supported" else loss.why)
    return C5.claim(rule, "inconclusive", evidence, f"steps: {fewer.why}; loss: {loss.why}")
