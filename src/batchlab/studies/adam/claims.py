"""Claim rules of the Adam-and-batch-size family, as pure functions of stored numbers. Thresholds are stated before
any number is seen and come from the config, never from the data."""

from __future__ import annotations

import math

import numpy as np

from ...analysis.decisions import seeds_needed
from ...claims import Claim, ClaimSpec

# --- lr-surge (AS1, AS2) -------------------------------------------------------------------------------------------

LI_2024 = (
    "Li et al. 2024, Surge Phenomenon in Optimal Learning Rate and Batch Size Scaling (NeurIPS 2024, arXiv 2405.14578)"
)
MCCANDLISH = "McCandlish, Kaplan, Amodei et al. 2018, An Empirical Model of Large-Batch Training (arXiv 1812.06162)"

AS1 = ClaimSpec(
    "AS1",
    "For SGD the optimal lr grows with the batch size and saturates: eps_max / (1 + B_noise / B).",
    f"{MCCANDLISH}, sec. 2.2; {LI_2024}, sec. 1 and 3",
)
AS2 = ClaimSpec(
    "AS2",
    "For Adam the optimal lr surges: it rises, peaks near B_noise, then falls, "
    "eps_max / (0.5 (sqrt(B_noise / B) + sqrt(B / B_noise))).",
    f"{LI_2024}, sec. 3 (the sign-of-gradient case) and sec. 4 (the Fashion-MNIST CNN)",
)


def surge_rule(margin: float, level: float) -> str:
    return (
        "r = leave-one-batch-size-out weighted squared error of log lr_opt under the surge form / under the SGD form "
        "(weights: 1 / the bootstrap variance of each batch size's log lr_opt, seeds resampled); its "
        f"{100 * level:g} % bootstrap interval decides against 1 - margin = {1 - margin:g}: the surge form better "
        "(upper end below) or not better (lower end at or above); batch sizes whose optimum is the lr grid's first "
        "or last point are left out of the fits (censored) and named; fewer than 4 left: inconclusive. AS2 also needs "
        "the surge fit's peak B_peak inside the batch sizes fitted: its 95 % interval wholly outside them is no surge "
        "measured (not supported)"
    )


def _undecided(spec: ClaimSpec, rule: str, cmp: dict, margin: float, seeds: int, evidence: dict) -> Claim:
    """Inconclusive, with about how many seeds would move the interval off the threshold (the bootstrap sd of
    log r scales as 1 / sqrt(seeds))."""
    sd = cmp["log_ratio_sd"] * math.sqrt(seeds)
    distance = abs(math.log(max(cmp["ratio"], 1e-300)) - math.log(1 - margin))
    need = seeds_needed(sd, distance) if np.isfinite(sd) else None
    evidence = evidence | {"seeds needed (about)": need if need is not None else "more than the ratio's spread allows"}
    why = (
        f"the {cmp['replicates_used']} bootstrap replicates put r in [{cmp['ratio_ci'][0]:.3g}, "
        f"{cmp['ratio_ci'][1]:.3g}], across the threshold {1 - margin:g}"
    )
    return spec.claim(rule, "inconclusive", evidence, why)


def surge_evidence(cmp: dict, batch_sizes, censored, noise: dict) -> dict:
    """The numbers every lr-surge verdict shows: the ratio, both fits, the peak and the noise scales beside it."""
    (sgd_eps, sgd_bn, _), (surge_eps, _, _) = cmp["fits"]["sgd"], cmp["fits"]["surge"]
    out = {
        "r = E_surge / E_sgd": cmp["ratio"],
        "r interval lo": cmp["ratio_ci"][0],
        "r interval hi": cmp["ratio_ci"][1],
        "SGD form: eps_max": math.exp(sgd_eps),
        "SGD form: B_noise": math.exp(sgd_bn),
        "surge form: eps_max": math.exp(surge_eps),
        "B_peak (surge form's B_noise)": cmp["b_peak"],
        "B_peak at the fit's bound (no peak within B / 1000 .. 1000 B)": "yes" if cmp.get("b_peak_at_bound") else "no",
        "B_peak 95% lo": cmp["b_peak_ci"][0],
        "B_peak 95% hi": cmp["b_peak_ci"][1],
        "batch sizes fitted": ", ".join(str(b) for b in batch_sizes),
        "censored (optimum at the grid's edge)": ", ".join(str(b) for b in censored) or "none",
    }
    for name, value in noise.items():
        out[name] = value
        if name in ("B_simple", "B_noise (Hessian)") and np.isfinite(value) and value > 0:
            out[f"B_peak / {name}"] = cmp["b_peak"] / value
    return out


def rule_surge(
    spec: ClaimSpec, cmp: dict | None, batch_sizes, censored, noise: dict, margin: float, level: float, seeds: int,
    expect: str,
) -> Claim:  # fmt: skip
    """AS1 (expect "sgd") and AS2 (expect "surge") by one statistic, r = E_surge / E_sgd (see `surge_rule`).

    AS2: supported when r's interval lies below 1 - margin and the surge fit peaks inside the batch sizes fitted;
    not supported when the interval's lower end is at or above 1 - margin, or when the surge fit's peak lies outside
    the batch sizes fitted (the point when r's interval is below the threshold, the whole 95 % interval otherwise):
    no rise-and-fall measured. AS1: supported when the lower end is at or above 1 - margin (the monotone, saturating
    form is not beaten by the margin); not supported when the whole interval lies below it."""
    rule = surge_rule(margin, level)
    if cmp is None:
        why = f"fewer than 4 batch sizes with an optimum inside the lr grid (censored: {', '.join(map(str, censored))})"
        return spec.inconclusive(rule, why)
    evidence = surge_evidence(cmp, batch_sizes, censored, noise)
    lo, hi = cmp["ratio_ci"]
    threshold = 1 - margin
    inside = min(batch_sizes) <= cmp["b_peak"] <= max(batch_sizes)
    peak_lo, peak_hi = cmp["b_peak_ci"]
    beyond = peak_lo > max(batch_sizes) or peak_hi < min(batch_sizes)  # the whole 95 % interval outside the grid
    if not np.isfinite([lo, hi]).all():
        return spec.inconclusive(rule, "the bootstrap gave no interval for r", evidence)
    if expect == "surge":
        if beyond:
            why = (
                f"the surge fit's peak lies outside the batch sizes measured (95 % interval [{peak_lo:.3g}, "
                f"{peak_hi:.3g}]): the optimal lr does not both rise and fall on this grid"
            )
            return spec.claim(rule, "not supported", evidence, why)
        if hi < threshold and inside:
            why = (
                f"the surge form predicts held-out batch sizes better (r <= {hi:.3g}), peaking at B {cmp['b_peak']:.3g}"
            )
            return spec.claim(rule, "supported", evidence, why)
        if lo >= threshold or hi < threshold:
            why = (
                f"the surge form is not better by the margin (r >= {lo:.3g})"
                if lo >= threshold
                else f"the better fit peaks at B {cmp['b_peak']:.3g}, outside the batch sizes measured: no fall seen"
            )
            return spec.claim(rule, "not supported", evidence, why)
    else:
        if lo >= threshold:
            why = f"the monotone form is not beaten by the margin on held-out batch sizes (r >= {lo:.3g})"
            return spec.claim(rule, "supported", evidence, why)
        if hi < threshold:
            why = (
                f"the optimal lr falls beyond B {cmp['b_peak']:.3g}: the surge form is better (r <= {hi:.3g})"
                if inside
                else f"the surge form, rising without saturating on this grid, is better (r <= {hi:.3g})"
            )
            return spec.claim(rule, "not supported", evidence, why)
    return _undecided(spec, rule, cmp, margin, seeds, evidence)
